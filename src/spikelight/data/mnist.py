"""MNIST and Fashion-MNIST as spike trains: 784 inputs, 10 classes, encoded per batch.

Reads the four gzip'd IDX files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``) from ``data_dir``, checking their
md5 against the published checksums, and downloads absent ones atomically. The dataset yields
flattened images ``[784]`` in [0, 1]; the encoder (rate, latency, direct, IF) turns a batch into
``[B, num_steps, 784]`` on the training device.

Splits: the 60000 training images give ``60000 - val_size`` for training and ``val_size`` for
validation, chosen by a random permutation seeded with ``seed`` (the same seed always holds out
the same images); the 10000 test images are the test split.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from spikelight import checks
from spikelight.data.base import SpikeDataModule
from spikelight.data.download import CorruptFileError, RemoteFile, fetch_missing, verify_md5
from spikelight.data.encoding import RateEncoder

IMAGE_SIDE = 28
NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10
IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

#: md5 of the published gzip files. MNIST: as torchvision and /work/shared/data/mnist/MD5SUMS;
#: Fashion-MNIST: the table in github.com/zalandoresearch/fashion-mnist (also in torchvision).
CHECKSUMS: dict[str, dict[str, str | None]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


class IDXFormatError(CorruptFileError):
    """An IDX file is truncated, corrupt or not the expected kind of file."""


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read a gzip'd IDX file of unsigned bytes; check its magic number and exact length.

    IDX layout: a big-endian int32 magic ``0x0000 08 <ndim>``, ``ndim`` big-endian int32 sizes,
    then the data in C order.
    """
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise IDXFormatError(f"{path} is not a complete gzip file: {error}") from error
    if len(raw) < 4:
        raise IDXFormatError(f"{path} is truncated: {len(raw)} bytes, no IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise IDXFormatError(
            f"{path} has IDX magic number {found:#010x}, expected {magic:#010x} "
            f"({'images' if magic == IMAGES_MAGIC else 'labels'} file of unsigned bytes)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path} is truncated inside its header ({len(raw)} bytes)")
    shape = tuple(int(size) for size in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    expected_bytes = header + int(np.prod(shape))
    if len(raw) != expected_bytes:
        state = "truncated" if len(raw) < expected_bytes else "longer than its header says"
        raise IDXFormatError(
            f"{path} is {state}: header shape {shape} needs {expected_bytes} bytes, "
            f"file has {len(raw)}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape).copy()  # writable


def load_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 784]`` uint8 and labels ``[N]`` int64 of ``"train"`` or ``"test"``."""
    images_path, labels_path = (directory / name for name in FILES[split])
    images = read_idx(images_path, IMAGES_MAGIC)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise IDXFormatError(
            f"{images_path} holds images of {images.shape[1:]} pixels, expected (28, 28)"
        )
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(labels) != len(images):
        raise IDXFormatError(
            f"{labels_path} has {len(labels)} labels but {images_path} has {len(images)} images"
        )
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise IDXFormatError(
            f"{labels_path} contains label {labels.max()}, expected 0..{NUM_CLASSES - 1}"
        )
    return images.reshape(len(images), NUM_PIXELS), labels.astype(np.int64)


class ImageDataset(Dataset):
    """Flattened uint8 images kept as bytes; each item is ``(float [784] in [0, 1], label)``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].float() / 255.0, self.labels[index]


