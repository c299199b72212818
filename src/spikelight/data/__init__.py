"""LightningDataModules yielding ``(x [B, T, C] float, y [B] long)``."""

from spikelight.data.base import SpikeDataModule
from spikelight.data.mnist import MNISTDataModule
from spikelight.data.randman import RandmanDataModule
from spikelight.data.shd import SHDDataModule

__all__ = ["MNISTDataModule", "RandmanDataModule", "SHDDataModule", "SpikeDataModule"]
