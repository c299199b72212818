"""Small, fully known stand-ins for the real data files: IDX (MNIST) and SHD-layout HDF5.

The generators return the ground truth they wrote, so tests compare what the data modules read
against values that never went through the code under test.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

SHD_CHANNELS = 700
#: The generator places events at the centres of this grid, so the bin of every event under
#: any coarser grid that divides it is known by integer arithmetic.
REFERENCE_STEPS = 100
REFERENCE_MAX_TIME = 1.4
SHD_CLASS_NAMES = [f"word_{label:02d}" for label in range(20)]


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# -- IDX ---------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Uncompressed IDX encoding of a uint8 array (big-endian header, C-order data)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = magic if magic is not None else 0x00000800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


def write_gzip(path: Path, payload: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload, mtime=0))
    return path


def make_idx_files(directory: Path, n_train: int = 300, n_test: int = 60, seed: int = 0) -> dict:
    """Write the four MNIST-named IDX files; return ``{split: (images [N,28,28], labels)}``."""
    rng = np.random.default_rng(seed)
    truth = {}
    for split, count in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images_name, labels_name = MNIST_FILES[split]
        write_gzip(Path(directory) / images_name, idx_bytes(images))
        write_gzip(Path(directory) / labels_name, idx_bytes(labels))
        truth[split] = (images, labels)
    return truth


# -- SHD ---------------------------------------------------------------------------------
@dataclass
class SHDTruth:
    """What one generated file contains. ``bins[i][j]`` is event j's bin on the reference grid
    (``REFERENCE_STEPS`` bins over ``REFERENCE_MAX_TIME``), -1 if it lies after max_time."""

    times: list[np.ndarray]
    units: list[np.ndarray]
    bins: list[np.ndarray]
    labels: np.ndarray
    speakers: np.ndarray
    class_names: list[str]

    def dense(self, num_steps: int = REFERENCE_STEPS, channel_pool: int = 1) -> np.ndarray:
        """Expected counts ``[N, num_steps, 700 // pool]`` for a grid dividing the reference."""
        assert REFERENCE_STEPS % num_steps == 0
        per_bin = REFERENCE_STEPS // num_steps
        out = np.zeros((len(self.labels), num_steps, SHD_CHANNELS // channel_pool), np.int64)
        for sample, (bins, units) in enumerate(zip(self.bins, self.units, strict=True)):
            for bin_, unit in zip(bins, units, strict=True):
                if bin_ >= 0:
                    out[sample, bin_ // per_bin, unit // channel_pool] += 1
        return out


def make_shd_samples(
    count: int, num_classes: int = 20, speakers: int = 4, seed: int = 0, max_events: int = 120
) -> SHDTruth:
    """Random samples: up to ``max_events`` events at reference-bin centres, plus a few after
    max_time."""
    rng = np.random.default_rng(seed)
    width = REFERENCE_MAX_TIME / REFERENCE_STEPS
    times, units, bins = [], [], []
    for _ in range(count):
        inside = int(rng.integers(0, max_events))
        outside = int(rng.integers(0, 6))
        bin_inside = rng.integers(0, REFERENCE_STEPS, inside)
        t_inside = (bin_inside + 0.5) * width
        t_outside = rng.uniform(REFERENCE_MAX_TIME + 0.01, REFERENCE_MAX_TIME + 0.3, outside)
        order = np.argsort(np.concatenate([t_inside, t_outside]), kind="stable")
        times.append(np.concatenate([t_inside, t_outside])[order].astype(np.float32))
        units.append(rng.integers(0, SHD_CHANNELS, inside + outside).astype(np.uint16)[order])
        bins.append(np.concatenate([bin_inside, np.full(outside, -1)])[order])
    return SHDTruth(
        times=times,
        units=units,
        bins=bins,
        labels=(np.arange(count) % num_classes).astype(np.uint8),
        speakers=(np.arange(count) % speakers).astype(np.uint16),
        class_names=list(SHD_CLASS_NAMES[:num_classes])
        if num_classes <= 20
        else [f"word_{label:02d}" for label in range(num_classes)],
    )


def _vlen(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    for position, array in enumerate(arrays):
        out[position] = array
    return out


def write_shd_h5(path: Path, truth: SHDTruth, omit: tuple[str, ...] = ()) -> Path:
    """Write ``truth`` in the SHD layout; ``omit`` drops datasets to make wrong layouts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(truth.labels)
    datasets = {
        "spikes/times": (_vlen(truth.times), h5py.vlen_dtype(np.float32)),
        "spikes/units": (_vlen(truth.units), h5py.vlen_dtype(np.uint16)),
        "labels": (truth.labels, None),
        "extra/speaker": (truth.speakers, None),
        "extra/keys": (np.array([name.encode() for name in truth.class_names]), None),
        "extra/meta_info/gender": (np.array([b"female", b"male"] * (n // 2 + 1))[:n], None),
        "extra/meta_info/age": (np.full(n, 30, dtype=np.uint8), None),
        "extra/meta_info/body_height": (np.full(n, 175, dtype=np.uint8), None),
    }
    with h5py.File(path, "w") as handle:
        for name, (data, dtype) in datasets.items():
            if name not in omit:
                handle.create_dataset(name, data=data, dtype=dtype)
    return path


def make_shd_files(
    directory: Path,
    n_train: int = 40,
    n_test: int = 12,
    variant: str = "shd",
    gzipped: bool = False,
    max_events: int = 120,
) -> dict[str, SHDTruth]:
    """Write a variant's files (``.h5``, or only ``.h5.gz``); return their truth by split."""
    num_classes = 20 if variant == "shd" else 35
    splits = {"train": n_train, "test": n_test}
    if variant == "ssc":
        splits = {"train": n_train, "valid": n_test, "test": n_test}
    truth = {}
    for seed, (split, count) in enumerate(splits.items()):
        truth[split] = make_shd_samples(
            count, num_classes=num_classes, seed=seed + 1, max_events=max_events
        )
        path = write_shd_h5(Path(directory) / f"{variant}_{split}.h5", truth[split])
        if gzipped:
            write_gzip(path.with_name(path.name + ".gz"), path.read_bytes())
            path.unlink()
    return truth
