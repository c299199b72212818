"""Training entry point: compose the config, build everything from it, fit, test.

``python train.py neuron=lif surrogate=superspike`` runs :func:`main`; tests and notebooks call
:func:`train` with a composed config.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from spikelight.resolvers import register_resolvers

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
    if not cfg.train and not cfg.test:
        raise ValueError("nothing to do: train=false and test=false")
    if not cfg.train and cfg.ckpt_path is None:
        raise ValueError("train=false needs ckpt_path=PATH of a checkpoint to test")
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path!r} is not a file")

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    L.seed_everything(cfg.seed, workers=True)
    log.info("Building datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    log.info("Building model <%s>", cfg.model._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=_instantiate_all(cfg.get("callbacks")),
        logger=_instantiate_all(cfg.get("logger")) or False,
    )

    metrics: dict[str, float] = {}
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """CLI entry: train and return ``cfg.optimized_metric`` (for hyper-parameter sweepers)."""
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    if not name or not cfg.train:  # evaluation-only runs optimise nothing
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; logged: {sorted(metrics)}")
    value = metrics[name]
    return value if math.isfinite(value) else float("nan")


if __name__ == "__main__":
    main()
