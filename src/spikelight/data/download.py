"""Atomic, checksummed downloads: a data file either appears complete and verified, or not at all.

Every file is written to a hidden temporary file (``.<name>.<random>.part``) in its target
directory, verified, and only then renamed to its final name with :func:`os.replace` (atomic on
one file system). Any exception, ``KeyboardInterrupt`` included, removes the temporary file, so
an interrupted or corrupt download never leaves a file that looks complete.

Without network access, :func:`fetch_missing` fails within ``timeout`` seconds with a
:class:`MissingDataError` that names the directory and the exact file names to put there by hand.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from spikelight.atomic import atomic_output, scratch_file

CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 10.0


class DownloadError(RuntimeError):
    """A download could not be completed (no network, HTTP error, truncated transfer)."""


class ChecksumError(ValueError):
    """A file's md5 differs from the published one."""


class CorruptFileError(ValueError):
    """A local file is unreadable: truncated, not gzip/HDF5/IDX, or not the expected layout."""


class MissingDataError(FileNotFoundError):
    """Data files are absent and could not be downloaded; the message says where to put them."""


@dataclass(frozen=True)
class RemoteFile:
    """One data file: its final ``name`` on disk and where to get it.

    ``urls`` are mirrors tried in order. ``md5`` is the checksum of the downloaded bytes (``None``:
    unknown, not checked). With ``gunzip`` the download is a gzip file whose decompressed content
    is stored as ``name``; the file to place by hand may then be either form.
    """

    name: str
    urls: tuple[str, ...]
    md5: str | None = None
    gunzip: bool = False

    @property
    def remote_name(self) -> str:
        """The file name as published (the last path component of the first URL)."""
        return self.urls[0].rstrip("/").rsplit("/", 1)[-1]


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 digest of a file, read in chunks so large files need little memory."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: str | os.PathLike, expected: str | None, note: str = "") -> str:
    """Return the file's md5; raise :class:`ChecksumError` if ``expected`` is given and differs.

    ``note`` is appended to the error (a data module's way to name its own switches).
    """
    actual = md5sum(path)
    if expected is not None and actual != expected.lower():
        raise ChecksumError(
            f"md5 mismatch for {path}: expected {expected}, got {actual}. The file is corrupt, "
            "truncated or a different version: delete it and run again to download it, or "
            f"replace it with the official file.{note}"
        )
    return actual


def gunzip_file(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Decompress ``source`` (gzip) to ``destination`` atomically; clear error if corrupt."""
    destination = Path(destination)
    try:
        with gzip.open(source, "rb") as compressed, atomic_output(destination) as out:
            shutil.copyfileobj(compressed, out, CHUNK_BYTES)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise CorruptFileError(
            f"{source} is not a complete gzip file ({error}); delete it and download it again"
        ) from error
    return destination


def _stream_to(response, out: BinaryIO, desc: str) -> str:
    """Copy an HTTP response to ``out`` with a progress bar; return the md5 of the bytes."""
    length = response.headers.get("Content-Length") if response.headers else None
    total = int(length) if length and str(length).isdigit() else None
    digest = hashlib.md5()
    received = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=None) as bar:
        for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if total is not None and received != total:
        raise DownloadError(f"{desc}: connection closed after {received} of {total} bytes")
    return digest.hexdigest()


def _check_download(url: str, expected: str | None, actual: str) -> None:
    if expected is not None and actual != expected.lower():
        raise ChecksumError(
            f"md5 mismatch for {url}: expected {expected}, got {actual}; the download was "
            "discarded (the mirror serves a different or damaged file)"
        )


def _download_once(url: str, destination: Path, remote: RemoteFile, timeout: float) -> None:
    """Fetch one URL into ``destination`` (verified, decompressed if asked); atomic."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        if not remote.gunzip:
            with atomic_output(destination) as out:
                _check_download(url, remote.md5, _stream_to(response, out, remote.remote_name))
            return
        # The compressed bytes are only a transfer format: keep them just long enough to
        # verify and decompress them.
        with scratch_file(destination.parent, remote.remote_name) as (out, temp_path):
            md5 = _stream_to(response, out, remote.remote_name)
            out.close()
            _check_download(url, remote.md5, md5)
            gunzip_file(temp_path, destination)


def download(
    remote: RemoteFile, directory: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT_S
) -> Path:
    """Download ``remote`` into ``directory`` from the first mirror that serves it intact.

    Raises :class:`ChecksumError` if mirrors answered but with wrong bytes, and
    :class:`DownloadError` if none could be reached; either way nothing is left behind.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    destination = directory / remote.name
    failures: list[str] = []
    wrong_checksum = False
    for url in remote.urls:
        try:
            _download_once(url, destination, remote, timeout)
            return destination
        except ChecksumError as error:
            wrong_checksum = True
            failures.append(str(error))
        except (urllib.error.URLError, OSError, DownloadError, CorruptFileError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', None) or error}")
    error_type = ChecksumError if wrong_checksum else DownloadError
    raise error_type(f"could not download {remote.name}:\n  " + "\n  ".join(failures))


def hand_placement_message(directory: Path, files: Sequence[RemoteFile], reason: str) -> str:
    """The error text for absent files: what is missing, where to put it, where to get it."""
    lines = [f"Data files are missing from {directory}. Place these files there:"]
    for remote in files:
        alternative = f"  (or decompressed, as {remote.name})" if remote.gunzip else ""
        lines.append(f"  {directory / remote.remote_name}{alternative}")
        lines.append(f"      from {remote.urls[0]}")
    lines.append(f"Reason: {reason}")
    return "\n".join(lines)


def fetch_missing(
    directory: str | os.PathLike,
    files: Sequence[RemoteFile],
    download_allowed: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Make sure every file in ``files`` exists in ``directory``, downloading absent ones.

    Stops at the first network failure (so an offline machine fails at once rather than once per
    file) and raises :class:`MissingDataError` naming the directory and every absent file.
    """
    directory = Path(directory)
    missing = [remote for remote in files if not (directory / remote.name).is_file()]
    if not missing:
        return
    if not download_allowed:
        raise MissingDataError(hand_placement_message(directory, missing, "download=False"))
    for position, remote in enumerate(missing):
        try:
            download(remote, directory, timeout=timeout)
        except DownloadError as error:
            reason = f"download failed (no network?): {error}"
            raise MissingDataError(
                hand_placement_message(directory, missing[position:], reason)
            ) from error
