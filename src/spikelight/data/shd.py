"""Spiking Heidelberg Digits (SHD) and Spiking Speech Commands (SSC), binned sparsely.

Files (``data_dir``): ``shd_train.h5``, ``shd_test.h5`` (SSC: ``ssc_train.h5``, ``ssc_valid.h5``,
``ssc_test.h5``), published gzipped at https://zenkelab.org/datasets/. Files placed by hand may
be gzipped or not; absent ones are downloaded atomically (into ``data_dir``) and checked against
the official md5s. ``data_dir`` is only read: a gzipped file is decompressed into ``cache_dir``.

Checksums: files found in ``data_dir`` must be the official release (md5 in :data:`CHECKSUMS`)
unless ``verify_checksums=False``, which reads any file in the SHD layout (a derived or custom
dataset); the layout and every sample are checked either way, and a download is always checked
against the official md5 (it comes from the official URL).

Binning: ``num_steps`` bins of width ``max_time / num_steps`` seconds cover ``[0, max_time)``;
an event at time ``t`` lands in bin ``floor(t * num_steps / max_time)``, events at or after
``max_time`` are dropped. With ``channel_pool = p`` the 700 channels are summed in groups of
``p`` adjacent ones (``700 / p`` inputs). A bin's value is the number of events in it (not
clipped to 1), so the spike count inside ``max_time`` is preserved exactly.

Memory: each split is stored as sparse per-sample lists of ``(flat bin index, count)`` (CSR:
``offsets``, ``index = bin * num_inputs + channel``, ``count``) and cached in
``cache_dir/*.npz`` keyed by the binning parameters and the source file's md5 and size (files
of other content, from any directory, never share an entry), so later runs skip HDF5 and gzip.
Batches are densified to ``[B, num_steps, num_inputs]`` in :meth:`encode`, on the training
device; a whole split is never dense. ``augment``
(:class:`~spikelight.data.augment.Augmentation`, config group ``data/augment``) transforms
training batches only: it gets their stored entries (:func:`batch_events`) and returns them
densified, so augmenting costs no dense batch beyond the one training needs.

Splits: the official test file is the test split. SHD's validation split is carved from the
training file with ``seed``: ``val_split="random"`` holds out ``round(val_fraction * N)``
random samples; ``val_split="speaker"`` holds out whole speakers (``extra/speaker``), taken in
seeded random order until at least ``val_fraction`` of the samples are held out (always
leaving one speaker for training), which measures generalisation to unseen voices. SSC uses its
official validation file (``val_fraction``/``val_split`` are ignored).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from spikelight import checks
from spikelight.atomic import atomic_output
from spikelight.data.augment import Augmentation
from spikelight.data.base import SpikeDataModule, check_positive_int
from spikelight.data.download import (
    CorruptFileError,
    RemoteFile,
    fetch_missing,
    gunzip_file,
    verify_md5,
)
from spikelight.data.events import Events

NUM_CHANNELS = 700
BASE_URLS = ("https://zenkelab.org/datasets/",)
CACHE_VERSION = 1
READ_BLOCK = 1024  # samples read from HDF5 at a time, to bound memory while binning

#: Split name -> file, and class count, per variant.
VARIANTS = {
    "shd": {"files": {"train": "shd_train.h5", "test": "shd_test.h5"}, "num_classes": 20},
    "ssc": {
        "files": {"train": "ssc_train.h5", "val": "ssc_valid.h5", "test": "ssc_test.h5"},
        "num_classes": 35,
    },
}

#: md5 of the published files. The .gz values agree across several public loaders that
#: hard-code them (e.g. a norse-style ``SpikingHeidelberg`` dataset and others, all from
#: compneuro.net/zenkelab.org's md5sums.txt); the decompressed .h5 values come from that
#: same loader. SSC checksums were not found: SSC files are checked for layout only.
CHECKSUMS: dict[str, str | None] = {
    "shd_train.h5.gz": "d47c9825dee33347913e8ce0f2be08b0",
    "shd_test.h5.gz": "3062a80ec0c5719404d5b02e166543b1",
    "shd_train.h5": "8e9877c85f29a28dd353ea6a54402667",
    "shd_test.h5": "207ad1295a0ab611e22d1734989c254e",
}

REQUIRED_DATASETS = ("spikes/times", "spikes/units", "labels")
#: Appended to a checksum mismatch of a local file: the switch for SHD-layout data of its own.
NOT_OFFICIAL_NOTE = (
    " If this is SHD-layout data that is not the official release (a derived or custom "
    "dataset), set data.verify_checksums=false to read it (its layout is still checked)."
)


def default_cache_dir() -> Path:
    """``$SPIKELIGHT_CACHE/shd`` (default ``~/.cache/spikelight/shd``), as ``paths.cache_dir``."""
    return Path(os.environ.get("SPIKELIGHT_CACHE", "~/.cache/spikelight")).expanduser() / "shd"


class SHDFormatError(CorruptFileError):
    """An HDF5 file is unreadable or does not have the SHD/SSC layout."""


@dataclass
class BinnedSplit:
    """One file's samples, binned, in CSR form (see the module docstring)."""

    offsets: np.ndarray  # int64 [N + 1]: sample i's entries are offsets[i]:offsets[i + 1]
    index: np.ndarray  # int32 [nnz]: bin * num_inputs + channel, unique and sorted per sample
    count: np.ndarray  # uint16/uint32 [nnz]: events in that bin and channel
    labels: np.ndarray  # int64 [N]
    speakers: np.ndarray  # int64 [N], -1 where the file has no extra/speaker
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "offsets": self.offsets,
            "index": self.index,
            "count": self.count,
            "labels": self.labels,
            "speakers": self.speakers,
            "class_names": np.array(self.class_names, dtype=str),
        }


