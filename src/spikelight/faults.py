"""Training faults: stop clearly on a non-finite loss, checkpoint when interrupted.

Both are callbacks that :func:`spikelight.train.train` always adds, so every run gets them
whatever ``callbacks=`` selects.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss or a gradient became NaN/inf; the weights were left as they were before it."""


class FiniteLossGuard(L.Callback):
    """Stop before a NaN/inf loss or gradient reaches the weights, naming the global step.

    Checked before the backward pass (loss) and before the optimiser step (gradients), so the
    model and every checkpoint written so far stay finite.
    """

    def on_before_backward(self, trainer: L.Trainer, pl_module, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            self._stop(trainer, f"train/loss is {loss.detach().float().mean().item()}")

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module, optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # fp16 loss scaling: inf gradients are expected, the scaler skips the step
        norms = [
            torch.linalg.vector_norm(p.grad.detach())
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if norms and not torch.isfinite(torch.stack(norms)).all():
            self._stop(trainer, "a gradient is not finite")

    @staticmethod
    def _stop(trainer: L.Trainer, what: str) -> None:
        last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none written yet"
        raise NonFiniteLossError(
            f"{what} at global step {trainer.global_step} (epoch {trainer.current_epoch}); "
            f"training stopped before updating the weights. Last checkpoint: {last}. "
            "Try a smaller model.optimizer.lr (or model.neuron_lr), a larger weight_init.xi "
            "(weight_init=scaled: a smaller weight_init.scale), or a flatter surrogate "
            "(smaller surrogate.beta)."
        )


class CheckpointOnInterrupt(L.Callback):
    """On SIGTERM (cluster pre-emption, ``kill``) or Ctrl+C during fit, save ``last.ckpt``.

    Lightning turns SIGTERM into a :class:`SIGTERMException` at the next batch boundary and
    Ctrl+C into ``KeyboardInterrupt``; both reach ``on_exception``. The file goes next to the
    other checkpoints, so ``ckpt_path=.../last.ckpt`` resumes the run.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last.ckpt") -> None:
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.saved_path: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return
        if trainer.state.fn != "fit":
            return
        path = Path(getattr(trainer.checkpoint_callback, "dirpath", None) or self.dirpath)
        path = path / self.filename
        trainer.save_checkpoint(path)
        self.saved_path = path
        log.warning("%s: saved %s (resume with ckpt_path=%s)", type(exception).__name__, path, path)
