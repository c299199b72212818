"""LightningDataModules yielding ``(x [B, T, C] float, y [B] long)``."""

from spikelight.data.base import SpikeDataModule
from spikelight.data.randman import RandmanDataModule

__all__ = ["RandmanDataModule", "SpikeDataModule"]