def event_bins(times: np.ndarray, num_steps: int, max_time: float) -> np.ndarray:
    """Each event's bin ``floor(t * num_steps / max_time)``; -1 outside ``[0, max_time)``."""
    times = np.asarray(times, dtype=np.float64)
    keep = (times >= 0) & (times < max_time)
    bins = np.full(times.shape, -1, dtype=np.int64)
    inside = np.floor(times[keep] * (num_steps / max_time)).astype(np.int64)
    bins[keep] = np.minimum(inside, num_steps - 1)  # guards rounding just below max_time
    return bins


def bin_sample(
    times: np.ndarray, units: np.ndarray, num_steps: int, max_time: float, channel_pool: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse bins of one sample: unique ``bin * (700 // pool) + channel // pool`` and counts."""
    bins = event_bins(times, num_steps, max_time)
    keep = bins >= 0
    channels = np.asarray(units, dtype=np.int64)[keep] // channel_pool
    flat = bins[keep] * (NUM_CHANNELS // channel_pool) + channels
    return np.unique(flat, return_counts=True)


def _open_h5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise SHDFormatError(
            f"{path} cannot be read as HDF5 ({error}); it is truncated or not an SHD/SSC file: "
            "delete it and run again to download it"
        ) from error


def _check_layout(handle: h5py.File, path: Path, num_classes: int) -> int:
    """Validate the datasets every SHD/SSC file has; return the number of samples."""
    for name in REQUIRED_DATASETS:
        if name not in handle:
            raise SHDFormatError(
                f"{path} has no dataset '{name}': expected the SHD/SSC layout with "
                f"{', '.join(REQUIRED_DATASETS)} and extra/keys"
            )
    lengths = {name: len(handle[name]) for name in REQUIRED_DATASETS}
    if len(set(lengths.values())) != 1:
        raise SHDFormatError(f"{path}: datasets have different numbers of samples: {lengths}")
    if "extra/keys" in handle and len(handle["extra/keys"]) != num_classes:
        raise SHDFormatError(
            f"{path}: extra/keys lists {len(handle['extra/keys'])} class names, "
            f"expected {num_classes}"
        )
    return lengths["labels"]


def read_and_bin(
    path: Path, num_classes: int, num_steps: int, max_time: float, channel_pool: int
) -> BinnedSplit:
    """Read an SHD/SSC HDF5 file block by block, validate it, and bin every sample."""
    offsets, indices, counts = [0], [], []
    with _open_h5(path) as handle:
        total = _check_layout(handle, path, num_classes)
        try:
            labels = handle["labels"][:].astype(np.int64)
            speakers = (
                handle["extra/speaker"][:].astype(np.int64)
                if "extra/speaker" in handle
                else np.full(total, -1, dtype=np.int64)
            )
            keys = handle["extra/keys"][:] if "extra/keys" in handle else range(num_classes)
            for times, units in _samples(handle, path, total):
                flat, count = bin_sample(times, units, num_steps, max_time, channel_pool)
                indices.append(flat.astype(np.int32))
                counts.append(count)
                offsets.append(offsets[-1] + len(flat))
        except SHDFormatError:
            raise
        except (OSError, TypeError, ValueError) as error:  # h5py's errors on damaged data
            raise SHDFormatError(f"{path} could not be read: {error}") from error
    _check_labels(path, labels, num_classes)
    count = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    count_dtype = np.uint16 if count.size == 0 or count.max() < 2**16 else np.uint32
    return BinnedSplit(
        offsets=np.asarray(offsets, dtype=np.int64),
        index=np.concatenate(indices) if indices else np.zeros(0, np.int32),
        count=count.astype(count_dtype),
        labels=labels,
        speakers=speakers,
        class_names=[k.decode() if isinstance(k, bytes) else str(k) for k in keys],
    )


def sample_count(path: Path, num_classes: int) -> int:
    """The number of samples of an SHD/SSC file, whose layout is checked."""
    with _open_h5(path) as handle:
        return _check_layout(handle, path, num_classes)


def read_samples(path: Path, num_classes: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """``(times, units, label)`` of each sample of an SHD/SSC file, in file order, unbinned.

    Checked as :func:`read_and_bin` checks them; for reading a file sample by sample (a stream).
    """
    with _open_h5(path) as handle:
        total = _check_layout(handle, path, num_classes)
        try:
            labels = handle["labels"][:].astype(np.int64)
            _check_labels(path, labels, num_classes)
            for label, (times, units) in zip(labels, _samples(handle, path, total), strict=True):
                yield times, units, int(label)
        except SHDFormatError:
            raise
        except (OSError, TypeError, ValueError) as error:  # h5py's errors on damaged data
            raise SHDFormatError(f"{path} could not be read: {error}") from error


def _samples(handle: h5py.File, path: Path, total: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(times, units)`` of every sample, read ``READ_BLOCK`` samples at a time, checked."""
    for start in range(0, total, READ_BLOCK):
        stop = min(start + READ_BLOCK, total)
        block_times = handle["spikes/times"][start:stop]
        block_units = handle["spikes/units"][start:stop]
        for offset, (times, units) in enumerate(zip(block_times, block_units, strict=True)):
            _check_sample(path, start + offset, times, units)
            yield times, units


def _check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise SHDFormatError(
            f"{path}: label {labels[bad][0]} of sample {np.flatnonzero(bad)[0]} is outside "
            f"0..{num_classes - 1}"
        )


def _check_sample(path: Path, sample: int, times: np.ndarray, units: np.ndarray) -> None:
    if len(times) != len(units):
        raise SHDFormatError(
            f"{path}: sample {sample} has {len(times)} spike times but {len(units)} units"
        )
    if len(units) and (units.min() < 0 or units.max() >= NUM_CHANNELS):
        raise SHDFormatError(
            f"{path}: sample {sample} has unit ids in {units.min()}..{units.max()}, "
            f"expected 0..{NUM_CHANNELS - 1}"
        )
    if len(times) and not np.isfinite(times).all():
        raise SHDFormatError(f"{path}: sample {sample} has non-finite spike times")


def load_cache(path: Path) -> BinnedSplit | None:
    """The cached split at ``path``, or ``None`` (with a warning) if it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return BinnedSplit(
                offsets=stored["offsets"],
                index=stored["index"],
                count=stored["count"],
                labels=stored["labels"],
                speakers=stored["speakers"],
                class_names=[str(name) for name in stored["class_names"]],
            )
    except (OSError, KeyError, ValueError) as error:
        warnings.warn(f"ignoring unreadable cache {path} ({error}); rebuilding it", stacklevel=2)
        return None


def save_cache(path: Path, split: BinnedSplit) -> None:
    """Write the split atomically; a failure (e.g. read-only cache_dir) only warns."""
    try:
        with atomic_output(path) as handle:
            np.savez(handle, **split.arrays())
    except OSError as error:
        warnings.warn(f"could not write cache {path} ({error}); continuing", stacklevel=2)


class BinnedEventDataset(Dataset):
    """Items ``((index int64 [n], count float [n]), label)`` of the samples in ``indices``."""

    def __init__(self, split: BinnedSplit, indices: np.ndarray | None = None) -> None:
        self.split = split
        self.indices = np.arange(len(split)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int):
        sample = self.indices[item]
        start, stop = self.split.offsets[sample], self.split.offsets[sample + 1]
        index = torch.from_numpy(self.split.index[start:stop].astype(np.int64))
        count = torch.from_numpy(self.split.count[start:stop].astype(np.float32))
        return (index, count), torch.tensor(self.split.labels[sample], dtype=torch.long)


def collate_events(samples: list) -> tuple[dict, torch.Tensor]:
    """Concatenate sparse samples; ``sample`` says which batch row each entry belongs to."""
    indices = [index for (index, _), _ in samples]
    counts = [count for (_, count), _ in samples]
    sizes = torch.tensor([len(index) for index in indices])
    batch = {
        "sample": torch.repeat_interleave(torch.arange(len(samples)), sizes),
        "index": torch.cat(indices),
        "count": torch.cat(counts),
        "batch_size": len(samples),
    }
    return batch, torch.stack([label for _, label in samples])


def densify(batch: dict, num_steps: int, num_inputs: int) -> torch.Tensor:
    """``[B, num_steps, num_inputs]`` float counts from a :func:`collate_events` batch."""
    size = batch["batch_size"]
    dense = torch.zeros(size, num_steps * num_inputs, device=batch["index"].device)
    dense[batch["sample"], batch["index"]] = batch["count"].to(dense.dtype)
    return dense.view(size, num_steps, num_inputs)


def batch_events(batch: dict, num_steps: int, num_inputs: int) -> Events:
    """The entries of :func:`densify`'s batch as :class:`~spikelight.data.events.Events`, without
    the dense batch (each sample's bins are stored unique and sorted: already the canonical
    form, which :meth:`Events.listed` confirms)."""
    step, channel = torch.unravel_index(batch["index"], (num_steps, num_inputs))
    shape = (batch["batch_size"], num_steps, num_inputs)
    value = batch["count"].to(torch.get_default_dtype())
    return Events.listed(shape, batch["sample"], step, channel, value)


def speaker_holdout(speakers: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of samples whose speaker is held out (see the module docstring)."""
    if (speakers < 0).any():
        raise ValueError(
            "data.val_split='speaker' needs extra/speaker in the training file, which it lacks"
        )
    unique, sizes = np.unique(speakers, return_counts=True)
    if len(unique) < 2:
        raise ValueError(f"data.val_split='speaker' needs >= 2 speakers, found {len(unique)}")
    chosen, held_out = [], 0
    target = fraction * len(speakers)
    for position in rng.permutation(len(unique)):
        if held_out >= target or len(chosen) == len(unique) - 1:
            break
        chosen.append(unique[position])
        held_out += sizes[position]
    return np.isin(speakers, chosen)


class SHDDataModule(SpikeDataModule):
    """SHD (or SSC with ``variant="ssc"``): binned audio spikes ``[B, num_steps, 700 / pool]``.

    See the module docstring for binning, caching and splits. ``num_inputs`` and
    ``num_classes`` must match ``channel_pool`` and ``variant``; ``class_names`` are read from
    the training file's ``extra/keys`` at setup (``"0"``, ``"1"``, ... until then, and if the
    file has no ``extra/keys``). ``cache_dir`` (default :func:`default_cache_dir`) receives the
    binned caches and decompressed copies; only downloads write into ``data_dir``.
    """

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 256,
        num_steps: int = 100,
        max_time: float = 1.4,
        channel_pool: int = 1,
        val_fraction: float = 0.1,
        val_split: str = "random",
        num_workers: int = 0,
        seed: int = 0,
        num_inputs: int = NUM_CHANNELS,
        num_classes: int = 20,
        variant: str = "shd",
        download: bool = True,
        cache: bool = True,
        pin_memory: bool | None = None,
        augment: Augmentation | None = None,
        cache_dir: str | Path | None = None,
        verify_checksums: bool = True,
        test_every_epoch: bool = False,
    ) -> None:
        super().__init__(batch_size, num_steps, num_workers, seed, pin_memory, test_every_epoch)
        if variant not in VARIANTS:
            raise ValueError(f"data.variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        self.channel_pool = check_positive_int("channel_pool", channel_pool)
        if NUM_CHANNELS % self.channel_pool:
            divisors = [d for d in range(1, NUM_CHANNELS + 1) if NUM_CHANNELS % d == 0]
            raise ValueError(
                f"data.channel_pool={channel_pool} must divide {NUM_CHANNELS}; "
                f"choose one of {divisors}"
            )
        if num_inputs != NUM_CHANNELS // self.channel_pool:
            raise ValueError(
                f"data.num_inputs must be {NUM_CHANNELS} // channel_pool = "
                f"{NUM_CHANNELS // self.channel_pool}, got {num_inputs!r}"
            )
        expected_classes = VARIANTS[variant]["num_classes"]
        if num_classes != expected_classes:
            raise ValueError(
                f"data.num_classes must be {expected_classes} for {variant}, got {num_classes!r}"
            )
        if isinstance(max_time, bool) or not (
            isinstance(max_time, int | float) and math.isfinite(max_time) and max_time > 0
        ):
            raise ValueError(
                f"data.max_time must be a positive number of seconds, got {max_time!r}"
            )
        if not (isinstance(val_fraction, int | float) and 0 <= val_fraction < 1):
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction!r}")
        if val_split not in ("random", "speaker"):
            raise ValueError(f"data.val_split must be 'random' or 'speaker', got {val_split!r}")
        if self.num_steps * num_inputs >= 2**31:
            raise ValueError(
                f"data.num_steps={num_steps} x {num_inputs} inputs exceeds the int32 bin index"
            )
        self.data_dir = Path(data_dir).expanduser()
        if cache_dir is None:
            self.cache_dir = default_cache_dir()
        elif isinstance(cache_dir, str | os.PathLike) and str(cache_dir):
            self.cache_dir = Path(cache_dir).expanduser()
        else:
            raise checks.ArgumentError("cache_dir", cache_dir, "a directory path")
        self.verify_checksums = checks.boolean("verify_checksums", verify_checksums)
        self.max_time = float(max_time)
        self.val_fraction = float(val_fraction)
        self.val_split = val_split
        self.variant = variant
        self.download = download
        self.cache = cache
        self.num_inputs = NUM_CHANNELS // self.channel_pool
        self.num_classes = expected_classes
        self.class_names = [str(label) for label in range(expected_classes)]
        self.collate_fn = collate_events
        if augment is not None and not isinstance(augment, Augmentation):
            raise TypeError(f"data.augment must be an Augmentation, got {augment!r}")
        if augment is not None:
            augment.check_fits(self.num_steps, self.num_inputs)
        self.augment = augment

    # -- files ---------------------------------------------------------------------------
    @property
    def file_names(self) -> dict[str, str]:
        return VARIANTS[self.variant]["files"]

    def remote_files(self) -> list[RemoteFile]:
        return [
            RemoteFile(
                name,
                tuple(base + name + ".gz" for base in BASE_URLS),
                CHECKSUMS.get(name + ".gz"),
                gunzip=True,
            )
            for name in self.file_names.values()
        ]

    def prepare_data(self) -> None:
        """Download the files absent from ``data_dir`` in either form (one process per node)."""
        absent = [
            remote
            for remote in self.remote_files()
            if not self.data_dir.joinpath(remote.name).is_file()
            and not self.data_dir.joinpath(remote.name + ".gz").is_file()
        ]
        fetch_missing(self.data_dir, absent, download_allowed=self.download)

    def source_path(self, file_name: str) -> Path:
        """The file of ``file_name`` in ``data_dir``: the ``.h5``, else the ``.h5.gz``."""
        path = self.data_dir / file_name
        return path if path.is_file() else path.with_name(file_name + ".gz")

    def verified_md5(self, path: Path) -> str:
        """The md5 of a file in ``data_dir``, checked against the official one if verifying."""
        expected = CHECKSUMS.get(path.name) if self.verify_checksums else None
        return verify_md5(path, expected, note=NOT_OFFICIAL_NOTE)

    def cache_path(self, file_name: str, md5: str, size: int) -> Path:
        """Where the binned form of ``file_name`` (source md5, size) with these parameters is."""
        stem = file_name.removesuffix(".h5")
        key = f"steps{self.num_steps}-max{self.max_time!r}-pool{self.channel_pool}"
        return self.cache_dir / f"{stem}-{key}-{md5[:16]}-{size}-v{CACHE_VERSION}.npz"

    def decompressed(self, gz_path: Path, md5: str, size: int) -> Path:
        """The HDF5 inside ``gz_path``, decompressed once into ``cache_dir`` (keyed like caches)."""
        stem = gz_path.name.removesuffix(".h5.gz")
        target = self.cache_dir / f"{stem}-{md5[:16]}-{size}.h5"
        if not target.is_file():
            try:
                gunzip_file(gz_path, target)
            except OSError as error:
                raise OSError(
                    f"data.cache_dir={str(self.cache_dir)!r}: cannot decompress {gz_path} there "
                    f"({error}); set data.cache_dir to a writable directory"
                ) from error
        return target

    def load_binned(self, file_name: str) -> BinnedSplit:
        """Binned samples of one file, from the cache when it matches, else from HDF5."""
        source = self.source_path(file_name)
        md5, size = self.verified_md5(source), source.stat().st_size
        cache_file = self.cache_path(file_name, md5, size)
        if self.cache and cache_file.is_file():
            cached = load_cache(cache_file)
            if cached is not None:
                return cached
        path = self.decompressed(source, md5, size) if source.name.endswith(".gz") else source
        try:
            binned = read_and_bin(
                path, self.num_classes, self.num_steps, self.max_time, self.channel_pool
            )
        except SHDFormatError as error:
            if path == source:
                raise
            raise SHDFormatError(f"{error} (decompressed from {source})") from error
        if self.cache:
            save_cache(cache_file, binned)
        return binned

    # -- splits --------------------------------------------------------------------------
    def make_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        self.prepare_data()
        splits = {name: self.load_binned(file) for name, file in self.file_names.items()}
        train, test = splits["train"], splits["test"]
        self.class_names = list(train.class_names)
        if "val" in splits:  # SSC: official validation file
            return (
                BinnedEventDataset(train),
                BinnedEventDataset(splits["val"]),
                BinnedEventDataset(test),
            )
        rng = np.random.default_rng(self.seed)
        if self.val_split == "speaker":
            held_out = speaker_holdout(train.speakers, self.val_fraction, rng)
        else:
            held_out = np.zeros(len(train), dtype=bool)
            held_out[rng.permutation(len(train))[: round(self.val_fraction * len(train))]] = True
        return (
            BinnedEventDataset(train, np.flatnonzero(~held_out)),
            BinnedEventDataset(train, np.flatnonzero(held_out)),
            BinnedEventDataset(test),
        )

    def encode(self, x, train: bool, generator=None) -> torch.Tensor:
        if isinstance(x, torch.Tensor):  # already dense
            return x
        return densify(x, self.num_steps, self.num_inputs)

    def augment_input(self, x):
        if isinstance(x, torch.Tensor):
            return x
        return batch_events(x, self.num_steps, self.num_inputs)  # densified after augmenting
