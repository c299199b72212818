"""Training entry point: compose the config, build everything from it, fit, test.

``python train.py neuron=lif surrogate=superspike`` runs :func:`main`; tests and notebooks call
:func:`train` with a composed config.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from spikelight.checkpoint_io import AtomicCheckpointIO
from spikelight.faults import CheckpointOnInterrupt, FiniteLossGuard, NonFiniteLossError
from spikelight.resolvers import register_resolvers
from spikelight.validation import validate_checkpoint, validate_config

register_resolvers()  # before any config is resolved
log = logging.getLogger(__name__)

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def _instantiate_all(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, loggers)."""
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if c and "_target_" in c]


def train(cfg: DictConfig) -> dict[str, float]:
    """Seed, build datamodule, model, callbacks, loggers and trainer from ``cfg``; fit; test.

    Returns the final metrics (``val/acc_best``, ``test/acc``, ...) as floats.
    """
    validate_config(cfg)  # before anything is built or written
    L.seed_everything(cfg.seed, workers=True)
    log.info("Building datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    log.info("Building model <%s>", cfg.model._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    if cfg.ckpt_path is not None:
        validate_checkpoint(cfg.ckpt_path, model)
    output_dir = Path(cfg.paths.output_dir)  # written only once the inputs are known good
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    safety = [FiniteLossGuard(), CheckpointOnInterrupt(output_dir / "checkpoints")]
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=_instantiate_all(cfg.get("callbacks")) + safety,
        logger=_instantiate_all(cfg.get("logger")) or False,
        plugins=[AtomicCheckpointIO()],
    )

    metrics: dict[str, float] = {}
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
            raise JobFailed(message) from None
        print(message, file=sys.stderr)
        print("(set HYDRA_FULL_ERROR=1 to see the traceback)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """CLI entry: train and return ``cfg.optimized_metric`` (for hyper-parameter sweepers)."""
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
