"""MNIST/Fashion-MNIST data module: real files when available, generated IDX files otherwise."""

from __future__ import annotations

import gzip
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from data_fixtures import idx_bytes, make_idx_files, md5_of, write_gzip

from spikelight.data import mnist
from spikelight.data.download import ChecksumError, MissingDataError
from spikelight.data.encoding import DirectEncoder, RateEncoder
from spikelight.data.mnist import IDXFormatError, MNISTDataModule

REAL_MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
FILE_NAMES = [name for pair in mnist.FILES.values() for name in pair]


def read_md5sums(path: Path) -> dict[str, str]:
    pairs = (line.split() for line in path.read_text().splitlines() if line.strip())
    return {name: digest for digest, name in pairs}


def independent_idx(path: Path) -> np.ndarray:
    """Minimal IDX reader for the test's own truth: skip the header, trust the shape."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw[4 + 4 * ndim :], np.uint8).reshape(shape)


@pytest.fixture
def generated_dir(tmp_path, monkeypatch) -> tuple[Path, dict]:
    """Small generated IDX files whose md5s are registered as the 'official' ones."""
    truth = make_idx_files(tmp_path)
    monkeypatch.setitem(
        mnist.CHECKSUMS, "mnist", {name: md5_of(tmp_path / name) for name in FILE_NAMES}
    )
    return tmp_path, truth


@pytest.fixture
def mnist_dir(request) -> Path:
    """The real MNIST folder when it exists, else the generated files."""
    if REAL_MNIST.is_dir():
        return REAL_MNIST
    return request.getfixturevalue("generated_dir")[0]


def fail_urlopen(*args, **kwargs):
    raise urllib.error.URLError("network unreachable (test)")


def test_split_sizes_and_labels_match_the_files(mnist_dir):
    module = MNISTDataModule(mnist_dir, val_size=50, download=False)
    module.setup()
    train_labels = independent_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    test_labels = independent_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert len(module.train_set) + len(module.val_set) == len(train_labels)
    assert len(module.val_set) == 50
    assert torch.equal(module.test_set.labels, torch.from_numpy(test_labels.astype(np.int64)))
    # train + val together hold every training label exactly once
    together = torch.cat([module.train_set.labels, module.val_set.labels])
    assert torch.equal(
        torch.bincount(together, minlength=10),
        torch.bincount(torch.from_numpy(train_labels.astype(np.int64))),
    )


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason="real MNIST files not present")
def test_real_mnist_is_verified_and_complete():
    official = read_md5sums(REAL_MNIST / "MD5SUMS")
    assert official == mnist.CHECKSUMS["mnist"]
    for name, digest in official.items():
        assert md5_of(REAL_MNIST / name) == digest
    module = MNISTDataModule(REAL_MNIST, download=False)
    module.setup()
    assert (len(module.train_set), len(module.val_set), len(module.test_set)) == (
        55000,
        5000,
        10000,
    )
    assert module.test_set.labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first digits


def test_items_are_flat_images_in_unit_range(mnist_dir):
    module = MNISTDataModule(mnist_dir, val_size=10, download=False)
    module.setup()
    image, label = module.test_set[0]
    raw = independent_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[0].reshape(-1)
    assert image.shape == (784,) and image.dtype == torch.float32
    assert torch.allclose(image, torch.from_numpy(raw.astype(np.float32)) / 255)
    assert label.dtype == torch.long


def test_validation_split_depends_only_on_seed(generated_dir):
    directory, _ = generated_dir

    def val_labels(seed):
        module = MNISTDataModule(directory, val_size=40, seed=seed, download=False)
        module.setup()
        return module.val_set.images

    assert torch.equal(val_labels(1), val_labels(1))
    assert not torch.equal(val_labels(1), val_labels(2))


def test_batches_are_encoded_per_batch(generated_dir):
    directory, _ = generated_dir
    module = MNISTDataModule(directory, batch_size=16, num_steps=7, val_size=20, download=False)
    module.setup()
    x, y = next(iter(module.train_dataloader()))
    assert x.shape == (16, 784) and y.shape == (16,) and y.dtype == torch.long
    spikes, labels = module.on_after_batch_transfer((x, y), 0)
    assert spikes.shape == (16, 7, 784) and spikes.dtype == torch.float32
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    assert labels is y


def test_direct_encoding_carries_the_image(generated_dir):
    directory, _ = generated_dir
    module = MNISTDataModule(directory, num_steps=3, encoding=DirectEncoder(), download=False)
    images = torch.rand(4, 784)
    assert torch.equal(module.encode(images, train=True), images[:, None].expand(4, 3, 784))


def test_rate_spikes_reproducible_from_seed_and_eval_passes_restart(generated_dir):
    directory, _ = generated_dir
    images = torch.full((8, 784), 0.5)

    def fresh(seed):
        return MNISTDataModule(directory, encoding=RateEncoder(), seed=seed, download=False)

    first, again, other = (fresh(seed).encode(images, True) for seed in (0, 0, 1))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    module = fresh(0)  # training continues one stream: consecutive batches differ
    assert not torch.equal(module.encode(images, True), module.encode(images, True))

    module = fresh(0)
    module.trainer = SimpleNamespace(
        state=SimpleNamespace(stage="validate"), current_epoch=0, global_step=10, global_rank=0
    )
    pass_one = [module.encode(images, False) for _ in range(2)]
    assert not torch.equal(pass_one[0], pass_one[1])  # within a pass the stream continues
    module.trainer.global_step = 20  # the next validation pass restarts the stream
    pass_two = [module.encode(images, False) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(pass_one, pass_two, strict=True))


def test_resumed_module_continues_the_training_spike_stream(generated_dir):
    directory, _ = generated_dir
    images = torch.full((8, 784), 0.5)

    def fresh():
        return MNISTDataModule(directory, encoding=RateEncoder(), seed=0, download=False)

    original = fresh()
    original.encode(images, True)
    state = original.state_dict()  # as a checkpoint after one batch
    expected = original.encode(images, True)
    resumed = fresh()
    resumed.load_state_dict(state)
    assert torch.equal(resumed.encode(images, True), expected)
    assert not torch.equal(fresh().encode(images, True), expected)


def test_checksum_mismatch_names_the_file(tmp_path):
    make_idx_files(tmp_path)  # generated files against the real MNIST checksums
    module = MNISTDataModule(tmp_path, download=False)
    with pytest.raises(ChecksumError, match="train-images-idx3-ubyte.gz.*expected f68b3c2d"):
        module.setup()


@pytest.mark.parametrize(
    ("name", "payload", "message"),
    [
        ("train-images-idx3-ubyte.gz", idx_bytes(np.zeros((5, 28, 28)))[:-7], "truncated"),
        ("train-images-idx3-ubyte.gz", idx_bytes(np.zeros((5, 28, 28)), 0x0801), "magic"),
        ("train-images-idx3-ubyte.gz", idx_bytes(np.zeros((5, 20, 20))), r"\(28, 28\)"),
        ("train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(4)), "4 labels but"),
        ("train-labels-idx1-ubyte.gz", idx_bytes(np.full(5, 10)), "label 10"),
        ("t10k-labels-idx1-ubyte.gz", b"\x00\x00", "truncated"),
    ],
)
def test_corrupt_idx_files_fail_clearly(tmp_path, monkeypatch, name, payload, message):
    make_idx_files(tmp_path, n_train=5, n_test=5)
    write_gzip(tmp_path / name, payload)
    monkeypatch.setitem(mnist.CHECKSUMS, "mnist", dict.fromkeys(FILE_NAMES))  # skip md5
    with pytest.raises(IDXFormatError, match=message) as error:
        MNISTDataModule(tmp_path, val_size=1, download=False).setup()
    assert name in str(error.value)


def test_damaged_gzip_fails_clearly(tmp_path, monkeypatch):
    make_idx_files(tmp_path, n_train=5, n_test=5)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    monkeypatch.setitem(mnist.CHECKSUMS, "mnist", dict.fromkeys(FILE_NAMES))
    with pytest.raises(IDXFormatError, match="t10k-images-idx3-ubyte.gz.*gzip"):
        MNISTDataModule(tmp_path, val_size=1, download=False).setup()


def test_offline_download_fails_fast_with_hand_placement_message(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", fail_urlopen)
    target = tmp_path / "fashion"
    start = time.monotonic()
    with pytest.raises(MissingDataError) as error:
        MNISTDataModule(target, variant="fashion_mnist").setup()
    assert time.monotonic() - start < 5
    for name in [str(target), *FILE_NAMES]:
        assert name in str(error.value)
    assert not any(target.iterdir())  # nothing partial left behind


def test_download_false_names_missing_files(tmp_path):
    with pytest.raises(MissingDataError, match="t10k-labels-idx1-ubyte.gz"):
        MNISTDataModule(tmp_path, download=False).setup()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_inputs": 700}, "num_inputs must be 784"),
        ({"num_classes": 20}, "num_classes must be 10"),
        ({"variant": "emnist"}, "variant must be one of"),
        ({"val_size": -1}, "val_size"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MNISTDataModule(tmp_path, **kwargs)


def test_val_size_must_leave_training_data(generated_dir):
    directory, truth = generated_dir
    with pytest.raises(ValueError, match="leaves no training data"):
        MNISTDataModule(directory, val_size=len(truth["train"][1]), download=False).setup()


def test_shift_moves_each_image_by_its_own_offset():
    images = torch.zeros(2, 28, 28)
    images[0, 5, 7] = 1.0  # moved down 2, left 3
    images[1, 0, 27] = 0.5  # moved up 1: leaves the frame
    images[1, 10, 10] = 0.25  # moved up 1, right 1
    shifted = mnist.shift_images(
        images.reshape(2, 784), torch.tensor([2, -1]), torch.tensor([-3, 1])
    ).reshape(2, 28, 28)
    expected = torch.zeros(2, 28, 28)
    expected[0, 7, 4] = 1.0
    expected[1, 9, 11] = 0.25
    assert torch.equal(shifted, expected)


def test_random_shift_applies_to_training_batches_only(generated_dir):
    directory, _ = generated_dir
    module = MNISTDataModule(
        directory, num_steps=2, encoding=DirectEncoder(), max_shift=2, download=False
    )
    images = torch.zeros(64, 784)
    images[:, 14 * 28 + 14] = 1.0  # one lit pixel in the centre
    assert torch.equal(module.encode(images, train=False)[:, 0], images)
    moved = module.encode(images, train=True)[:, 0].reshape(64, 28, 28)
    assert torch.equal(moved.sum((1, 2)), torch.ones(64))  # never leaves the frame
    rows, cols = (moved.sum(dim).argmax(1) - 14 for dim in (2, 1))
    assert rows.abs().max() == 2 and cols.abs().max() == 2  # uniform on [-2, 2]: all reached
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10


@pytest.mark.parametrize("value", [-1, 28, 1.5, True])
def test_bad_max_shift_names_the_key(generated_dir, value):
    with pytest.raises(ValueError, match="max_shift"):
        MNISTDataModule(generated_dir[0], max_shift=value, download=False)
