"""Checkpoint files that are either the complete new version or the untouched old one.

Lightning's default writer goes through an fsspec transaction whose temporary file lives in the
system temp directory; when that is another file system, the final move is a plain copy into the
checkpoint path, so a crash mid-copy leaves a truncated ``last.ckpt``. Here the bytes go to a
temporary file next to the target, are flushed to disk, and replace it with ``os.replace``
(atomic on POSIX and Windows). Remote paths (``s3://`` ...) keep Lightning's behaviour.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or all of the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


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
        atomic_write_bytes(path, buffer.getvalue())
