"""Dataset experiments run end to end on files in the real layouts (generated here)."""

from spikelight.data import shd
from spikelight.train import train
from tests.data_fixtures import make_shd_files

QUICK = ["debug=limit", "trainer.accelerator=cpu", "callbacks=none", "logger=[]"]


def test_shd_experiment_runs_end_to_end_on_generated_files(make_config, tmp_path, monkeypatch):
    make_shd_files(tmp_path / "shd", n_train=60, n_test=20)
    monkeypatch.setattr(shd, "CHECKSUMS", {})  # generated files are not the published ones
    cfg = make_config(
        [
            "experiment=shd",
            f"data.data_dir={tmp_path / 'shd'}",
            "data.download=false",
            "data.batch_size=16",
            *QUICK,
        ]
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["train/rate/hidden0"] >= 0.0
    assert list((tmp_path / "shd" / "cache").glob("shd_train-*.npz"))  # binned data cached


def test_heterogeneous_shd_experiment_trains_time_constants(make_config, tmp_path, monkeypatch):
    make_shd_files(tmp_path / "shd", n_train=60, n_test=20)
    monkeypatch.setattr(shd, "CHECKSUMS", {})
    cfg = make_config(
        [
            "experiment=shd_heterogeneous",
            f"data.data_dir={tmp_path / 'shd'}",
            "data.download=false",
            "data.batch_size=16",
            *QUICK,
        ]
    )
    metrics = train(cfg)
    assert "test/acc" in metrics
