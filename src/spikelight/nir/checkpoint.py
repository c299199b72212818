"""A trained run's checkpoint as a network, and a NIR file written whole or not at all."""

from __future__ import annotations

import io
import os
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf

from spikelight.atomic import atomic_output
from spikelight.network import SpikingNetwork
from spikelight.nir import require_nir
from spikelight.nir.graph import export_network
from spikelight.validation import validate_checkpoint

nir = require_nir()


def load_network(
    ckpt_path: str | os.PathLike, config_path: str | os.PathLike | None = None
) -> SpikingNetwork:
    """The trained network of a checkpoint, built from its run's resolved ``config.yaml``.

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
    validate_checkpoint(ckpt, model)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    return model.network.eval()


def write_graph(graph, path: str | os.PathLike) -> None:
    """``nir.write`` to ``path`` atomically: a failed write leaves no partial file."""
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    with atomic_output(path) as handle:
        handle.write(buffer.getvalue())


def export_checkpoint(
    ckpt_path: str | os.PathLike,
    out_path: str | os.PathLike,
    config_path: str | os.PathLike | None = None,
):
    """Export a checkpoint's network to a NIR file; returns the graph."""
    graph = export_network(load_network(ckpt_path, config_path))
    write_graph(graph, out_path)
    return graph
