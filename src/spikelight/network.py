"""Feed-forward or recurrent spiking networks with a decoded readout; plain PyTorch.

``SpikingNetwork`` maps time-major input ``[T, B, C]`` to class scores ``[B, K]``: hidden layers
of ``Linear`` (+ optional recurrent ``Linear``) feeding spiking neurons, then a readout that is
decoded over time:

- ``max_membrane``: leaky-integrator readout, scores = max over time of its membrane (SPyTorch);
- ``mean_membrane``: the same readout, scores = mean over time of its membrane;
- ``spike_count`` / ``spike_rate``: a spiking readout layer, scores = its spike count (sum over
  time) or rate (mean over time), trained with cross-entropy on those.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from spikelight import checks
from spikelight.checks import ArgumentError
from spikelight.neurons.base import Neuron
from spikelight.neurons.fused import Events, leaky_integrate, project, project_spikes, run_fused
from spikelight.surrogates import Surrogate
from spikelight.weight_init import FluctuationDriven, ScaledNormal

DECODINGS = ("max_membrane", "mean_membrane", "spike_count", "spike_rate")
TIME_LOOPS = ("fused", "autograd")
WEIGHT_SELECTIONS = ("weights", "readout")


def selected_names(trainable: Iterable[str] | Mapping[str, bool]) -> set[str]:
    """``['weights', 'tau_mem']`` or ``{weights: true, tau_mem: true}`` -> a set of names."""
    if isinstance(trainable, str):
        trainable = [trainable]
    if isinstance(trainable, Mapping):
        return {str(k) for k, v in trainable.items() if v}
    return {str(k) for k in trainable}


@dataclass
class NetworkOutput:
    logits: torch.Tensor  # [B, K] decoded class scores
    readout: torch.Tensor  # [T, B, K] readout membrane (or spikes for spiking readouts)
    spikes: dict[str, torch.Tensor]  # layer name -> [T, B, N] spikes of each spiking layer


class LeakyReadout(nn.Module):
    """Non-spiking leaky integrator: the LIF sub-threshold dynamics with no threshold."""

    def __init__(self, size: int, dt: float, tau_mem: float, tau_syn: float) -> None:
        super().__init__()
        for name, tau in (("tau_mem", tau_mem), ("tau_syn", tau_syn)):
            if checks.positive(f"readout_{name}", tau) <= dt:
                raise ArgumentError(
                    f"readout_{name}", tau, f"a time constant longer than dt={dt:g} s"
                )
        self.size = size
        self.dt = dt
        self.register_buffer("a_mem", torch.tensor(math.exp(-dt / tau_mem)))
        self.register_buffer("a_syn", torch.tensor(math.exp(-dt / tau_syn)))

    def forward(self, x: torch.Tensor, fused: bool = True) -> torch.Tensor:
        if fused:
            return leaky_integrate(x, self.a_syn, self.a_mem)
        i = v = x.new_zeros(x.shape[1:])
        trace = []
        for x_t in x.unbind(0):
            i = self.a_syn * i + x_t
            v = self.a_mem * v + (1 - self.a_mem) * i
            trace.append(v)
        return torch.stack(trace)


class SpikingLayer(nn.Module):
    """``Linear`` projection (all time steps at once), optional recurrence, then neurons.

    With ``fused`` the neurons' whole time loop runs in one autograd Function
    (:mod:`spikelight.neurons.fused`) when the neuron has a fused kernel; otherwise, or with
    ``fused=False``, a plain per-step loop that autograd differentiates (the reference).
    """

    def __init__(self, in_features: int, neuron: Neuron, recurrent: bool):
        super().__init__()
        self.neuron = neuron
        self.fc = nn.Linear(in_features, neuron.size, bias=False)
        self.rec = nn.Linear(neuron.size, neuron.size, bias=False) if recurrent else None

    def forward(
        self,
        x: torch.Tensor,
        fused: bool = True,
        spikes_in: bool = False,
        out_weight: torch.Tensor | None = None,
    ):
        """Spikes ``[T, B, N]``; with ``out_weight``, ``(spikes, spikes @ out_weight.T)``.

        ``spikes_in``: ``x`` holds only 0 and 1 (a fused layer's spikes). ``out_weight``: the
        next projection, computed by the fused loop from its spike events when it runs.
        """
        if fused and self.neuron.fused_dynamics() is not None:
            rec = None if self.rec is None else self.rec.weight
            events = Events.of(x)  # sparse data: projected inside the fused loop, per event
            if events is not None:
                return run_fused(self.neuron, events, rec, self.fc.weight, out_weight)
            current = _linear(x, self.fc.weight, fused, spikes_in)
            return run_fused(self.neuron, current, rec, out_weight=out_weight)
        current = _linear(x, self.fc.weight, fused, spikes_in)
        spikes = run_neuron(self.neuron, current, self.rec, fused)
        if out_weight is None:
            return spikes
        return spikes, nn.functional.linear(spikes, out_weight)


def _linear(x, weight, fused: bool, spikes_in: bool) -> torch.Tensor:
    """``x @ weight.T``: event-driven for sparse data, boolean-saving for binary spikes."""
    if not fused:
        return nn.functional.linear(x, weight)
    if spikes_in and x.requires_grad:
        return project_spikes(x, weight)
    return project(x, weight)


def run_neuron(
    neuron: Neuron, current: torch.Tensor, rec: nn.Linear | None = None, fused: bool = True
) -> torch.Tensor:
    """Spikes ``[T, B, N]`` of ``neuron`` driven by ``current`` and optional recurrence."""
    if fused and neuron.fused_dynamics() is not None:
        return run_fused(neuron, current, None if rec is None else rec.weight)
    if rec is None:
        return neuron(current)
    coeffs = neuron.coefficients()
    state = neuron.initial_state(current.shape[1], current)
    z = current.new_zeros(current.shape[1:])
    spikes = []
    for current_t in current.unbind(0):
        z, state = neuron.step(current_t + rec(z), state, coeffs)
        spikes.append(z)
    return torch.stack(spikes)


class SpikingNetwork(nn.Module):
    """Spiking classifier ``[T, B, C] -> NetworkOutput``; see the module docstring.

    ``neuron`` is a factory (e.g. ``functools.partial(LIF, tau_mem=20e-3)``) called as
    ``neuron(size=..., surrogate=..., trainable=..., tau_init=...)`` for each layer.
    ``trainable`` selects what learns: ``weights`` (every synaptic weight), ``readout`` (the
    readout weights only: the reservoir-computing baseline), and any neuron parameter names.
    ``time_loop="fused"`` runs each layer's time loop in one autograd Function with a
    hand-written backward, and projects sparse input event by event (fast, lean);
    ``"autograd"`` is the plain per-step loop it is tested against.
    ``weight_init`` draws the weights (:mod:`spikelight.weight_init`; default: fluctuation-driven
    with the assumed input rate); :meth:`calibrate` lets it measure a batch before training.
    """

    def __init__(
        self,
        num_inputs: int,
        num_classes: int,
        hidden: Iterable[int],
        neuron: Callable[..., Neuron],
        surrogate: Surrogate,
        trainable: Iterable[str] | Mapping[str, bool] = ("weights",),
        tau_init: Callable | None = None,
        recurrent: bool = False,
        decoding: str = "max_membrane",
        readout_tau_mem: float = 10e-3,
        readout_tau_syn: float = 5e-3,
        weight_init: FluctuationDriven | ScaledNormal | None = None,
        time_loop: str = "fused",
    ) -> None:
        super().__init__()
        hidden = list(hidden)
        checks.positive_int("num_inputs", num_inputs)
        checks.positive_int("num_classes", num_classes)
        if not hidden or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in hidden
        ):
            raise ArgumentError("hidden", hidden, "a non-empty list of layer sizes >= 1")
        checks.choice("decoding", decoding, DECODINGS)
        checks.choice("time_loop", time_loop, TIME_LOOPS)
        checks.boolean("recurrent", recurrent)
        trainable = selected_names(trainable)
        if not trainable:
            raise ArgumentError(
                "trainable", sorted(trainable), "at least one name, e.g. trainable=[weights]"
            )
        neuron_trainable = trainable - set(WEIGHT_SELECTIONS)

        self.decoding = decoding
        self.surrogate = surrogate
        self.fused = time_loop == "fused"

        def make_neuron(size: int) -> Neuron:
            return neuron(
                size=size, surrogate=surrogate, trainable=neuron_trainable, tau_init=tau_init
            )

        self.layers = nn.ModuleList()
        sizes = [num_inputs, *hidden]
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            self.layers.append(SpikingLayer(n_in, make_neuron(n_out), recurrent))
        self.dt = self.layers[0].neuron.dt

        self.readout_fc = nn.Linear(hidden[-1], num_classes, bias=False)
        if decoding in ("spike_count", "spike_rate"):
            self.readout = make_neuron(num_classes)
        else:
            self.readout = LeakyReadout(num_classes, self.dt, readout_tau_mem, readout_tau_syn)
        self.weight_init = FluctuationDriven() if weight_init is None else weight_init
        self.weight_init.initialize(self)

        train_all = "weights" in trainable
        for name, p in self.named_parameters():
            if _is_weight(name):
                p.requires_grad_(train_all or ("readout" in trainable and _is_readout(name)))

    def calibrate(self, x: torch.Tensor) -> None:
        """Let the weight initialisation measure one batch ``x [T, B, C]`` (before training)."""
        self.weight_init.calibrate(self, x)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters grouped by kind: ``weights``, each neuron parameter, ``beta``."""
        groups: dict[str, list[nn.Parameter]] = {}
        seen: set[int] = set()
        for name, p in self.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            leaf = name.rsplit(".", 1)[-1]
            if _is_weight(name):
                kind = "weights"
            elif leaf == "log_beta":
                kind = "surrogate_beta"
            else:
                kind = leaf.removesuffix("_raw")
            groups.setdefault(kind, []).append(p)
        return groups

    def forward(self, x: torch.Tensor) -> NetworkOutput:
        spikes = {}
        h = x
        binary = False  # h holds only 0 and 1: the spikes of a fused layer
        for index, layer in enumerate(self.layers[:-1]):
            h = layer(h, self.fused, binary)
            spikes[f"hidden{index}"] = h
            binary = self.fused and layer.neuron.fused_dynamics() is not None
        # the last hidden layer also projects its spikes onto the readout (inside a fused loop)
        h, current = self.layers[-1](h, self.fused, binary, self.readout_fc.weight)
        spikes[f"hidden{len(self.layers) - 1}"] = h
        if isinstance(self.readout, Neuron):
            readout = spikes["readout"] = run_neuron(self.readout, current, fused=self.fused)
        else:
            readout = self.readout(current, self.fused)
        return NetworkOutput(logits=decode(readout, self.decoding), readout=readout, spikes=spikes)


def _is_weight(name: str) -> bool:
    """A synaptic weight, stored plainly or in units of its scale (``weight_init.RowScale``)."""
    return name.endswith(("weight", "weight.original"))


def _is_readout(name: str) -> bool:
    return name.startswith("readout_fc.")


def decode(readout: torch.Tensor, decoding: str) -> torch.Tensor:
    """Class scores ``[B, K]`` from a readout trace ``[T, B, K]``."""
    if decoding == "max_membrane":
        return readout.max(0).values
    if decoding == "spike_count":
        return readout.sum(0)
    return readout.mean(0)  # mean_membrane, spike_rate
