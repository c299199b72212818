"""Training faults lose nothing: NaN loss, interrupted checkpoint write, SIGTERM/SIGINT, resume."""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import spikelight.atomic
import spikelight.module
import spikelight.train
from spikelight.checkpoint_io import AtomicCheckpointIO
from spikelight.faults import FiniteLossGuard, NonFiniteLossError
from spikelight.train import train
from spikelight.validation import ConfigError
from tests.conftest import REPO_ROOT

QUICK = [
    "debug=limit",
    "trainer.accelerator=cpu",
    "data.samples_per_class=20",
    "data.num_steps=20",
    "data.batch_size=16",  # 3 batches an epoch (debug=limit)
    "logger=csv",
    "callbacks.progress_bar.refresh_rate=0",
]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def all_finite(state_dict):
    return all(torch.isfinite(t).all() for t in state_dict.values() if t.is_floating_point())


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(make_config, monkeypatch):
    """Epoch 0 (3 batches) trains and checkpoints; the first loss of epoch 1 is NaN."""
    regularizer = spikelight.module.rate_regularizer
    calls = []

    def nan_from_fourth_batch(*args, **kwargs):
        calls.append(1)
        return float("nan") if len(calls) > 3 else regularizer(*args, **kwargs)

    monkeypatch.setattr(spikelight.module, "rate_regularizer", nan_from_fourth_batch)
    cfg = make_config(QUICK)
    with pytest.raises(NonFiniteLossError, match="global step 3 "):
        train(cfg)
    last = load(f"{cfg.paths.output_dir}/checkpoints/last.ckpt")
    assert last["global_step"] == 3
    assert all_finite(last["state_dict"])


def test_non_finite_gradient_stops_before_the_optimizer_step():
    weight = torch.nn.Parameter(torch.ones(2))
    weight.grad = torch.tensor([1.0, float("inf")])
    optimizer = torch.optim.SGD([weight], lr=1.0)
    trainer = SimpleNamespace(
        precision_plugin=None, checkpoint_callback=None, global_step=7, current_epoch=2
    )
    with pytest.raises(NonFiniteLossError, match="gradient is not finite at global step 7 "):
        FiniteLossGuard().on_before_optimizer_step(trainer, None, optimizer)
    assert torch.equal(weight.detach(), torch.ones(2))


def test_interrupted_checkpoint_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)  # dies after writing part of the new bytes
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    assert load(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no scratch file left


def test_training_writes_every_checkpoint_through_the_atomic_writer(make_config, monkeypatch):
    """train() installs AtomicCheckpointIO, and each checkpoint file of the run (the best one,
    last.ckpt) is written by it: to a scratch file next to the target, renamed onto it."""
    installed, written, renamed = [], [], []
    start = spikelight.module.SpikingClassifier.on_train_start
    save = AtomicCheckpointIO.save_checkpoint
    replace = os.replace

    def record_start(self):
        installed.append(self.trainer.strategy.checkpoint_io)
        start(self)

    def record_save(self, checkpoint, path, storage_options=None):
        written.append(Path(path))
        save(self, checkpoint, path, storage_options)

    def record_replace(source, target):
        renamed.append((Path(source), Path(target)))
        replace(source, target)

    monkeypatch.setattr(spikelight.module.SpikingClassifier, "on_train_start", record_start)
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", record_save)
    monkeypatch.setattr(spikelight.atomic.os, "replace", record_replace)
    cfg = make_config([*QUICK, "trainer.max_epochs=1", "test=false"])
    train(cfg)
    assert len(installed) == 1 and type(installed[0]) is AtomicCheckpointIO
    files = sorted(Path(cfg.paths.output_dir, "checkpoints").iterdir())
    assert [f.name for f in files if f.name == "last.ckpt"] == ["last.ckpt"]
    assert len(files) == 2  # last.ckpt and the best checkpoint; no scratch files left
    assert set(written) == set(files)
    for target in files:
        (source,) = [s for s, t in renamed if t == target]
        assert source.parent == target.parent and source.name.startswith(f".{target.name}.")


def test_unserialisable_checkpoint_never_touches_the_file(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017  (pickling a generator fails)
        io.save_checkpoint({"global_step": 2, "bad": (i for i in range(3))}, path)
    assert load(path)["global_step"] == 1


class OpensAFile:
    """Unpickling this object creates ``path`` (what a malicious checkpoint could run)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_resume_from_last_checkpoint_loads_weights_only(make_config, tmp_path, monkeypatch):
    first = make_config(QUICK)
    train(first)
    last = f"{first.paths.output_dir}/checkpoints/last.ckpt"
    assert load(last)["global_step"] == 6  # 2 epochs x 3 batches
    resumed = make_config([*QUICK, f"ckpt_path={last}", "trainer.max_epochs=3", "test=false"])
    resumed.paths.output_dir = str(tmp_path / "resumed")
    metrics = train(resumed)
    assert math.isfinite(metrics["train/loss_epoch"])
    assert load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["global_step"] == 9

    # the same checkpoint with a pickled object whose unpickling creates a file
    marker = tmp_path / "unpickled"
    poisoned = tmp_path / "poisoned.ckpt"
    torch.save({**load(last), "payload": OpensAFile(marker)}, poisoned)
    torch.load(poisoned, map_location="cpu", weights_only=False)  # a full unpickle runs it
    assert marker.is_file()
    marker.unlink()
    again = make_config([*QUICK, f"ckpt_path={poisoned}", "trainer.max_epochs=3", "test=false"])
    again.paths.output_dir = str(tmp_path / "poisoned")
    with pytest.raises(ConfigError, match="weights_only=True"):
        train(again)  # refused by the check before training
    assert not marker.exists()
    # and by the trainer's own load, without that check
    monkeypatch.setattr(spikelight.train, "validate_checkpoint", lambda path, model: None)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        train(again)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, 143), (signal.SIGINT, 1)],  # SIGINT: what Ctrl+C sends
    ids=["sigterm", "sigint"],
)
def test_signal_during_training_saves_a_loadable_last_checkpoint(tmp_path, signum, code):
    """Once the first epoch's last.ckpt exists, signal; a newer last.ckpt must be written."""
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    args = [
        "trainer.accelerator=cpu",
        "data.samples_per_class=20",
        "data.num_steps=20",
        "data.batch_size=8",
        "trainer.max_epochs=100000",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    ]
    process = subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not last.is_file():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        signalled = time.time()
        time.sleep(0.5)  # into the next epoch
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, output[-2000:]
    assert f"saved {last}" in output  # by the interrupt handler
    assert last.stat().st_mtime >= signalled
    checkpoint = load(last)
    assert checkpoint["global_step"] > 0
    assert all_finite(checkpoint["state_dict"])
