"""Dataset experiments run end to end on files in the real layouts (generated here)."""

import torch

from spikelight.data import shd
from spikelight.module import SpikingClassifier
from spikelight.train import train
from tests.data_fixtures import make_shd_files

QUICK = ["debug=limit", "trainer.accelerator=cpu", "callbacks=none", "logger=[]"]


def test_shd_experiment_runs_end_to_end_on_generated_files(make_config, tmp_path):
    make_shd_files(tmp_path / "shd", n_train=60, n_test=20)
    cfg = make_config(
        [
            "experiment=shd",
            f"data.data_dir={tmp_path / 'shd'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.verify_checksums=false",  # generated files are not the published ones
            "data.download=false",
            "data.batch_size=16",
            *QUICK,
        ]
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["train/rate/hidden0"] >= 0.0
    assert list((tmp_path / "cache").glob("shd_train-*.npz"))  # binned data cached
    assert sorted(p.name for p in (tmp_path / "shd").iterdir()) == ["shd_test.h5", "shd_train.h5"]


def test_heterogeneous_shd_experiment_trains_time_constants(make_config, tmp_path, monkeypatch):
    make_shd_files(tmp_path / "shd", n_train=60, n_test=20)
    monkeypatch.setattr(shd, "CHECKSUMS", {})
    cfg = make_config(
        [
            "experiment=shd_heterogeneous",
            f"data.data_dir={tmp_path / 'shd'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.download=false",
            "data.batch_size=16",
            *QUICK,
        ]
    )
    snapshots = {}

    def time_constants(model):
        neurons = [layer.neuron for layer in model.network.layers]
        return {
            name: torch.cat([n.get(name).detach().clone() for n in neurons])
            for name in ("tau_mem", "tau_syn")
        }

    start, end = SpikingClassifier.on_train_start, SpikingClassifier.on_train_end

    def record_start(self):
        snapshots["start"] = time_constants(self)
        start(self)

    def record_end(self):
        snapshots["end"] = time_constants(self)
        end(self)

    monkeypatch.setattr(SpikingClassifier, "on_train_start", record_start)
    monkeypatch.setattr(SpikingClassifier, "on_train_end", record_end)
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    for name in ("tau_mem", "tau_syn"):
        before, after = snapshots["start"][name], snapshots["end"][name]
        lo, hi = cfg.neuron[f"{name}_bounds"]
        assert before.std() > 0, name  # gamma initialisation: one value per neuron
        # draws that fell outside the bounds start on a bound, where the sigmoid of LogInterval
        # has saturated (a gradient ~1e-6 of the inside one): every other neuron must move
        inside = (before > lo * 1.001) & (before < hi * 0.999)
        assert inside.float().mean() > 0.9, name
        assert torch.all(after[inside] != before[inside]), name
        assert lo <= after.min() and after.max() <= hi, (name, after.min(), after.max())
