"""SHD/SSC data module and the atomic download helper, on generated SHD-layout files."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from data_fixtures import (
    SHD_CHANNELS,
    make_shd_files,
    make_shd_samples,
    md5_of,
    write_shd_h5,
)
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from spikelight.data import shd
from spikelight.data.download import (
    ChecksumError,
    CorruptFileError,
    MissingDataError,
    RemoteFile,
    download,
    md5sum,
)
from spikelight.data.shd import SHDDataModule, SHDFormatError, collate_events, densify
from spikelight.resolvers import register_resolvers

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
OFFICIAL = dict(shd.CHECKSUMS)  # the published md5s, before a fixture clears them


@pytest.fixture(autouse=True)
def no_known_checksums(monkeypatch):
    """Generated files are not the official ones: check layout, not md5, unless a test says."""
    monkeypatch.setattr(shd, "CHECKSUMS", {})


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch):
    """The default cache_dir ($SPIKELIGHT_CACHE/shd), in a scratch folder apart from the data."""
    root = tmp_path_factory.mktemp("user_cache")
    monkeypatch.setenv("SPIKELIGHT_CACHE", str(root))
    return root / "shd"


@pytest.fixture
def shd_dir(tmp_path):
    return tmp_path, make_shd_files(tmp_path)


def everything(dataset, num_steps, num_inputs) -> torch.Tensor:
    """All samples of a dataset, densified the way batches are."""
    batch, _ = collate_events([dataset[i] for i in range(len(dataset))])
    return densify(batch, num_steps, num_inputs)


def labels_of(dataset) -> np.ndarray:
    return np.array([dataset[i][1].item() for i in range(len(dataset))])


# -- binning -----------------------------------------------------------------------------
@pytest.mark.parametrize(("num_steps", "channel_pool"), [(100, 1), (50, 7), (25, 700)])
def test_binning_matches_independent_histogram(shd_dir, num_steps, channel_pool):
    directory, truth = shd_dir
    module = SHDDataModule(
        directory,
        num_steps=num_steps,
        channel_pool=channel_pool,
        num_inputs=SHD_CHANNELS // channel_pool,
        download=False,
    )
    module.setup()
    dense = everything(module.test_set, num_steps, module.num_inputs)
    expected = truth["test"].dense(num_steps, channel_pool)
    assert dense.shape == expected.shape
    assert np.array_equal(dense.numpy(), expected)
    # every event inside max_time is counted, every later one dropped
    inside = sum(int((bins >= 0).sum()) for bins in truth["test"].bins)
    dropped = sum(int((bins < 0).sum()) for bins in truth["test"].bins)
    assert dense.sum().item() == inside and dropped > 0


def test_train_and_val_cover_the_training_file(shd_dir):
    directory, truth = shd_dir
    module = SHDDataModule(directory, val_fraction=0.25, download=False)
    module.setup()
    train, val = module.train_set, module.val_set
    assert len(val) == round(0.25 * 40) and len(train) + len(val) == 40
    assert set(train.indices).isdisjoint(val.indices)
    expected = truth["train"].dense()
    assert np.array_equal(everything(val, 100, 700).numpy(), expected[val.indices])
    assert np.array_equal(labels_of(train), truth["train"].labels[train.indices])


def test_labels_and_class_names_come_from_the_file(shd_dir):
    directory, truth = shd_dir
    module = SHDDataModule(directory, download=False)
    assert module.class_names == [str(i) for i in range(20)]  # placeholders before setup
    module.setup()
    assert module.class_names == truth["train"].class_names
    assert np.array_equal(labels_of(module.test_set), truth["test"].labels)


def test_random_split_depends_only_on_seed(shd_dir):
    directory, _ = shd_dir

    def val_indices(seed):
        module = SHDDataModule(directory, seed=seed, val_fraction=0.3, download=False)
        module.setup()
        return module.val_set.indices

    assert np.array_equal(val_indices(3), val_indices(3))
    assert not np.array_equal(val_indices(3), val_indices(4))


def test_speaker_split_holds_out_whole_speakers(shd_dir):
    directory, truth = shd_dir
    module = SHDDataModule(directory, val_split="speaker", val_fraction=0.3, download=False)
    module.setup()
    speakers = truth["train"].speakers
    train_speakers = set(speakers[module.train_set.indices])
    val_speakers = set(speakers[module.val_set.indices])
    assert val_speakers and train_speakers and train_speakers.isdisjoint(val_speakers)
    assert len(module.val_set) >= 0.3 * 40


def test_loader_batches_densify_to_bt_c(shd_dir):
    directory, truth = shd_dir
    module = SHDDataModule(directory, batch_size=5, num_steps=20, download=False, pin_memory=False)
    module.setup()
    batch, labels = next(iter(module.test_dataloader()))
    x, y = module.on_after_batch_transfer((batch, labels), 0)
    assert x.shape == (5, 20, 700) and x.dtype == torch.float32
    assert y.dtype == torch.long and torch.equal(
        y, torch.from_numpy(truth["test"].labels[:5]).long()
    )
    assert np.array_equal(x.numpy(), truth["test"].dense(20)[:5])


def test_ssc_uses_its_official_validation_file(tmp_path):
    truth = make_shd_files(tmp_path, n_train=10, n_test=6, variant="ssc")
    module = SHDDataModule(tmp_path, variant="ssc", num_classes=35, download=False)
    module.setup()
    assert (len(module.train_set), len(module.val_set), len(module.test_set)) == (10, 6, 6)
    assert np.array_equal(labels_of(module.val_set), truth["valid"].labels)
    assert len(module.class_names) == 35


# -- cache -------------------------------------------------------------------------------
def test_cache_is_reused_without_opening_hdf5(shd_dir, cache_dir, monkeypatch):
    directory, _ = shd_dir
    first = SHDDataModule(directory, download=False)
    first.setup()
    assert len(list(cache_dir.glob("*.npz"))) == 2
    assert sorted(p.name for p in directory.iterdir()) == ["shd_test.h5", "shd_train.h5"]

    def no_hdf5(*args, **kwargs):
        raise AssertionError("HDF5 opened although a matching cache exists")

    monkeypatch.setattr(h5py, "File", no_hdf5)
    second = SHDDataModule(directory, download=False)
    second.setup()
    assert second.class_names == first.class_names
    assert torch.equal(everything(second.test_set, 100, 700), everything(first.test_set, 100, 700))
    with pytest.raises(AssertionError, match="HDF5 opened"):  # other binning: other cache key
        SHDDataModule(directory, num_steps=50, download=False).setup()


def test_cache_is_rebuilt_when_the_file_changes(shd_dir):
    directory, _ = shd_dir
    SHDDataModule(directory, download=False).setup()
    changed = make_shd_samples(9, seed=42)
    write_shd_h5(directory / "shd_test.h5", changed)
    module = SHDDataModule(directory, download=False)
    module.setup()
    assert np.array_equal(everything(module.test_set, 100, 700).numpy(), changed.dense())


def test_without_cache_nothing_is_written(shd_dir, cache_dir):
    directory, _ = shd_dir
    SHDDataModule(directory, cache=False, download=False).setup()
    assert not cache_dir.exists()
    assert sorted(p.name for p in directory.iterdir()) == ["shd_test.h5", "shd_train.h5"]


# -- hand-placed and bad files -----------------------------------------------------------
def test_hand_placed_gzip_files_are_verified_and_decompressed(tmp_path, cache_dir, monkeypatch):
    truth = make_shd_files(tmp_path, gzipped=True)
    sums = {p.name: md5_of(p) for p in tmp_path.glob("*.gz")}
    monkeypatch.setattr(shd, "CHECKSUMS", sums)
    module = SHDDataModule(tmp_path, download=False)
    module.setup()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shd_test.h5.gz", "shd_train.h5.gz"]
    for name in ("shd_train", "shd_test"):  # decompressed copies, named by the .gz's md5, size
        gz = tmp_path / f"{name}.h5.gz"
        copy = cache_dir / f"{name}-{sums[gz.name][:16]}-{gz.stat().st_size}.h5"
        assert copy.read_bytes() == gzip.decompress(gz.read_bytes())
    assert np.array_equal(labels_of(module.test_set), truth["test"].labels)
    assert not list(cache_dir.glob(".*part"))


def test_checksum_mismatch_fails_names_the_switch_and_writes_nothing(
    shd_dir, cache_dir, monkeypatch
):
    directory, _ = shd_dir
    monkeypatch.setattr(shd, "CHECKSUMS", {"shd_train.h5": "0" * 32})
    with pytest.raises(ChecksumError, match="shd_train.h5: expected 0{32}, got") as error:
        SHDDataModule(directory, download=False).setup()
    assert "set data.verify_checksums=false" in str(error.value)
    assert not cache_dir.exists()


def test_checksum_mismatch_of_hand_placed_gzip_leaves_no_h5(tmp_path, monkeypatch):
    make_shd_files(tmp_path, gzipped=True)
    monkeypatch.setattr(shd, "CHECKSUMS", {"shd_train.h5.gz": "0" * 32})
    with pytest.raises(ChecksumError, match="shd_train.h5.gz"):
        SHDDataModule(tmp_path, download=False).setup()
    assert not (tmp_path / "shd_train.h5").exists()


@pytest.mark.parametrize("verify_checksums", [True, False])
def test_truncated_gzip_leaves_no_partial_file(tmp_path, cache_dir, verify_checksums):
    make_shd_files(tmp_path, gzipped=True)
    gz = tmp_path / "shd_train.h5.gz"
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    module = SHDDataModule(tmp_path, download=False, verify_checksums=verify_checksums)
    with pytest.raises(CorruptFileError, match="shd_train.h5.gz.*gzip"):
        module.setup()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shd_test.h5.gz", "shd_train.h5.gz"]
    assert not list(cache_dir.glob("shd_train*")) and not list(cache_dir.glob(".*"))


def test_truncated_hdf5_fails_clearly(shd_dir, cache_dir):
    directory, _ = shd_dir
    path = directory / "shd_train.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SHDFormatError, match="shd_train.h5"):
        SHDDataModule(directory, download=False).setup()
    assert not cache_dir.exists()


@pytest.mark.parametrize("missing", ["spikes/units", "labels"])
def test_wrong_layout_names_the_missing_dataset(tmp_path, missing):
    make_shd_files(tmp_path)
    write_shd_h5(tmp_path / "shd_train.h5", make_shd_samples(8), omit=(missing,))
    with pytest.raises(SHDFormatError, match=f"shd_train.h5 has no dataset '{missing}'"):
        SHDDataModule(tmp_path, download=False).setup()


def test_out_of_range_units_and_labels_are_rejected(tmp_path):
    make_shd_files(tmp_path)
    bad = make_shd_samples(6)
    bad.units[3] = bad.units[3].copy()
    bad.units[3][0] = 700
    write_shd_h5(tmp_path / "shd_train.h5", bad)
    with pytest.raises(SHDFormatError, match="sample 3 has unit ids in .*700"):
        SHDDataModule(tmp_path, download=False).setup()
    bad = make_shd_samples(6)
    bad.labels[2] = 25
    write_shd_h5(tmp_path / "shd_train.h5", bad)
    with pytest.raises(SHDFormatError, match="label 25 of sample 2"):
        SHDDataModule(tmp_path, download=False).setup()


# -- SHD-layout data that is not the official release; read-only data_dir ----------------
@pytest.mark.parametrize("gzipped", [False, True])
def test_unofficial_files_need_the_switch_and_then_load(tmp_path, monkeypatch, gzipped):
    truth = make_shd_files(tmp_path, gzipped=gzipped)
    monkeypatch.setattr(shd, "CHECKSUMS", OFFICIAL)
    name = "shd_train.h5.gz" if gzipped else "shd_train.h5"
    with pytest.raises(ChecksumError) as error:
        SHDDataModule(tmp_path, download=False).setup()
    message = str(error.value)
    assert f"{name}: expected {OFFICIAL[name]}, got {md5_of(tmp_path / name)}" in message
    assert "not the official release" in message and "data.verify_checksums=false" in message
    module = SHDDataModule(tmp_path, download=False, verify_checksums=False)
    module.setup()
    assert np.array_equal(everything(module.test_set, 100, 700).numpy(), truth["test"].dense())


def test_switch_off_still_rejects_corrupt_and_non_shd_files(tmp_path, monkeypatch):
    monkeypatch.setattr(shd, "CHECKSUMS", OFFICIAL)

    def setup():
        SHDDataModule(tmp_path, download=False, verify_checksums=False).setup()

    make_shd_files(tmp_path, gzipped=True)
    (tmp_path / "shd_train.h5.gz").write_bytes(b"not gzip at all" * 100)
    with pytest.raises(CorruptFileError, match="shd_train.h5.gz is not a complete gzip file"):
        setup()
    not_shd = write_shd_h5(tmp_path / "other.h5", make_shd_samples(5), omit=("spikes/times",))
    (tmp_path / "shd_train.h5.gz").write_bytes(gzip.compress(not_shd.read_bytes()))
    with pytest.raises(SHDFormatError, match=r"no dataset 'spikes/times'.*decompressed from"):
        setup()
    (tmp_path / "shd_train.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    with pytest.raises(SHDFormatError, match="shd_train.h5 cannot be read as HDF5"):
        setup()


def test_files_of_two_directories_do_not_share_caches(tmp_path, cache_dir):
    first = make_shd_files(tmp_path / "a", gzipped=True)
    second = make_shd_files(tmp_path / "b", n_test=7, gzipped=True)  # same train, other test
    for directory, truth in (
        (tmp_path / "a", first),
        (tmp_path / "b", second),
        (tmp_path / "a", first),
    ):
        module = SHDDataModule(directory, download=False)
        module.setup()
        assert np.array_equal(everything(module.test_set, 100, 700).numpy(), truth["test"].dense())
    assert len(list(cache_dir.glob("shd_test-*.npz"))) == 2
    assert len(list(cache_dir.glob("shd_test-*.h5"))) == 2
    assert len(list(cache_dir.glob("shd_train-*.npz"))) == 1  # same content: one entry


@pytest.fixture
def read_only_view(tmp_path):
    """``(source, view)``: ``view`` is a read-only bind mount of ``source`` (root ignores write
    bits, so only a read-only mount proves that nothing is written)."""
    source, view = tmp_path / "source", tmp_path / "view"
    source.mkdir()
    view.mkdir()
    try:
        subprocess.run(["mount", "--bind", source, view], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"a read-only bind mount is not permitted here ({error})")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", view], check=True, capture_output=True)
        yield source, view
    finally:
        subprocess.run(["umount", view], check=False, capture_output=True)


@pytest.mark.parametrize("gzipped", [True, False])
def test_read_only_data_dir(read_only_view, cache_dir, monkeypatch, gzipped):
    source, view = read_only_view
    truth = make_shd_files(source, gzipped=gzipped)
    with pytest.raises(OSError, match="Read-only"):
        (view / "probe").write_bytes(b"")
    monkeypatch.setattr(shd, "CHECKSUMS", OFFICIAL)
    before = {p.name: md5_of(p) for p in view.iterdir()}
    for _ in range(2):  # decompress and bin, then read the caches
        module = SHDDataModule(view, download=False, verify_checksums=False)
        module.setup()
        assert np.array_equal(labels_of(module.test_set), truth["test"].labels)
        assert np.array_equal(everything(module.test_set, 100, 700).numpy(), truth["test"].dense())
    assert {p.name: md5_of(p) for p in source.iterdir()} == before
    assert len(list(cache_dir.glob("*.npz"))) == 2
    assert len(list(cache_dir.glob("*.h5"))) == (2 if gzipped else 0)


# -- download ----------------------------------------------------------------------------
class FakeResponse(io.BytesIO):
    """What urlopen returns: a byte stream with headers; optionally dies mid-transfer."""

    def __init__(self, payload: bytes, interrupt_after: int | None = None):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}
        self.interrupt_after = interrupt_after

    def read(self, size=-1):
        if self.interrupt_after is not None and self.tell() >= self.interrupt_after:
            raise KeyboardInterrupt
        return super().read(min(size, 1000) if size > 0 else size)


def serve(monkeypatch, files: dict[str, bytes], interrupt_after=None) -> list[str]:
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise urllib.error.HTTPError(url, 404, "not found", {}, None)
        return FakeResponse(files[name], interrupt_after)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return requested


def md5_of_bytes(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()


def gz_payloads(tmp_path) -> dict[str, bytes]:
    source = tmp_path / "source"
    make_shd_files(source, gzipped=True)
    return {p.name: p.read_bytes() for p in source.glob("*.gz")}


def test_download_verifies_and_decompresses(tmp_path, monkeypatch):
    payloads = gz_payloads(tmp_path)
    monkeypatch.setattr(shd, "CHECKSUMS", {n: md5_of_bytes(p) for n, p in payloads.items()})
    requested = serve(monkeypatch, payloads)
    target = tmp_path / "data"
    module = SHDDataModule(target)
    module.setup()
    assert sorted(u.rsplit("/", 1)[-1] for u in requested) == ["shd_test.h5.gz", "shd_train.h5.gz"]
    assert requested[0].startswith("https://zenkelab.org/datasets/")
    assert sorted(p.name for p in target.iterdir()) == ["shd_test.h5", "shd_train.h5"]
    assert (target / "shd_test.h5").read_bytes() == gzip.decompress(payloads["shd_test.h5.gz"])


@pytest.mark.parametrize("verify_checksums", [True, False])
def test_download_with_wrong_checksum_leaves_nothing(tmp_path, monkeypatch, verify_checksums):
    """A download comes from the official URL: its md5 is checked whatever the switch says."""
    payloads = gz_payloads(tmp_path)
    monkeypatch.setattr(shd, "CHECKSUMS", {"shd_train.h5.gz": "f" * 32})
    serve(monkeypatch, payloads)
    target = tmp_path / "data"
    with pytest.raises(ChecksumError, match="expected f{32}"):
        SHDDataModule(target, verify_checksums=verify_checksums).setup()
    assert not list(target.iterdir())


def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    serve(monkeypatch, {"big.bin": bytes(50_000)}, interrupt_after=20_000)
    with pytest.raises(KeyboardInterrupt):
        download(RemoteFile("big.bin", ("https://example.org/big.bin",)), tmp_path / "d")
    assert not list((tmp_path / "d").iterdir())


def test_plain_download_is_atomic_and_checked(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 300
    serve(monkeypatch, {"f.bin": payload})
    remote = RemoteFile("f.bin", ("https://a/f.bin",), md5_of_bytes(payload))
    path = download(remote, tmp_path)
    assert path.read_bytes() == payload and md5sum(path) == remote.md5
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_offline_download_fails_fast_with_hand_placement_message(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    target = tmp_path / "shd"
    start = time.monotonic()
    with pytest.raises(MissingDataError) as error:
        SHDDataModule(target).setup()
    assert time.monotonic() - start < 5
    message = str(error.value)
    for expected in [str(target / "shd_train.h5.gz"), str(target / "shd_test.h5.gz")]:
        assert expected in message
    assert "https://zenkelab.org/datasets/shd_train.h5.gz" in message
    assert not list(target.iterdir())


def test_download_false_lists_missing_files(tmp_path):
    make_shd_files(tmp_path)
    (tmp_path / "shd_test.h5").unlink()
    with pytest.raises(MissingDataError, match="shd_test.h5.gz") as error:
        SHDDataModule(tmp_path, download=False).setup()
    assert "shd_train" not in str(error.value)


# -- arguments and config ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channel_pool": 3}, r"channel_pool=3 must divide 700; choose one of \[1, 2, 4"),
        ({"channel_pool": 2}, "num_inputs must be 700 // channel_pool = 350"),
        ({"num_classes": 35}, "num_classes must be 20 for shd"),
        ({"variant": "nmnist"}, "variant must be one of"),
        ({"val_split": "gender"}, "val_split"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"max_time": 0}, "max_time"),
        ({"verify_checksums": "false"}, "verify_checksums='false': expected true or false"),
        ({"cache_dir": 3}, "cache_dir=3: expected a directory path"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SHDDataModule(tmp_path, **kwargs)


def test_config_num_inputs_follows_channel_pool(tmp_path, cache_dir):
    register_resolvers()
    register_resolvers()  # idempotent
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name=None, overrides=["+data=shd", "+paths=default", "data.channel_pool=5"]
        )
    OmegaConf.set_struct(cfg, False)
    cfg = OmegaConf.merge(cfg, {"paths": {"data_dir": str(tmp_path)}, "seed": 3})
    assert cfg.data.num_inputs == 140
    module = instantiate(cfg.data)
    assert module.num_inputs == 140 and module.data_dir == tmp_path / "shd"
    assert module.seed == 3
    assert module.cache_dir == cache_dir and module.verify_checksums is True
