"""Checkpoint files that are either the complete new version or the untouched old one.

Lightning's default writer goes through an fsspec transaction whose temporary file lives in the
system temp directory; when that is another file system, the final move is a plain copy into the
checkpoint path, so a crash mid-copy leaves a truncated ``last.ckpt``. Here the bytes go to a
temporary file next to the target, are flushed to disk, and replace it with ``os.replace``
(:func:`spikelight.atomic.atomic_output`). Remote paths (``s3://`` ...) keep Lightning's behaviour.
:func:`validate_checkpoint` checks a checkpoint to resume or test before any loop starts;
:func:`load_run` turns a trained run's checkpoint back into its network (export, streaming).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import hydra
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from spikelight.atomic import atomic_output
from spikelight.checks import ConfigError
from spikelight.network import SpikingNetwork


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic (see the module docstring)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if "://" in str(path) or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialise fully before touching the file system
        with atomic_output(path) as out:
            out.write(buffer.getbuffer())


def validate_checkpoint(path: str | os.PathLike, model: torch.nn.Module) -> dict:
    """Raise :class:`ConfigError` unless ``path`` loads safely and matches ``model``'s weights.

    Loads with ``weights_only=True`` (no code from the file runs) and compares its
    ``state_dict`` keys and shapes with the model's; returns that checked ``state_dict``.
    """
    key = "ckpt_path"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            [
                f"{key}={str(path)!r}: expected a checkpoint that loads with weights_only=True "
                f"({reason})"
            ]
        ) from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(
            [f"{key}={str(path)!r}: expected a Lightning checkpoint with a 'state_dict'"]
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name} {tuple(state[name].shape)} (model: {tuple(expected[name].shape)})"
        for name in sorted(set(state) & set(expected))
        if tuple(getattr(state[name], "shape", ())) != tuple(expected[name].shape)
    ]
    details = []
    for label, names in (("missing", missing), ("unexpected", unexpected)):
        if names:
            details.append(f"{label} keys {abbreviate(names)}")
    if mismatched:
        details.append(f"mismatched shapes {abbreviate(mismatched)}")
    if details:
        raise ConfigError(
            [
                f"{key}={str(path)!r}: expected a checkpoint of this model "
                f"(same neuron and layer sizes); " + "; ".join(details)
            ]
        )
    return state


def abbreviate(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"


def load_run(
    ckpt_path: str | os.PathLike, config_path: str | os.PathLike | None = None
) -> tuple[SpikingNetwork, DictConfig]:
    """The trained network of a checkpoint (in eval mode) and its run's resolved config.

    A checkpoint holds weights only; the network's shape comes from the config, by default the
    run directory's (``<run>/checkpoints/x.ckpt`` -> ``<run>/config.yaml``).
    """
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {str(ckpt)!r} does not exist")
    config = Path(config_path) if config_path is not None else ckpt.parent.parent / "config.yaml"
    if not config.is_file():
        where = "given" if config_path is not None else "of the checkpoint's run directory"
        raise FileNotFoundError(
            f"config {str(config)!r} ({where}) does not exist: pass the run's config.yaml "
            "(--config)"
        )
    cfg = OmegaConf.load(config)
    if "model" not in cfg:
        raise ValueError(
            f"config {str(config)!r} has no 'model' section: expected a run's config.yaml"
        )
    model = hydra.utils.instantiate(cfg.model)
    model.load_state_dict(validate_checkpoint(ckpt, model))
    return model.network.eval(), cfg


def load_network(
    ckpt_path: str | os.PathLike, config_path: str | os.PathLike | None = None
) -> SpikingNetwork:
    """The trained network of a checkpoint (:func:`load_run` without the config)."""
    return load_run(ckpt_path, config_path)[0]
