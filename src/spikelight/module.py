"""LightningModule that trains a :class:`~spikelight.network.SpikingNetwork` as a classifier.

It owns what the plain network does not: the loss (cross-entropy on decoded scores, against soft
targets where augmentation mixed a training batch, plus optional firing-rate regularisers),
metrics, logging, and the optimiser with one parameter group per kind of trainable parameter
(``weights``, ``delays``, each neuron parameter, ``surrogate_beta``), so neuron parameters and
synaptic delays can have their own learning rate and each group shows up in the LR monitor.
With synaptic delays (:mod:`spikelight.delays`) it also sets the delay kernels' width at the
start of each training epoch and clamps the delays into range after each optimiser step.

Besides loss and accuracy it logs, per stage and layer, the firing rate, the silent fraction and
the synaptic operations per sample, and the energy estimate of the spiking network against the
same network as a dense ANN (:mod:`spikelight.cost`).

Model selection uses ``val/acc`` only. When the data module evaluates its test split every
epoch as well (``data.test_every_epoch``), that accuracy is logged as ``test_epoch/acc`` and its
maximum as ``test_epoch/acc_best``: the best-epoch-on-test figure papers often report, never
used for selection, and named apart from ``test/acc`` (the selected checkpoint's test accuracy).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from spikelight import checks
from spikelight.cost import ann_energy_nj, is_analog, snn_energy_nj, synops
from spikelight.network import NetworkOutput, SpikingNetwork

log = logging.getLogger(__name__)

#: epoch-level logging that keeps a metric's name when validation has a second (test) loader
_EPOCH = dict(on_step=False, on_epoch=True, add_dataloader_idx=False)


def rate_regularizer(
    spikes: dict[str, torch.Tensor], l1: float, l2: float, l2_bound: float
) -> torch.Tensor | float:
    """SPyTorch-style activity regularisers over all layers' spikes ``[T, B, N]``.

    ``l1 * mean_b sum_{t,n} z``: fewer spikes overall;
    ``l2 * mean_n relu(c_n - l2_bound)**2`` with ``c_n`` a neuron's spike count averaged over the
    batch: an upper bound on per-neuron activity (``l2_bound=0`` penalises all activity).
    """
    loss = 0.0
    for z in spikes.values():
        if l1:
            loss = loss + l1 * z.sum(dim=(0, 2)).mean()
        if l2:
            counts = z.sum(0).mean(0)
            loss = loss + l2 * F.relu(counts - l2_bound).pow(2).mean()
    return loss


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against class indices ``[B]`` or, for mixed batches
    (:mod:`spikelight.data.augment`), class probabilities ``[B, K]``:
    ``-mean_b sum_k targets_bk log softmax(logits_b)_k``."""
    if targets.is_floating_point():
        return F.cross_entropy(logits, targets.to(logits.dtype))
    return F.cross_entropy(logits, targets)


def hard_labels(targets: torch.Tensor) -> torch.Tensor:
    """Class indices; of soft targets ``[B, K]`` the dominant class (ties: the lowest index)."""
    return targets.argmax(dim=-1) if targets.is_floating_point() else targets


