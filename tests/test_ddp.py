"""trainer=ddp: two CPU processes on gloo write once (rank zero); refused inside a multirun."""

from __future__ import annotations

import json
import time

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf

from spikelight import train as train_module
from spikelight.train import CONFIG_DIR
from spikelight.validation import ConfigError, validate_config
from tests.conftest import run_train_cli

TINY = [
    "trainer.accelerator=cpu",
    "data.samples_per_class=20",  # 140 training samples
    "data.num_steps=20",
    "data.batch_size=20",  # global batch: 10 per rank
    "callbacks.progress_bar.refresh_rate=0",
]


def test_two_process_gloo_ddp_writes_once_with_the_batch_split(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train_cli(
        "trainer=ddp",
        "trainer.max_epochs=1",
        *TINY,
        "logger=[tensorboard,csv]",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "distributed_backend=gloo" in output
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output
    # each rank loads 70 samples in batches of 20 / 2 = 10: 7 steps (a batch of 20 would be 4)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 7
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(names) == 2 and names[0].startswith("epoch000-") and names[1] == "last.ckpt"
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    pids = {int(p.name.split(".")[-2]) for p in events}  # events.out.tfevents.<t>.<host>.<pid>.<n>
    assert len(pids) == 1  # one writing process
    # one set of CSV files (the hparams through the dashboard's sink), written by rank 0 only
    assert sorted(p.name for p in (run_dir / "csv").iterdir()) == ["hparams.yaml", "metrics.csv"]
    outcome = json.loads((run_dir / "metrics.json").read_text())
    assert outcome["status"] == "ok" and {outcome["pid"]} == pids


def test_only_rank_zero_records_the_outcome(tmp_path, monkeypatch):
    cfg = {"paths": {"output_dir": str(tmp_path)}}
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    train_module._record_outcome(OmegaConf.create(cfg), "ok", {}, {"started_at": 0.0}, 0.0)
    assert not (tmp_path / "metrics.json").exists()
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    train_module._record_outcome(OmegaConf.create(cfg), "ok", {}, {"started_at": 0.0}, 0.0)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"


@pytest.fixture
def multirun_config():
    """``compose(overrides)`` as a multirun job sees it (HydraConfig set, mode MULTIRUN)."""

    def make(overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", [*overrides, "hydra.mode=MULTIRUN"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield make
    HydraConfig.instance().cfg = None


def test_ddp_in_a_multirun_is_refused_naming_the_alternatives(multirun_config):
    with pytest.raises(ConfigError, match="trainer.strategy='ddp'") as error:
        validate_config(multirun_config(["trainer=ddp"]))
    for alternative in ("hydra/launcher=parallel", "ddp_spawn", "hydra/launcher=slurm"):
        assert alternative in str(error.value)
    validate_config(multirun_config(["trainer=ddp", "trainer.strategy=ddp_spawn"]))
    validate_config(multirun_config(["trainer=ddp", "trainer.devices=1"]))


def test_ddp_in_a_multirun_is_allowed_when_slurm_made_the_ranks(multirun_config, monkeypatch):
    slurm = {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "sweep", "SLURM_PROCID": "0"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    validate_config(multirun_config(["trainer=ddp"]))


@pytest.mark.slow  # the in-process test above checks the same refusal
def test_ddp_multirun_fails_at_once_through_the_cli(tmp_path):
    start = time.perf_counter()
    result = run_train_cli(
        "-m", "trainer=ddp", *TINY, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"
    )
    assert result.returncode != 0
    assert "re-running the command line" in result.stderr
    assert time.perf_counter() - start < 60
    for job in ("0", "1"):
        outcome = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        assert outcome["status"] == "failed" and "trainer.strategy" in outcome["reason"]
        assert not (tmp_path / "sweep" / job / "checkpoints").exists()
