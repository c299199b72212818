"""Training entry point: compose the config, build everything from it, fit, test.

``python train.py neuron=lif surrogate=superspike`` runs :func:`main`; tests and notebooks call
:func:`train` with a composed config.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from spikelight.atomic import atomic_output
from spikelight.checkpoint_io import AtomicCheckpointIO, validate_checkpoint
from spikelight.configs import CONFIG_PATH, PRIMARY_CONFIG, config_dir
from spikelight.cost import size_report
from spikelight.devices import claim_device, claims_gpu
from spikelight.extras import missing_extra
from spikelight.faults import CheckpointOnInterrupt, FiniteLossGuard, NonFiniteLossError
from spikelight.loggers import finishing_runs
from spikelight.network import SpikingNetwork
from spikelight.validation import validate_config

log = logging.getLogger(__name__)

CONFIG_DIR = str(config_dir())  # for initialize_config_dir (tests, scripts)


def _instantiate_all(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, loggers)."""
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if c and "_target_" in c]


#: Per-run outcome record, read by scripts/summarize_sweep.py (a failed job has no metrics).
OUTCOME_FILE = "metrics.json"


def train(cfg: DictConfig) -> dict[str, float]:
    """Seed, build datamodule, model, callbacks, loggers and trainer from ``cfg``; fit; test.

    Returns the final metrics (``val/acc_best``, ``test/acc``, ...) as floats. The outcome
    (``ok`` with the metrics, or ``failed``/``interrupted`` with the reason) is also written to
    ``<run dir>/metrics.json`` whenever the run directory exists, so a sweep summary lists every
    job, failed ones included.
    """
    run = {"started_at": round(time.time(), 3)}
    start = time.monotonic()
    try:
        metrics = _train(resolve_ckpt_path(cfg), run)
    except BaseException as error:
        interrupted = isinstance(error, KeyboardInterrupt | SIGTERMException)
        run["reason"] = f"{type(error).__name__}: {error}".strip().rstrip(":")
        _record_outcome(cfg, "interrupted" if interrupted else "failed", {}, run, start)
        raise
    _record_outcome(cfg, "ok", metrics, run, start)
    return metrics


def resolve_ckpt_path(cfg: DictConfig) -> DictConfig:
    """``ckpt_path=last``: this run's own ``checkpoints/last.ckpt`` (a copy of ``cfg`` says so).

    When training and no such file exists yet the run starts from scratch, so one command both
    starts a job and resumes it after an interruption or a SLURM requeue (the run directory, and
    so the file, is the same each time).
    """
    if cfg.get("ckpt_path") != "last":
        return cfg
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    resolved = cfg.copy()
    with open_dict(resolved):
        resolved.ckpt_path = str(last) if last.is_file() or not cfg.train else None
    log.info("ckpt_path=last: %s", resolved.ckpt_path or "no last.ckpt yet, starting afresh")
    return resolved


def _record_outcome(
    cfg: DictConfig, status: str, metrics: dict[str, float], run: dict, start: float
) -> None:
    """Write ``metrics.json`` atomically (rank zero only) if the run directory exists.

    A config that fails validation in a single run leaves no directory, so nothing is written;
    a multirun job's directory exists already (Hydra made it), so its failure is recorded.
    """
    if rank_zero_only.rank != 0:
        return
    try:
        output_dir = Path(cfg.paths.output_dir)
    except Exception:  # an unresolvable output_dir: nowhere to record
        return
    if not output_dir.is_dir():
        return
    record = {
        "status": status,
        "reason": run.get("reason"),
        "metrics": {k: (v if math.isfinite(v) else None) for k, v in sorted(metrics.items())},
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "device": run.get("device"),
        "cost": run.get("cost"),  # neurons and synapses per layer (spikelight.cost)
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": run["started_at"],
        "seconds": round(time.monotonic() - start, 3),
    }
    with atomic_output(output_dir / OUTCOME_FILE) as handle:
        handle.write((json.dumps(record, indent=2) + "\n").encode())


@contextmanager
def _claimed_device(cfg: DictConfig) -> Iterator[dict]:
    """Trainer settings for a run that claims a GPU (:mod:`spikelight.devices`); else ``{}``."""
    if not claims_gpu(cfg):
        yield {}
        return
    with claim_device(torch.cuda.device_count()) as index:
        if index is None:
            log.info("claim_gpu: no GPU visible, running on the CPU")
            yield {"accelerator": "cpu", "devices": 1}
        else:
            yield {"accelerator": "gpu", "devices": [index]}


def _train(cfg: DictConfig, run: dict) -> dict[str, float]:
    validate_config(cfg)  # before anything is built or written
    with _claimed_device(cfg) as device:
        return _fit_and_test(cfg, device, run)


