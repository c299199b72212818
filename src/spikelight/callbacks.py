"""Lightning callbacks that fill the dashboard of a spiking-network run, in every logger.

Scalars that every rank can compute (gradient norms) go through ``LightningModule.log``; images,
histograms, text and the hparams are written by rank zero through one sink per logger
(:mod:`spikelight.loggers`: TensorBoard, W&B, MLflow; CSV takes the hparams only). Each callback
is cheap (a bounded sample, every N epochs) and does nothing when no logger takes what it makes.
They are selected in ``conf/callbacks/default.yaml``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities import rank_zero_only

from spikelight.cost import layer_sizes
from spikelight.delays import DelayedLinear
from spikelight.images import line_plot, spike_raster
from spikelight.loggers import dashboard_sinks, media_sinks
from spikelight.module import layer_activity
from spikelight.network import SpikingNetwork, hidden_name, selected_names
from spikelight.neurons.base import Neuron
from spikelight.weight_init import ScaledNormal, Uniform

log = logging.getLogger(__name__)


def spiking_layers(network: SpikingNetwork) -> dict[str, Neuron]:
    """Layer name (as in ``NetworkOutput.spikes``) -> its neuron module."""
    layers = {hidden_name(i): layer.neuron for i, layer in enumerate(network.layers)}
    if isinstance(network.readout, Neuron):
        layers["readout"] = network.readout
    return layers


def _check_every(every_n_epochs: int) -> int:
    if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int):
        raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}")
    if every_n_epochs < 1:
        raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs!r}")
    return every_n_epochs


def layer_table(network: SpikingNetwork) -> str:
    """Neurons and synapses per layer (:func:`spikelight.cost.layer_sizes`) and the time loop
    each runs (:meth:`SpikingNetwork.time_loops`), as a text table."""
    sizes, loops = layer_sizes(network), network.time_loops()
    rows = [("Layer", "Neurons", "Synapses", "of which recurrent", "Time loop")]
    rows += [(s.name, s.neurons, s.synapses, s.recurrent_synapses, loops[s.name]) for s in sizes]
    rows.append(
        (
            "Total",
            sum(s.neurons for s in sizes),
            sum(s.synapses for s in sizes),
            sum(s.recurrent_synapses for s in sizes),
            "",
        )
    )
    cells = [[f"{c:,}" if isinstance(c, int) else c for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(rows[0]))]

    def line(row: list[str]) -> str:  # names and loops left-aligned, counts right-aligned
        return " | ".join(
            c.ljust(w) if i in (0, len(row) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    lines = [line(row) for row in cells]
    rule = "-" * len(lines[0])
    return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


class SpikingModelSummary(ModelSummary):
    """Lightning's model summary (parameters per module), followed by the network's neurons and
    synapses per layer: the cost counts also written to ``metrics.json``."""

    def on_fit_start(self, trainer, pl_module) -> None:
        network = getattr(pl_module, "network", None)
        self._layers = layer_table(network) if isinstance(network, SpikingNetwork) else None
        super().on_fit_start(trainer, pl_module)

    def summarize(self, *args, **kwargs) -> None:  # called by on_fit_start, on rank zero
        super().summarize(*args, **kwargs)
        if self._layers is not None:
            log.info("Spiking network\n%s", self._layers)


class GradNormMonitor(L.Callback):
    """``grad_norm/<group>``: L2 norm of the gradient of each optimiser parameter group.

    Groups are named by ``SpikingNetwork.parameter_groups()`` (``weights``, ``tau_mem``, ...), so
    a neuron parameter whose gradient vanishes (or explodes) shows up next to the weights'.
    Averaged over the epoch's optimiser steps.
    """

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for index, group in enumerate(optimizer.param_groups):
            grads = [p.grad.detach().flatten() for p in group["params"] if p.grad is not None]
            if not grads:
                continue
            norm = torch.linalg.vector_norm(torch.cat(grads))
            name = group.get("name", f"group{index}")
            pl_module.log(f"grad_norm/{name}", norm, on_step=False, on_epoch=True)


class ParameterHistograms(L.Callback):
    """Histograms of every neuron parameter and weight matrix, per layer, every N epochs.

    Tags ``params/<layer>/<name>``; time constants in milliseconds (``tau_mem_ms``), read through
    their constraint (``Neuron.get``), so the drift of learned time constants is visible;
    synaptic delays (``params/<layer>/delay``) in steps. Written
    once before training (step 0) and then at the end of every N-th training epoch.
    """

    def __init__(self, every_n_epochs: int = 1, weights: bool = True) -> None:
        self.every_n_epochs = _check_every(every_n_epochs)
        self.weights = weights

    @rank_zero_only
    def on_train_start(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module)

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._write(trainer, pl_module)

    def _write(self, trainer, pl_module) -> None:
        sinks = media_sinks(trainer)
        if not sinks:
            return
        network: SpikingNetwork = pl_module.network
        step = trainer.global_step
        histograms: dict[str, torch.Tensor] = {}
        for layer, neuron in spiking_layers(network).items():
            for name in neuron.parameter_names:
                values = neuron.get(name).detach().float().cpu()
                tag = f"params/{layer}/{name}"
                if name.startswith("tau_"):
                    values, tag = values * 1e3, tag + "_ms"
                histograms[tag] = values
        if self.weights:
            projections = {hidden_name(i): layer.fc for i, layer in enumerate(network.layers)}
            projections["readout"] = network.readout_fc
            for index, layer in enumerate(network.layers):
                if layer.rec is not None:
                    histograms[f"params/{hidden_name(index)}/rec_weight"] = layer.rec.weight
            for name, projection in projections.items():
                histograms[f"params/{name}/weight"] = projection.weight
                if isinstance(projection, DelayedLinear):  # in steps
                    histograms[f"params/{name}/delay"] = projection.delay
        for tag, values in histograms.items():
            values = values.detach().cpu()
            for sink in sinks:
                sink.add_histogram(tag, values, step)


class SpikeRasters(L.Callback):
    """Spike rasters of one fixed validation sample and the readout traces, every N epochs.

    Images ``raster/input``, ``raster/<layer>`` (neurons x time, at most ``max_neurons`` rows)
    and ``readout/membrane`` (one line per class, the true class drawn thicker; spiking readouts
    get ``raster/readout`` instead). The sample is
    the ``sample_index``-th of the first validation batch, kept from the first time it is seen,
    so every image shows the same input. Written after validation of epochs 0, N, 2N, ...
    """

    def __init__(
        self, every_n_epochs: int = 5, sample_index: int = 0, max_neurons: int = 128
    ) -> None:
        self.every_n_epochs = _check_every(every_n_epochs)
        if sample_index < 0 or max_neurons < 1:
            raise ValueError(
                f"sample_index must be >= 0 and max_neurons >= 1, "
                f"got {sample_index!r}, {max_neurons!r}"
            )
        self.sample_index = sample_index
        self.max_neurons = max_neurons
        self.sample: tuple[torch.Tensor, int] | None = None

    def on_validation_batch_start(
        self, trainer, pl_module, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self.sample is not None or batch_idx != 0 or dataloader_idx != 0:
            return
        x, y = batch
        i = min(self.sample_index, x.shape[0] - 1)
        self.sample = (x[i : i + 1].detach().clone(), int(y[i]))

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.sample is None:
            return
        if trainer.current_epoch % self.every_n_epochs != 0:
            return
        sinks = media_sinks(trainer)
        if not sinks:
            return
        x, label = self.sample
        x = x.to(pl_module.device)
        with torch.no_grad():
            out = pl_module.network(x.transpose(0, 1))  # [T, 1, C]
        n = self.max_neurons
        images = {"raster/input": spike_raster(x[0, :, :n])}
        for layer, z in out.spikes.items():
            images[f"raster/{layer}"] = spike_raster(z[:, 0, :n])
        if "readout" not in out.spikes:  # a spiking readout already has its raster
            images["readout/membrane"] = line_plot(out.readout[:, 0], highlight=label)
        for tag, image in images.items():
            for sink in sinks:
                sink.add_image(tag, image, trainer.global_step)


class SurrogatePlot(L.Callback):
    """``surrogate/derivative``: the backward function ``dH/dx`` the run trains with, once.

    Plotted over ``x = v - threshold`` in ``[-x_range, x_range]`` with the surrogate's ``beta``
    at the start of training.
    """

    def __init__(self, x_range: float = 2.0, points: int = 401) -> None:
        if not x_range > 0 or points < 2:
            raise ValueError(f"need x_range > 0 and points >= 2, got {x_range!r}, {points!r}")
        self.x_range = float(x_range)
        self.points = int(points)

    @rank_zero_only
    def on_train_start(self, trainer, pl_module) -> None:
        sinks = media_sinks(trainer)
        if not sinks:
            return
        surrogate = pl_module.network.surrogate
        x = torch.linspace(-self.x_range, self.x_range, self.points, dtype=torch.float64)
        with torch.no_grad():
            dy = surrogate.derivative(x, surrogate.beta.detach().cpu().double())
        image = line_plot(dy)
        for sink in sinks:
            sink.add_image("surrogate/derivative", image, trainer.global_step)


def _class_name(target: str) -> str:
    return str(target).rsplit(".", 1)[-1]


def flat_hparams(
    neuron: str,
    surrogate: str,
    beta: float,
    trainable: Iterable[str] | Mapping[str, bool],
    init: str,
    hidden: Iterable[int],
    lr: float,
    seed: int,
    data: str | None = None,
    **extra,
) -> dict[str, str | float | int | bool]:
    """A run's choices as one flat dict of scalars (what the HParams view can tabulate).

    Targets become class names (``LIF``), lists become strings (``weights+tau_mem``, ``128-128``).
    """
    params = {
        "neuron": _class_name(neuron),
        "surrogate": _class_name(surrogate),
        "beta": float(beta),
        "trainable": "+".join(sorted(selected_names(trainable))),
        "init": _class_name(init),
        "hidden": "-".join(str(int(n)) for n in hidden),
        "lr": float(lr),
        "seed": int(seed),
    }
    if data is not None:
        params["data"] = _class_name(data)
    for key, value in extra.items():
        params[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return params


class HParamsSummary(L.Callback):
    """Give every logger the run's choices, to compare against its final metrics.

    ``hparams`` holds the choices (interpolated from the config, see
    ``conf/callbacks/default.yaml``) and is flattened by :func:`flat_hparams`; ``metrics`` names
    scalar tags the run logs anyway (``val/acc_best``, ``test/acc``): TensorBoard's HParams view
    shows their last values (W&B's and MLflow's run tables show every metric), so a sweep's runs
    can be sorted and compared. Written when fitting starts, so a run that stops early is still
    listed: TensorBoard's HParams tab and ``hparams.yaml``, W&B's config, MLflow's params, CSV's
    ``hparams.yaml``.
    """

    def __init__(self, hparams: Mapping, metrics: Iterable[str] = ("val/acc_best", "test/acc")):
        self.hparams = flat_hparams(**dict(hparams))
        self.metrics = [str(m) for m in metrics]
        if not self.metrics:
            raise ValueError("HParamsSummary needs at least one metric tag")

    @rank_zero_only
    def on_fit_start(self, trainer, pl_module) -> None:
        for sink in dashboard_sinks(trainer):
            sink.add_hparams(self.hparams, self.metrics)


#: (state, a fixed-scale weight_init: scaled or uniform) -> the config keys that move a layer
#: out of that state
ACTIVITY_FIXES = {
    ("saturated", False): "raise weight_init.xi or lower weight_init.mu_u, or raise "
    "neuron.threshold",
    ("saturated", True): "lower weight_init.scale, or raise neuron.threshold",
    ("silent", False): "lower weight_init.xi or raise weight_init.mu_u, or lower neuron.threshold",
    ("silent", True): "raise weight_init.scale, or lower neuron.threshold",
}


class ActivityCheck(L.Callback):
    """Warn once, at the first validation, about each saturated or silent spiking layer.

    A layer firing above ``max_rate`` spikes per neuron per second, or with more than
    ``max_silent`` of its neurons silent, rarely trains: the surrogate gradient vanishes or every
    neuron says the same. The warning names the layer, its rate and the config keys that fix it;
    it goes to the log and to every logger that takes text, as one entry with a paragraph per
    layer (``warnings/activity``). The first
    validation is the sanity check where the trainer runs one (before any training step); the
    check runs the network once on its first batch.
    """

    def __init__(self, max_rate: float = 200.0, max_silent: float = 0.9) -> None:
        if not max_rate > 0:
            raise ValueError(f"callbacks.activity_check.max_rate must be > 0, got {max_rate!r}")
        if not 0 < max_silent <= 1:
            raise ValueError(
                f"callbacks.activity_check.max_silent must be in (0, 1], got {max_silent!r}"
            )
        self.max_rate = float(max_rate)
        self.max_silent = float(max_silent)
        self.warnings: list[str] = []
        self._checked = False

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self._checked:
            return
        self._checked = True
        with torch.no_grad():
            out = pl_module.run_network(batch[0])
        self.warnings = []
        for layer, spikes in out.spikes.items():
            rate, silent = layer_activity(spikes, pl_module.network.dt)
            message = self._verdict(pl_module, layer, float(rate), float(silent))
            if message is not None:
                self.warnings.append(message)
        for message in self.warnings:
            rank_zero_only(log.warning)(message)
        if self.warnings and trainer.is_global_zero:
            text = "\n\n".join(self.warnings)
            for sink in media_sinks(trainer):
                sink.add_text("warnings/activity", text, trainer.global_step)

    def _verdict(self, pl_module, layer: str, rate: float, silent: float) -> str | None:
        if rate > self.max_rate:
            state = "saturated"
        elif silent > self.max_silent:
            state = "silent"
        else:
            return None
        scaled = isinstance(pl_module.network.weight_init, ScaledNormal | Uniform)
        fix = ACTIVITY_FIXES[state, scaled]
        return (
            f"layer {layer} is {state} at the first validation: {rate:.1f} spikes/s per neuron, "
            f"{silent:.0%} of its neurons silent (limits: {self.max_rate:g} spikes/s, "
            f"{self.max_silent:.0%} silent). It will hardly learn: {fix}."
        )
