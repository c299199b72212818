"""NIR (Neuromorphic Intermediate Representation) export and import of spiking networks.

``export_network(net) -> nir.NIRGraph`` (write it with ``nir.write``), ``import_network(graph)
-> SpikingNetwork``, ``export_checkpoint(ckpt, path)`` for a trained run, and the command line
``python -m spikelight.nir export CKPT out.nir``. Needs the ``nir`` extra. The correspondence
of spikelight's discrete-time neurons with NIR's continuous-time ones, and what it leaves
approximate: :mod:`spikelight.nir.mapping`; the graph's layout: :mod:`spikelight.nir.graph`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: the one-line error for a missing ``nir`` package
MISSING_NIR = "spikelight.nir needs the nir package: pip install 'spikelight[nir]'"
#: public name -> the submodule defining it (imported on first use, so that a missing ``nir``
#: is one clear error, also for ``python -m spikelight.nir``)
_API = {
    "export_network": "graph",
    "import_network": "graph",
    "export_checkpoint": "checkpoint",
    "load_network": "checkpoint",
    "write_graph": "checkpoint",
}


def require_nir() -> ModuleType:
    """The ``nir`` package, or ``ModuleNotFoundError`` saying which extra to install."""
    try:
        return importlib.import_module("nir")
    except ModuleNotFoundError as error:
        if error.name != "nir":
            raise
        raise ModuleNotFoundError(MISSING_NIR, name="nir") from None


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'spikelight.nir' has no attribute {name!r}")
    require_nir()
    return getattr(importlib.import_module(f"spikelight.nir.{_API[name]}"), name)


__all__ = ["MISSING_NIR", "require_nir", *_API]