def _fit_and_test(cfg: DictConfig, device: dict, run: dict) -> dict[str, float]:
    L.seed_everything(cfg.seed, workers=True)
    log.info("Building datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    log.info("Building model <%s>", cfg.model._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    if isinstance(getattr(model, "network", None), SpikingNetwork):
        run["cost"] = size_report(model.network)
    if cfg.ckpt_path is not None:
        validate_checkpoint(cfg.ckpt_path, model)
    output_dir = Path(cfg.paths.output_dir)  # written only once the inputs are known good
    output_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # DDP: ranks > 0 run this function too
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    safety = [FiniteLossGuard(), CheckpointOnInterrupt(output_dir / "checkpoints")]
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=_instantiate_all(cfg.get("callbacks")) + safety,
        logger=_instantiate_all(cfg.get("logger")) or False,
        plugins=[AtomicCheckpointIO()],
        **device,
    )
    run["device"] = str(trainer.strategy.root_device)

    metrics: dict[str, float] = {}
    with finishing_runs(trainer.loggers):
        if cfg.train:
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
            metrics.update(_floats(trainer.callback_metrics))
        if cfg.test:
            if cfg.train:
                best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
                ckpt = best if best and not trainer.fast_dev_run else None
            else:
                ckpt = cfg.ckpt_path
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
            metrics.update(_floats(trainer.callback_metrics))
    log.info("Final metrics: %s", metrics)
    return metrics


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.as_tensor(v).numel() == 1}


#: Errors of the user's input or run (not bugs): the CLI prints their message, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, NonFiniteLossError)
EXIT_USER_ERROR = 2
EXIT_SIGTERM = 128 + 15


class JobFailed(CompactHydraException):
    """One job of a multirun failed; Hydra runs the others, then prints only this message."""


class ReportFailedJobs(Callback):
    """Hydra callback: after a sweep that carries on past failed jobs (Optuna), exit with 1.

    The basic and parallel launchers already end a sweep that had a failed job with status 1;
    the Optuna sweeper (``max_failure_rate: 1.0``) marks failed trials and finishes the study.
    This reads every job's ``metrics.json`` at the end and, if any job did not end ``ok``, says
    which and exits with status 1 (``SystemExit``: Hydra turns callback exceptions into warnings).
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        outcomes = {
            path.parent.name: json.loads(path.read_text()).get("status")
            for path in sorted(sweep_dir.glob(f"*/{OUTCOME_FILE}"))
        }
        failed = [job for job, status in outcomes.items() if status != "ok"]
        if failed:
            print(
                f"Error: {len(failed)} of {len(outcomes)} jobs did not finish (jobs "
                f"{', '.join(failed)}); every job's outcome: "
                f"python scripts/summarize_sweep.py {sweep_dir}",
                file=sys.stderr,
            )
            sys.exit(1)


def _train_or_exit(cfg: DictConfig) -> dict[str, float]:
    """``train(cfg)``; user errors become a one-paragraph message on stderr and an exit code.

    A single run exits with status 2 (143 after SIGTERM). In a multirun the failing job raises
    :class:`JobFailed`, so Hydra still runs the other jobs and exits non-zero at the end.
    ``HYDRA_FULL_ERROR=1`` re-raises the original exception with its traceback.
    """
    try:
        return train(cfg)
    except SIGTERMException:
        print(
            "Error: stopped by SIGTERM; last.ckpt was saved with the run's checkpoints "
            "(resume with ckpt_path=<run dir>/checkpoints/last.ckpt)",
            file=sys.stderr,
        )
        sys.exit(EXIT_SIGTERM)
    except USER_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = f"Error: {error}"
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if multirun:
            job = HydraConfig.get().job
            message = f"Error in job {job.num} ({job.override_dirname}): {error}"
            print(message, file=sys.stderr)
            sweep_dir = HydraConfig.get().sweep.dir
            raise JobFailed(
                f"{message}\nThe other jobs ran; every job's outcome: "
                f"python scripts/summarize_sweep.py {sweep_dir}"
            ) from None
        print(message, file=sys.stderr)
        print("(set HYDRA_FULL_ERROR=1 to see the traceback)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def main() -> None:
    """``spikelight-train`` and ``python train.py``: a missing extra fails first, then Hydra runs.

    Hydra composes ``pkg://spikelight.conf`` (:mod:`spikelight.configs`) with the command line.
    """
    missing = missing_extra(sys.argv[1:])
    if missing:
        print(f"Error: {missing}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    _hydra_main()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=PRIMARY_CONFIG)
def _hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task: train and return ``cfg.optimized_metric`` (for hyper-parameter sweepers)."""
    metrics = _train_or_exit(cfg)
    name = cfg.get("optimized_metric")
    if not name or not cfg.train:  # evaluation-only runs optimise nothing
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; logged: {sorted(metrics)}")
    value = metrics[name]
    return value if math.isfinite(value) else float("nan")


if __name__ == "__main__":
    main()
