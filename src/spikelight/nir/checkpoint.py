"""A trained run's checkpoint as a NIR file, written whole or not at all.

The checkpoint becomes a network through :func:`spikelight.checkpoint_io.load_network`
(re-exported here as ``spikelight.nir.load_network``).
"""

from __future__ import annotations

import io
import os

from spikelight.atomic import atomic_output
from spikelight.checkpoint_io import load_network
from spikelight.nir import require_nir
from spikelight.nir.graph import export_network

nir = require_nir()


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
