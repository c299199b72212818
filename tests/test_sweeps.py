"""Sweeps: parallel multirun with failing jobs, Optuna, launcher presets, the sweep summary."""

from __future__ import annotations

import csv
import importlib
import json
import sys

import optuna
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode

from spikelight.train import CONFIG_DIR
from tests.conftest import REPO_ROOT, run_train_cli

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import summarize_sweep  # noqa: E402

QUICK = [
    "debug=limit",
    "trainer.accelerator=cpu",
    "data.samples_per_class=20",
    "data.num_steps=20",
    "logger=csv",
    "callbacks.progress_bar.refresh_rate=0",
]


#: the stored readout weights (rows in units of their initial scale: weight_init.relative_lr)
READOUT_WEIGHT = "network.readout_fc.parametrizations.weight.original"


def outcome(job_dir):
    return json.loads((job_dir / "metrics.json").read_text())


def summarize(sweep, *args):
    """``scripts/summarize_sweep.py SWEEP`` in-process: (exit status, stdout)."""
    return summarize_sweep.main([str(sweep), *args])


def test_parallel_list_sweep_runs_every_job_and_reports_the_diverged_ones(tmp_path, capsys):
    """Four jobs, two at a time in two worker processes; the two with huge weights diverge."""
    sweep = tmp_path / "sweep"
    result = run_train_cli(
        "-m",
        "hydra/launcher=parallel",
        *QUICK,
        "trainable=[weights],[weights,tau_mem,tau_syn]",
        "weight_init=scaled",
        "weight_init.scale=7,1e38",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 1  # the sweep's status shows the failures
    assert "summarize_sweep.py" in result.stderr
    jobs = [outcome(sweep / str(n)) for n in range(4)]
    assert [j["status"] for j in jobs] == ["ok", "failed", "ok", "failed"]
    assert all("NonFiniteLossError" in jobs[n]["reason"] for n in (1, 3))
    assert jobs[0]["pid"] != jobs[1]["pid"]  # the first two jobs ran in two workers at once
    assert {j["device"] for j in jobs if j["status"] == "ok"} == {"cpu"}  # no GPU: the CPU
    for n in (0, 2):
        config = yaml.safe_load((sweep / str(n) / "config.yaml").read_text())
        trained = {name for name, on in config["trainable"].items() if on}
        assert trained == [{"weights"}, {"weights", "tau_mem", "tau_syn"}][n // 2]
        assert (sweep / str(n) / "checkpoints" / "last.ckpt").is_file()
        assert (sweep / str(n) / "csv" / "metrics.csv").is_file()

    assert summarize(sweep, "--x", "trainable") == 0
    table = capsys.readouterr().out
    assert "| 1 | [weights] | 1e+38 |  |  | failed: NonFiniteLossError: train/loss is" in table
    best = jobs[2]["metrics"]["val/acc_best"]
    assert f"| 2 | [weights,tau_mem,tau_syn] | 7 | {best:.4f}" in table
    assert "Jobs: 2 failed, 2 ok" in table
    assert (sweep / "summary.png").stat().st_size > 0


def random_draws(trials, order, seed=0):
    """The parameters Optuna's random sampler (seeded as the study's TPE sampler seeds its own)
    draws for ``trials`` when asked for their distributions in the sweeper's ``order``: what
    each trial would have had if TPE had never taken over from its random start-up trials."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    draws = []
    for trial in trials:
        replay = study.ask({name: trial.distributions[name] for name in order})
        draws.append(replay.params)
        study.tell(replay, trial.values[0] if trial.values else None, state=trial.state)
    return draws


def test_optuna_search_goes_on_past_diverged_trials_and_maximises_the_metric(tmp_path):
    """Five trials, TPE after the first completed one; the search space also draws
    weight_init.scale 7 or 1e38 (a sure divergence). The study is kept in a database, to be read
    back."""
    sweep = tmp_path / "sweep"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = [
        "hparams_search=optuna",
        "weight_init=scaled",
        '+hydra.sweeper.params={weight_init.scale:"choice(7.0,1e38)"}',
    ]
    result = run_train_cli(
        *search,
        *QUICK,
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.sampler.n_startup_trials=1",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={sweep}",
    )
    trials = [outcome(sweep / str(n)) for n in range(5)]
    assert not (sweep / "5").exists()
    scales = [
        float(summarize_sweep.parse_overrides(t["overrides"])["weight_init.scale"]) for t in trials
    ]
    for trial, scale in zip(trials, scales, strict=True):
        assert trial["status"] == ("ok" if scale == 7.0 else "failed")
        if scale != 7.0:
            assert trial["reason"].startswith("NonFiniteLossError")
    assert 0 < scales.count(7.0) < 5  # with sampler seed 0: both kinds of trial
    assert result.returncode == 1  # the study finished, and says that trials failed
    assert "jobs did not finish" in result.stderr

    # TPE counts only completed trials: until one has completed, the random sampler draws
    # (the same values a plain random sampler gives); after that TPE does (other values)
    study = optuna.load_study(study_name="train", storage=storage)
    stored = study.get_trials()
    assert [t.number for t in stored] == list(range(5))
    assert [t.state.name for t in stored] == [
        "COMPLETE" if t["status"] == "ok" else "FAIL" for t in trials
    ]
    for trial, job in zip(stored, trials, strict=True):  # the study holds what the jobs ran
        ran = summarize_sweep.parse_overrides(job["overrides"])
        assert {k: float(ran[k]) for k in trial.params} == pytest.approx(trial.params)
    completed_before = [sum(t["status"] == "ok" for t in trials[:n]) for n in range(5)]
    by_tpe = [n >= 1 for n in completed_before]
    assert any(by_tpe) and not all(by_tpe)
    order = list(hydra_config(search).sweeper.params)  # the order the sweeper asks in
    assert len(order) == 5
    for trial, draw, tpe in zip(stored, random_draws(stored, order), by_tpe, strict=True):
        if tpe:
            assert trial.params != draw, trial.number
        else:
            assert trial.params == draw, trial.number

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    done = [t for t in trials if t["status"] == "ok"]
    values = [t["metrics"]["val/acc_best"] for t in done]
    assert results["best_value"] == pytest.approx(max(values))  # what train.py returned
    best = summarize_sweep.parse_overrides(done[values.index(max(values))]["overrides"])
    assert set(results["best_params"]) == {
        "model.optimizer.lr",
        "surrogate.beta",
        "neuron.tau_mem",
        "neuron.tau_syn",
        "weight_init.scale",
    }
    for name, value in results["best_params"].items():
        assert float(best[name]) == pytest.approx(value)
    assert 1e-4 <= results["best_params"]["model.optimizer.lr"] <= 3e-2


def hydra_config(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides, return_hydra_config=True).hydra


def import_target(target):
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def test_launcher_and_search_presets_compose_to_installed_plugins():
    parallel = hydra_config(["hydra/launcher=parallel"]).launcher
    assert import_target(parallel._target_).__name__ == "JoblibLauncher"
    assert parallel.n_jobs == 2
    slurm = hydra_config(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]).launcher
    assert import_target(slurm._target_).__name__ == "SlurmLauncher"
    assert (slurm.gpus_per_node, slurm.tasks_per_node, slurm.partition) == (1, 1, "gpu")
    assert slurm.max_num_timeout > 0  # time-outs requeue (and ckpt_path=last resumes)
    optuna = hydra_config(["hparams_search=optuna"])
    assert import_target(optuna.sweeper._target_).__name__ == "OptunaSweeper"
    assert optuna.mode == RunMode.MULTIRUN
    assert optuna.sweeper.direction == "maximize"
    assert optuna.sweeper.max_failure_rate == 1.0  # a diverged trial does not end the study


def write_job(sweep, num, overrides, status="ok", metrics=None, reason=None):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    record = {"status": status, "reason": reason, "metrics": metrics or {}, "overrides": overrides}
    (job / "metrics.json").write_text(json.dumps(record))


def test_summary_table_csv_and_seed_statistics(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fixed = ["debug=limit"]
    accuracy = {
        ("superspike", "1", "0"): 0.5,
        ("superspike", "1", "1"): 0.7,
        ("superspike", "10", "0"): 0.9,
        ("superspike", "10", "1"): 0.8,
        ("logistic", "1", "0"): 0.4,
        ("logistic", "10", "0"): 0.6,
    }
    for num, ((surrogate, beta, seed), acc) in enumerate(accuracy.items()):
        overrides = [*fixed, f"surrogate={surrogate}", f"surrogate.beta={beta}", f"seed={seed}"]
        write_job(sweep, num, overrides, metrics={"test/acc": acc, "val/acc_best": acc + 0.01})
    write_job(
        sweep,
        6,
        [*fixed, "surrogate=logistic", "surrogate.beta=10", "seed=1"],
        status="failed",
        reason="NonFiniteLossError: train/loss is nan at global step 3",
    )
    (sweep / "7" / ".hydra").mkdir(parents=True)  # killed before it recorded anything
    (sweep / "7" / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([*fixed, "surrogate=logistic", "surrogate.beta=1", "seed=1"])
    )

    assert summarize(sweep) == 0
    out = capsys.readouterr().out
    assert "Fixed overrides: debug=limit" in out
    assert "| job | surrogate | surrogate.beta | seed | val/acc_best | test/acc | status |" in out
    assert "| 3 | superspike | 10 | 1 | 0.8100 | 0.8000 | ok |" in out
    assert "| 6 | logistic | 10 | 1 |  |  | failed: NonFiniteLossError: train/loss is nan" in out
    assert "| 7 | logistic | 1 | 1 |  |  | incomplete: no metrics.json" in out
    assert "Jobs: 1 failed, 1 incomplete, 6 ok" in out

    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok"] * 6 + ["failed", "incomplete"]
    assert float(rows[1]["test/acc"]) == 0.7 and rows[1]["seed"] == "1"
    assert rows[6]["reason"].startswith("NonFiniteLossError")
    assert (sweep / "summary.png").stat().st_size > 0

    jobs = [summarize_sweep.read_job(sweep, d) for d in summarize_sweep.find_job_dirs(sweep)]
    points = summarize_sweep.aggregate(jobs, "surrogate.beta", "test/acc", ["surrogate"])
    (x1, mean1, std1, n1), (x10, mean10, std10, n10) = points[("superspike",)]
    assert (x1, n1, x10, n10) == ("1", 2, "10", 2)
    assert mean1 == pytest.approx(0.6) and std1 == pytest.approx(0.1414213562)
    assert mean10 == pytest.approx(0.85) and std10 == pytest.approx(0.0707106781)
    assert points[("logistic",)] == [("1", 0.4, 0.0, 1), ("10", 0.6, 0.0, 1)]  # failed: left out


def test_summary_of_a_directory_without_jobs_fails_clearly(tmp_path, capsys):
    assert summarize(tmp_path) == 2
    assert "expected job directories" in capsys.readouterr().err


def last_step(job_dir):
    last = job_dir / "checkpoints" / "last.ckpt"
    return torch.load(last, map_location="cpu", weights_only=True)["global_step"]


def trained_epochs(job_dir):
    """Epochs with a training loss in the job's csv/metrics.csv (rewritten by each run of the
    job): a resumed run trains only the epochs after its checkpoint, a fresh one epoch 0 too."""
    rows = csv.DictReader((job_dir / "csv" / "metrics.csv").open())
    return {int(row["epoch"]) for row in rows if row["train/loss_epoch"]}


def test_ckpt_path_last_in_a_multirun_resumes_each_job_from_its_own_checkpoint(tmp_path):
    """The same two-job sweep run again (longer) with ckpt_path=last: each job continues from
    its own checkpoints/last.ckpt, whose weights differ between the jobs (seeds 0 and 1)."""
    sweep = tmp_path / "sweep"
    common = ["-m", *QUICK, "seed=0,1", "ckpt_path=last", f"hydra.sweep.dir={sweep}"]
    first = run_train_cli(*common, "trainer.max_epochs=1", "test=false")
    assert first.returncode == 0, first.stderr[-3000:]
    saved = {
        job: torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)
        for job in ("0", "1")
    }
    assert not torch.equal(
        saved["0"]["state_dict"][READOUT_WEIGHT],
        saved["1"]["state_dict"][READOUT_WEIGHT],
    )
    second = run_train_cli(*common, "trainer.max_epochs=2", "test=false")
    assert second.returncode == 0, second.stderr[-3000:]
    for job in ("0", "1"):
        log = (sweep / job / "train.log").read_text()
        afresh = log.index("ckpt_path=last: no last.ckpt yet, starting afresh")
        resumed = log.index(f"ckpt_path=last: {sweep / job / 'checkpoints' / 'last.ckpt'}\n")
        assert afresh < resumed and log.count("ckpt_path=last:") == 2
        assert saved[job]["global_step"] == 1 and last_step(sweep / job) == 2
        assert trained_epochs(sweep / job) == {1}  # the second run trained epoch 1 only


def test_a_requeued_job_under_submitit_resumes_from_its_last_checkpoint(tmp_path):
    """What a SLURM requeue does: the job runs again in its own directory. Here a one-job
    sweep stops after one epoch; rerun with submitit's local executor (its own process, like a
    SLURM job), ckpt_path=last continues it from checkpoints/last.ckpt."""
    sweep = tmp_path / "sweep"
    common = ["-m", *QUICK, "seed=3", "ckpt_path=last", "test=false", f"hydra.sweep.dir={sweep}"]
    first = run_train_cli(*common, "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert last_step(sweep / "0") == 1
    requeued = run_train_cli(*common, "hydra/launcher=submitit_local", "trainer.max_epochs=2")
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert any((sweep / ".submitit").iterdir())  # submitit ran the job
    log = (sweep / "0" / "train.log").read_text()
    assert f"ckpt_path=last: {sweep / '0' / 'checkpoints' / 'last.ckpt'}" in log
    assert last_step(sweep / "0") == 2
    assert trained_epochs(sweep / "0") == {1}  # the requeued run trained epoch 1 only


@pytest.mark.slow
def test_a_rerun_job_resumes_from_its_own_last_checkpoint_under_submitit(tmp_path):
    """What a SLURM requeue does, with submitit's local executor: the same job directory again.

    The first sweep stops after one epoch; the second, with ckpt_path=last, continues each job
    from its own checkpoints/last.ckpt instead of starting over.
    """
    sweep = tmp_path / "sweep"
    common = ["-m", "hydra/launcher=submitit_local", *QUICK, "seed=0,1", "ckpt_path=last"]
    for epochs in (1, 2):
        result = run_train_cli(*common, f"trainer.max_epochs={epochs}", f"hydra.sweep.dir={sweep}")
        assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        log = (sweep / job / "train.log").read_text()
        assert "ckpt_path=last: no last.ckpt yet, starting afresh" in log
        assert f"ckpt_path=last: {sweep / job / 'checkpoints' / 'last.ckpt'}" in log
        last = sweep / job / "checkpoints" / "last.ckpt"
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
        assert checkpoint["global_step"] == 2  # two epochs of one batch
        assert trained_epochs(sweep / job) == {1}  # the rerun trained epoch 1 only