class MNISTDataModule(SpikeDataModule):
    """MNIST or Fashion-MNIST (``variant``) with a per-batch spike ``encoding``.

    ``num_inputs``/``num_classes`` exist so that configs can state them for the model; they must
    be 784 and 10. Stochastic encoders draw from the seeded, resumable streams of
    :mod:`spikelight.data.base`: one for training, a restarted one per evaluation pass.
    """

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 128,
        num_steps: int = 25,
        encoding: nn.Module | None = None,
        val_size: int = 5000,
        num_workers: int = 0,
        seed: int = 0,
        num_inputs: int = NUM_PIXELS,
        num_classes: int = NUM_CLASSES,
        variant: str = "mnist",
        download: bool = True,
        pin_memory: bool | None = None,
        test_every_epoch: bool = False,
        max_shift: int = 0,
    ) -> None:
        super().__init__(batch_size, num_steps, num_workers, seed, pin_memory, test_every_epoch)
        self.max_shift = checks.non_negative_int("data.max_shift", max_shift)
        if self.max_shift >= IMAGE_SIDE:
            raise ValueError(
                f"data.max_shift must be below the image side ({IMAGE_SIDE} pixels), "
                f"got {max_shift!r}"
            )
        if variant not in CHECKSUMS:
            raise ValueError(f"data.variant must be one of {sorted(CHECKSUMS)}, got {variant!r}")
        if num_inputs != NUM_PIXELS:
            raise ValueError(
                f"data.num_inputs must be {NUM_PIXELS} for {variant} (28x28 pixels), "
                f"got {num_inputs!r}"
            )
        if num_classes != NUM_CLASSES:
            raise ValueError(
                f"data.num_classes must be {NUM_CLASSES} for {variant}, got {num_classes!r}"
            )
        if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0:
            raise ValueError(f"data.val_size must be an integer >= 0, got {val_size!r}")
        if encoding is not None and not callable(encoding):
            raise TypeError(f"data.encoding must be an encoder module, got {encoding!r}")
        self.data_dir = Path(data_dir).expanduser()
        self.variant = variant
        self.val_size = val_size
        self.download = download
        self.encoding = encoding if encoding is not None else RateEncoder()
        self.num_inputs = NUM_PIXELS
        self.num_classes = NUM_CLASSES
        self.class_names = list(CLASS_NAMES[variant])

    def remote_files(self) -> list[RemoteFile]:
        """The four IDX files with their mirrors and checksums."""
        checksums = CHECKSUMS[self.variant]
        names = [name for pair in FILES.values() for name in pair]
        return [
            RemoteFile(name, tuple(base + name for base in MIRRORS[self.variant]), checksums[name])
            for name in names
        ]

    def prepare_data(self) -> None:
        """Download absent files (Lightning runs this on one process per node)."""
        fetch_missing(self.data_dir, self.remote_files(), download_allowed=self.download)

    def make_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        self.prepare_data()
        for remote in self.remote_files():
            verify_md5(self.data_dir / remote.name, remote.md5)
        train_images, train_labels = load_split(self.data_dir, "train")
        test_images, test_labels = load_split(self.data_dir, "test")
        if self.val_size >= len(train_labels):
            raise ValueError(
                f"data.val_size={self.val_size} leaves no training data: the training file "
                f"has {len(train_labels)} images"
            )
        order = np.random.default_rng(self.seed).permutation(len(train_labels))
        val_index = np.sort(order[: self.val_size])
        train_index = np.sort(order[self.val_size :])
        return (
            ImageDataset(train_images[train_index], train_labels[train_index]),
            ImageDataset(train_images[val_index], train_labels[val_index]),
            ImageDataset(test_images, test_labels),
        )

    def encode(self, x: torch.Tensor, train: bool, generator=None) -> torch.Tensor:
        images = x.float() / 255.0 if x.dtype == torch.uint8 else x
        generator = generator or self.encoding_generator(images.device, train)
        if train and self.max_shift:
            images = random_shift(images, self.max_shift, generator)
        return self.encoding(images, self.num_steps, generator=generator)


def shift_images(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Translate each flattened image ``[B, 784]`` by ``(dy[b], dx[b])`` pixels, zero-filled.

    Pixel ``(r, c)`` of the result is pixel ``(r - dy, c - dx)`` of the input (0 outside).
    """
    side = torch.arange(IMAGE_SIDE, device=images.device)
    rows = side[None, :] - dy[:, None]  # [B, 28]: source row of each output row
    cols = side[None, :] - dx[:, None]
    inside = ((rows >= 0) & (rows < IMAGE_SIDE))[:, :, None] & ((cols >= 0) & (cols < IMAGE_SIDE))[
        :, None, :
    ]
    source = (
        rows.clamp(0, IMAGE_SIDE - 1)[:, :, None] * IMAGE_SIDE
        + cols.clamp(0, IMAGE_SIDE - 1)[:, None, :]
    )
    shifted = images.gather(1, source.reshape(len(images), -1))
    return shifted * inside.reshape(len(images), -1).to(images.dtype)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Training augmentation: translations drawn uniformly from ``[-max_shift, max_shift]``."""
    dy, dx = torch.randint(
        -max_shift, max_shift + 1, (2, len(images)), generator=generator, device=images.device
    )
    return shift_images(images, dy, dx)
