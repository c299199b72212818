"""Where the dashboard goes: one sink per Lightning logger kind (TensorBoard, W&B, MLflow).

Scalars need nothing here: ``LightningModule.log`` sends them to every logger. Images, histograms,
text and the hparams are another matter: each logger kind stores them its own way, or not at all.
The dashboard callbacks (:mod:`spikelight.callbacks`) write them through :func:`media_sinks` and
:func:`dashboard_sinks`, which pick a :class:`DashboardSink` for each of ``trainer.loggers``:

- TensorBoard: native images, histograms, text and the HParams tab.
- W&B: ``wandb.Image``, ``wandb.Histogram`` and a one-cell ``wandb.Table`` in the run's history,
  at ``trainer/global_step`` (the x axis Lightning gives every W&B metric); hparams in its config.
- MLflow: images with their step (``log_image(key=, step=)``, MLflow's image view), histograms
  and text as artifacts ``<tag>/step_<step>.json`` / ``.txt``; hparams as the run's params.
- Any other logger (CSV): the hparams only, through ``log_hyperparams``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

#: logger class (``_target_``'s last part) -> (the module it imports, the spikelight extra)
LOGGER_PACKAGES = {"WandbLogger": ("wandb", "wandb"), "MLFlowLogger": ("mlflow", "mlflow")}
#: equal-width bins of a histogram a logger stores as counts (W&B, MLflow); TensorBoard bins its own
HISTOGRAM_BINS = 64

HParams = Mapping[str, str | float | int | bool]


class DashboardSink(Protocol):
    """What the dashboard callbacks write; ``image`` is ``[3, H, W]`` in [0, 1] (``images.py``)."""

    takes_media: bool  # False: add_image/add_histogram/add_text store nothing

    def add_image(self, tag: str, image: torch.Tensor, step: int) -> None: ...

    def add_histogram(self, tag: str, values: torch.Tensor, step: int) -> None: ...

    def add_text(self, tag: str, text: str, step: int) -> None: ...

    def add_hparams(self, hparams: HParams, metrics: Sequence[str]) -> None: ...


def image_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` floats in [0, 1] -> ``[H, W, 3]`` uint8: the same pixels for every logger."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image [3, H, W], got shape {tuple(image.shape)}")
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).numpy()


def histogram_counts(values: torch.Tensor) -> dict[str, float | int | list]:
    """``values`` as HISTOGRAM_BINS equal-width counts over [min, max], with their moments."""
    array = values.detach().double().cpu().flatten().numpy()
    counts, edges = np.histogram(array, bins=HISTOGRAM_BINS)
    return {
        "num": int(array.size),
        "min": float(array.min()),
        "max": float(array.max()),
        "mean": float(array.mean()),
        "std": float(array.std()),
        "edges": edges.tolist(),
        "counts": counts.tolist(),
    }


class LoggerSink:
    """Any logger: the hparams through its ``log_hyperparams`` (CSV: ``hparams.yaml``); no media."""

    takes_media = False

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def add_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        pass

    def add_histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        pass

    def add_text(self, tag: str, text: str, step: int) -> None:
        pass

    def add_hparams(self, hparams: HParams, metrics: Sequence[str]) -> None:
        self.logger.log_hyperparams(dict(hparams))


class TensorBoardSink(LoggerSink):
    """TensorBoard's ``SummaryWriter``; the hparams also fill its HParams tab (``metrics``)."""

    takes_media = True

    def add_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        self.logger.experiment.add_image(tag, image_uint8(image), step, dataformats="HWC")

    def add_histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        self.logger.experiment.add_histogram(tag, values.detach().cpu(), step)

    def add_text(self, tag: str, text: str, step: int) -> None:
        self.logger.experiment.add_text(tag, text, step)

    def add_hparams(self, hparams: HParams, metrics: Sequence[str]) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        super().add_hparams(hparams, metrics)  # hparams.yaml; no metric, no plugin data
        summaries = hparams_summary(dict(hparams), dict.fromkeys(metrics, 0.0))
        writer = self.logger.experiment._get_file_writer()
        for summary in summaries:
            writer.add_summary(summary)
        writer.flush()


class WandbSink(LoggerSink):
    """W&B media objects in the run's history; W&B's run table shows config against summary."""

    takes_media = True

    def _log(self, tag: str, value, step: int) -> None:
        self.logger.log_metrics({tag: value}, step=step)  # adds trainer/global_step

    def add_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        import wandb

        self._log(tag, wandb.Image(image_uint8(image)), step)

    def add_histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        import wandb

        counts = histogram_counts(values)
        self._log(tag, wandb.Histogram(np_histogram=(counts["counts"], counts["edges"])), step)

    def add_text(self, tag: str, text: str, step: int) -> None:
        import wandb

        self._log(tag, wandb.Table(columns=["text"], data=[[text]]), step)


class MLflowSink(LoggerSink):
    """MLflow has no histogram or text view: those become artifacts, one file per tag and step."""

    takes_media = True

    def __init__(self, logger: MLFlowLogger) -> None:
        super().__init__(logger)
        self.client, self.run_id = logger.experiment, logger.run_id

    def add_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        self.client.log_image(self.run_id, image_uint8(image), key=tag, step=step)

    def add_histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        record = {"step": int(step), **histogram_counts(values)}
        self.client.log_dict(self.run_id, record, f"{tag}/step_{step:06d}.json")

    def add_text(self, tag: str, text: str, step: int) -> None:
        self.client.log_text(self.run_id, text, f"{tag}/step_{step:06d}.txt")


#: (logger class, its sink), first match wins; a logger of none of these gets a LoggerSink
SINK_KINDS: tuple[tuple[type[Logger], type[LoggerSink]], ...] = (
    (TensorBoardLogger, TensorBoardSink),
    (WandbLogger, WandbSink),
    (MLFlowLogger, MLflowSink),
)


def sink_for(logger: Logger) -> DashboardSink:
    """The sink of ``logger``'s kind."""
    for kind, sink in SINK_KINDS:
        if isinstance(logger, kind):
            return sink(logger)
    return LoggerSink(logger)


def dashboard_sinks(trainer) -> list[DashboardSink]:
    """One sink per logger of ``trainer`` (none for ``logger=False``): where the hparams go."""
    return [sink_for(logger) for logger in trainer.loggers]


def media_sinks(trainer) -> list[DashboardSink]:
    """The sinks that store images, histograms and text; empty: a callback can skip its work."""
    return [sink for sink in dashboard_sinks(trainer) if sink.takes_media]


@contextmanager
def finishing_runs(loggers: Iterable[Logger]) -> Iterator[None]:
    """Finish the W&B run at the end of the block (exit code 1 if it raised).

    Lightning leaves a W&B run open until the process exits; finishing it when :func:`train`
    returns completes the offline run directory and lets a next run in the same process (a test,
    a notebook) start its own run instead of reusing this one.
    """
    uses_wandb = any(isinstance(logger, WandbLogger) for logger in loggers)
    try:
        yield
    except BaseException:
        _finish_wandb(uses_wandb, exit_code=1)
        raise
    _finish_wandb(uses_wandb, exit_code=0)


def _finish_wandb(uses_wandb: bool, exit_code: int) -> None:
    if not uses_wandb:
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)
    wandb.teardown()  # finish() returns before the service has written the run's last records