def layer_activity(spikes: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rate, silent)`` of one layer's spikes ``[T, B, N]``: spikes per neuron per second,
    and the fraction of its neurons with no spike in the batch."""
    z = spikes.detach().float()
    rate = z.mean() / dt
    silent = (z.sum(dim=(0, 1)) == 0).float().mean()
    return rate, silent


class SpikingClassifier(L.LightningModule):
    """``forward(x [B, T, C]) -> scores [B, K]``; training, validation and test loops.

    ``compile=True`` runs the network through ``torch.compile``. The fused time loops and the
    event projection stay eager (compiling a Python time loop unrolls it); what is compiled
    is the rest of the graph, and the whole per-step loop with ``time_loop=autograd``.
    """

    def __init__(
        self,
        network: SpikingNetwork,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        neuron_lr: float | None = None,
        delay_lr: float | None = None,
        reg_l1: float = 0.0,
        reg_l2: float = 0.0,
        reg_l2_bound: float = 0.0,
        compile: bool = False,
    ) -> None:
        super().__init__()
        lr = getattr(optimizer, "keywords", {}).get("lr")  # a partial optimizer's own lr
        if lr is not None:
            checks.positive("optimizer.lr", lr)
        for name, value in (("neuron_lr", neuron_lr), ("delay_lr", delay_lr)):
            if value is not None:
                checks.positive(name, value)
        for name, value in (("reg_l1", reg_l1), ("reg_l2", reg_l2), ("reg_l2_bound", reg_l2_bound)):
            checks.non_negative(name, value)
        self.network = network
        # compiled as a function, not a wrapped module, so checkpoint keys stay the same
        self._compiled_network = torch.compile(network.forward) if compile else None
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.neuron_lr = neuron_lr
        self.delay_lr = delay_lr
        self.reg = dict(l1=reg_l1, l2=reg_l2, l2_bound=reg_l2_bound)

        num_classes = network.readout_fc.out_features
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss = MeanMetric()
        self.val_acc_best = MaxMetric()
        self.test_epoch_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_epoch_acc_best = MaxMetric()
        self._resumed_bests: dict[str, float] = {}  # running maxima of a checkpoint being resumed
        self._analog_input: bool | None = None  # judged on the first batch (a dataset's kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_network(x).logits

    def run_network(self, x: torch.Tensor) -> NetworkOutput:
        """The network on batch-major input ``[B, T, C]`` (compiled if ``compile``)."""
        run = self._compiled_network or self.network
        return run(x.transpose(0, 1))

    def _step(self, batch, stage: str):
        x, y = batch
        out = self.run_network(x)
        loss = cross_entropy(out.logits, y)  # soft targets where a training batch was mixed
        if stage == "train":
            loss = loss + rate_regularizer(out.spikes, **self.reg)
        # per layer: spikes per neuron per second, and the fraction of neurons silent in the batch
        for layer, z in out.spikes.items():
            rate, silent = layer_activity(z, self.network.dt)
            self.log(f"{stage}/rate/{layer}", rate, **_EPOCH)
            self.log(f"{stage}/silent/{layer}", silent, **_EPOCH)
        self._log_cost(stage, x, out)
        return loss, out.logits, hard_labels(y)

    def _log_cost(self, stage: str, x: torch.Tensor, out: NetworkOutput) -> None:
        """``<stage>/synops/<layer>`` and ``/total`` per sample; ``<stage>/energy_nj/{snn,ann}``.

        Whether the input is analog (multiply-accumulates) or events is judged once, in full, on
        the first batch: a dataset's input kind does not change, and the check costs a pass.
        """
        if self._analog_input is None:
            self._analog_input = is_analog(x)
        batch, steps = x.shape[0], x.shape[1]
        ops = synops(self.network, x.transpose(0, 1), out.spikes, self._analog_input)
        log = dict(_EPOCH, batch_size=batch)
        for layer, value in ops.items():
            self.log(f"{stage}/synops/{layer}", value, **log)
        self.log(f"{stage}/synops/total", sum(ops.values()), **log)
        self.log(f"{stage}/energy_nj/snn", snn_energy_nj(ops, self._analog_input), **log)
        ann = torch.tensor(ann_energy_nj(self.network, steps), dtype=torch.float64)
        self.log(f"{stage}/energy_nj/ann", ann, **log)

    def training_step(self, batch, batch_idx):
        loss, logits, y = self._step(batch, "train")
        self.train_acc(logits, y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if dataloader_idx == 1:  # the test split, evaluated every epoch (data.test_every_epoch)
            x, y = batch
            self.test_epoch_acc(self.run_network(x).logits, y)
            self.log("test_epoch/acc", self.test_epoch_acc, **_EPOCH)
            return
        loss, logits, y = self._step(batch, "val")
        self.val_loss(loss)
        self.val_acc(logits, y)
        self.log("val/loss", self.val_loss, prog_bar=True, **_EPOCH)
        self.log("val/acc", self.val_acc, prog_bar=True, **_EPOCH)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)
        if self.test_epoch_acc.update_count:
            self.test_epoch_acc_best(self.test_epoch_acc.compute())
            self.log("test_epoch/acc_best", self.test_epoch_acc_best.compute())

    def on_fit_start(self):
        """A fresh run lets the weight initialisation measure one training batch first."""
        if self.trainer.ckpt_path is not None:
            return  # resumed: the checkpoint's weights stand
        datamodule = self.trainer.datamodule
        if not hasattr(datamodule, "sample_batch"):
            log.warning("weight_init: no SpikeDataModule to measure; weights stay as drawn")
            return
        x = datamodule.sample_batch().to(self.device)
        self.network.calibrate(x.transpose(0, 1))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for t in self.network.state_dict().values():  # every rank starts from rank 0's
                torch.distributed.broadcast(t, src=0)

    def on_train_epoch_start(self):
        """Delay kernels narrow epoch by epoch (:meth:`DelaySpec.sigma`), resumed runs too."""
        sigma = self.network.anneal_delays(self.current_epoch)
        if sigma is not None:
            self.log("train/delay_sigma", float(sigma), on_step=False, on_epoch=True)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.network.clamp_delays()  # a step may leave [0, max_delay]: back to the edge

    def _bests(self) -> dict[str, MaxMetric]:
        """The running maxima that a resumed run continues (checkpoint key -> metric)."""
        return {"val_acc_best": self.val_acc_best, "test_epoch_acc_best": self.test_epoch_acc_best}

    def on_train_start(self):
        for key, best in self._bests().items():
            best.reset()  # forget the sanity check's value ...
            resumed = self._resumed_bests.get(key, -math.inf)
            if math.isfinite(resumed):  # ... but not the epochs before a resume
                best.update(torch.tensor(resumed))

    def on_save_checkpoint(self, checkpoint):
        for key, best in self._bests().items():
            checkpoint[key] = float(best.max_value)

    def on_load_checkpoint(self, checkpoint):
        self._resumed_bests = {key: float(checkpoint.get(key, -math.inf)) for key in self._bests()}

    def test_step(self, batch, batch_idx):
        loss, logits, y = self._step(batch, "test")
        self.test_acc(logits, y)
        self.log("test/loss", loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)

    def configure_optimizers(self):
        groups = []
        for kind, params in self.network.parameter_groups().items():
            group = {"params": params, "name": kind}
            if kind == "delays":
                if self.delay_lr is not None:
                    group["lr"] = self.delay_lr
            elif kind != "weights" and self.neuron_lr is not None:
                group["lr"] = self.neuron_lr
            groups.append(group)
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
