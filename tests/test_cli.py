"""`python train.py` in a subprocess: single runs, multiruns and checkpoint evaluation."""

import yaml

from tests.conftest import run_train_cli

QUICK = ["debug=limit", "trainer.accelerator=cpu", "data.samples_per_class=20", "data.num_steps=20"]


def run_cli(*args):
    result = run_train_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_single_run_writes_config_checkpoints_and_events_then_tests_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    run_cli(*QUICK, "neuron=lif", "surrogate=superspike", f"hydra.run.dir={run_dir}")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["surrogate"]["_target_"] == "spikelight.surrogates.SuperSpike"
    assert config["model"]["network"]["num_inputs"] == 100  # interpolations resolved
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert len(list((run_dir / "checkpoints").glob("epoch*.ckpt"))) == 1  # best by val/acc
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    eval_dir = tmp_path / "eval"
    result = run_cli(*QUICK, "train=false", f"ckpt_path={last}", f"hydra.run.dir={eval_dir}")
    assert "test/acc" in result.stdout
    assert not (eval_dir / "checkpoints").exists()


def test_multirun_over_two_surrogates_writes_two_job_directories(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("-m", *QUICK, "surrogate=superspike,logistic", f"hydra.sweep.dir={sweep}")
    targets = []
    for job in ("0", "1"):
        config = yaml.safe_load((sweep / job / "config.yaml").read_text())
        targets.append(config["surrogate"]["_target_"])
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents.*"))
    assert targets == ["spikelight.surrogates.SuperSpike", "spikelight.surrogates.Logistic"]
