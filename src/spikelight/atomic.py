"""Files that appear complete or not at all: data downloads, caches and checkpoints.

Bytes go to a hidden temporary file (``.<name>.<random>.part``) in the target's directory and
are flushed to disk, then renamed onto the target with :func:`os.replace` (atomic on one file
system). Any exception, ``KeyboardInterrupt`` included, removes the temporary file, so readers
only ever see the old file or all of the new one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def scratch_file(directory: Path, name: str) -> Iterator[tuple[BinaryIO, Path]]:
    """A hidden temporary file next to its destination, removed on exit whatever happens."""
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
    temp_path = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.chmod(temp_path, 0o644)  # mkstemp's 0600 would make shared data dirs unreadable
            yield handle, temp_path
    finally:
        temp_path.unlink(missing_ok=True)


@contextmanager
def atomic_output(final_path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary handle whose content appears at ``final_path`` only if the body succeeds.

    On normal exit the data are flushed, fsync'ed and renamed to ``final_path``; on any
    exception (``KeyboardInterrupt`` included) the temporary file is removed and the exception
    propagates, so ``final_path`` is never a partial file.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    with scratch_file(final_path.parent, final_path.name) as (handle, temp_path):
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(temp_path, final_path)
