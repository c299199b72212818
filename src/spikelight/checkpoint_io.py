"""Checkpoint files that are either the complete new version or the untouched old one.

Lightning's default writer goes through an fsspec transaction whose temporary file lives in the
system temp directory; when that is another file system, the final move is a plain copy into the
checkpoint path, so a crash mid-copy leaves a truncated ``last.ckpt``. Here the bytes go to a
temporary file next to the target, are flushed to disk, and replace it with ``os.replace``
(:func:`spikelight.atomic.atomic_output`). Remote paths (``s3://`` ...) keep Lightning's behaviour.
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from spikelight.atomic import atomic_output


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
