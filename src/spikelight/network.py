"""Feed-forward or recurrent spiking networks with a decoded readout; plain PyTorch.

``SpikingNetwork`` maps time-major input ``[T, B, C]`` to class scores ``[B, K]``: hidden layers
of ``Linear`` (+ optional recurrent ``Linear``) feeding spiking neurons, then a readout that is
decoded over time:

- ``max_membrane``: leaky-integrator readout, scores = max over time of its membrane (SPyTorch);
- ``mean_membrane``: the same readout, scores = mean over time of its membrane;
- ``softmax_sum``: the same readout, scores = the sum over time of its per-step softmax over the
  classes (SE-adLIF's ``loss_agg: softmax``, Baronig et al. 2024: cross-entropy is then taken on
  that sum, as their ``models/pl_module.py`` does);
- ``spike_count`` / ``spike_rate``: a spiking readout layer, scores = its spike count (sum over
  time) or rate (mean over time), trained with cross-entropy on those.

With ``delays`` (:mod:`spikelight.delays`) each hidden layer's feed-forward projection is a
``DelayedLinear``: every synapse also has a learnable delay, and the neurons (the fused loop as
well) run on the delayed current it gives; ``delays.readout`` delays the readout's input too.
Every decoding leaves out the first ``ignore_steps`` readout steps (SE-adLIF's
``ignore_first_timesteps``). Options a preset can select (Baronig et al.'s SHD model uses all):
``dropout`` on each hidden layer's spikes in training, ``bias`` on every projection (zero at
the start), ``readout_tau_syn=None`` for a readout without synaptic filter
(``v_t = a v_{t-1} + (1 - a) W x_t``, SE-adLIF's LI).

A trained network also runs on a stream, chunk by chunk (:meth:`SpikingNetwork.stream`): each
call continues from the state the previous one left, through the same per-step loop as
``time_loop="autograd"`` (the neurons' ``step``), so the chunks together give what one call on
the whole sequence gives.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from spikelight import checks
from spikelight.checks import ArgumentError
from spikelight.delays import DelayedLinear, DelaySpec
from spikelight.neurons import native
from spikelight.neurons.base import Neuron
from spikelight.neurons.events import Events, project, project_spikes
from spikelight.neurons.fused import describe, run_fused
from spikelight.neurons.leaky_filter import filter_step, leaky_integrate
from spikelight.surrogates import Surrogate
from spikelight.weight_init import FluctuationDriven, ScaledNormal, Uniform

DECODINGS = ("max_membrane", "mean_membrane", "softmax_sum", "spike_count", "spike_rate")
SPIKING_DECODINGS = ("spike_count", "spike_rate")
TIME_LOOPS = ("fused", "autograd")
#: trainable selections of the synapses (the rest name neuron parameters)
WEIGHT_SELECTIONS = ("weights", "readout", "delays")

log = logging.getLogger(__name__)


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


def hidden_name(index: int) -> str:
    """The name of hidden layer ``index`` in ``NetworkOutput.spikes`` and in logged metrics."""
    return f"hidden{index}"


class LeakyReadout(nn.Module):
    """Non-spiking leaky integrator: the LIF sub-threshold dynamics with no threshold.

    Per step: ``i_t = a_syn i_{t-1} + x_t``, ``v_t = a_mem v_{t-1} + (1 - a_mem) i_t``, from zero.
    ``tau_syn=None``: no synaptic filter (``a_syn = 0``, so ``i_t = x_t`` exactly and
    ``v_t = a_mem v_{t-1} + (1 - a_mem) x_t``: the LI readout of SE-adLIF, ``models/li.py``).
    """

    def __init__(self, size: int, dt: float, tau_mem: float, tau_syn: float | None) -> None:
        super().__init__()
        for name, tau in (("tau_mem", tau_mem), ("tau_syn", tau_syn)):
            if name == "tau_syn" and tau is None:
                continue
            if not (checks.is_number(tau) and math.isfinite(tau) and tau > dt):
                no_filter = ", or null (no synaptic filter)" if name == "tau_syn" else ""
                raise ArgumentError(
                    f"readout_{name}", tau, f"a time constant longer than dt={dt:g} s{no_filter}"
                )
        self.size = size
        self.dt = dt
        self.register_buffer("a_mem", torch.tensor(math.exp(-dt / tau_mem)))
        a_syn = 0.0 if tau_syn is None else math.exp(-dt / tau_syn)
        self.register_buffer("a_syn", torch.tensor(a_syn))

    def coefficients(self) -> dict[str, float]:
        return {"a_syn": float(self.a_syn), "a_mem": float(self.a_mem)}

    def initial_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = like.new_zeros(batch, self.size)
        return zeros, zeros

    def step(self, x, state, coeffs):
        """One step, as a neuron's: ``(input [B, K], (i, v), coeffs) -> (v, (i, v))``."""
        i, v = filter_step(x, *state, coeffs["a_syn"], coeffs["a_mem"])
        return v, (i, v)

    def forward(self, x: torch.Tensor, fused: bool = True) -> torch.Tensor:
        if fused:
            return leaky_integrate(x, self.a_syn, self.a_mem)
        return run_steps(self, x, self.initial_state(x.shape[1], x))[0]


class SpikingLayer(nn.Module):
    """``Linear`` projection (all time steps at once), optional recurrence, then neurons.

    With ``delays`` the projection is a :class:`~spikelight.delays.DelayedLinear` (a causal
    convolution over time); the recurrence, if any, stays undelayed.

    With ``fused`` the neurons' whole time loop runs in one autograd Function
    (:mod:`spikelight.neurons.fused`) when the neuron has a fused kernel; otherwise, or with
    ``fused=False``, a plain per-step loop that autograd differentiates (the reference).
    """

    def __init__(
        self,
        in_features: int,
        neuron: Neuron,
        recurrent: bool,
        delays: DelaySpec | None = None,
        bias: bool = False,
    ):
        super().__init__()
        self.neuron = neuron
        #: why this layer runs the autograd loop even when fused is asked for; None: it does not
        self.autograd_reason = neuron.fused_reason()
        if delays is None:
            self.fc = nn.Linear(in_features, neuron.size, bias=bias)
        elif bias:
            raise ArgumentError("bias", bias, "false with delays (a delayed projection has none)")
        else:
            self.fc = DelayedLinear(in_features, neuron.size, delays)
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
        bias = self.fc.bias
        if fused and self.autograd_reason is None:
            rec = None if self.rec is None else self.rec.weight
            # sparse data: projected inside the fused loop, per event (delays: a convolution)
            events = None if self.delayed else Events.of(x)
            if events is not None:
                return run_fused(self.neuron, events, rec, self.fc.weight, out_weight, bias)
            current = self.project(x, fused, spikes_in)
            return run_fused(self.neuron, current, rec, out_weight=out_weight)
        current = self.project(x, fused, spikes_in)
        spikes = run_neuron(self.neuron, current, self.rec, fused)
        if out_weight is None:
            return spikes
        return spikes, nn.functional.linear(spikes, out_weight)

    @property
    def delayed(self) -> bool:
        return isinstance(self.fc, DelayedLinear)

    def project(self, x: torch.Tensor, fused: bool = True, spikes_in: bool = False):
        """The feed-forward current ``[T, B, N]`` of ``x [T, B, C]`` (delayed, with delays)."""
        if self.delayed:
            return self.fc(x)
        return _linear(x, self.fc.weight, fused, spikes_in, self.fc.bias)


def _linear(x, weight, fused: bool, spikes_in: bool, bias=None) -> torch.Tensor:
    """``x @ weight.T (+ bias)``: event-driven for sparse data, boolean-saving for binary
    spikes."""
    if not fused:
        return nn.functional.linear(x, weight, bias)
    out = project_spikes(x, weight) if spikes_in and x.requires_grad else project(x, weight)
    return out if bias is None else out + bias


def run_neuron(
    neuron: Neuron, current: torch.Tensor, rec: nn.Linear | None = None, fused: bool = True
) -> torch.Tensor:
    """Spikes ``[T, B, N]`` of ``neuron`` driven by ``current`` and optional recurrence."""
    if fused and neuron.fused_reason() is None:
        return run_fused(neuron, current, None if rec is None else rec.weight)
    if rec is None:
        return neuron(current)
    return run_steps(neuron, current, neuron.initial_state(current.shape[1], current), rec)[0]


def run_steps(unit, current: torch.Tensor, state: tuple, rec: nn.Linear | None = None, z=None):
    """``unit.step`` at every step of ``current [T, B, N]`` from ``state``: ``(out, state)``.

    ``unit`` is a neuron or the leaky readout; ``out [T, B, N]`` stacks what its ``step``
    returns (spikes, or the readout membrane). With ``rec``, each step's input adds ``rec(z)``
    of the previous step's spikes ``z [B, N]`` (zeros when None: the start of a sequence).
    """
    coeffs = unit.coefficients()
    if rec is not None and z is None:
        z = current.new_zeros(current.shape[1:])
    outputs = []
    for current_t in current.unbind(0):
        if rec is not None:
            current_t = current_t + rec(z)
        z, state = unit.step(current_t, state, coeffs)
        outputs.append(z)
    return torch.stack(outputs), state


@dataclass(frozen=True)
class StreamState:
    """What a stream carries from one chunk to the next (:meth:`SpikingNetwork.stream`)."""

    layers: tuple[tuple[torch.Tensor, ...], ...]  # each hidden layer's neuron state
    spikes: tuple[torch.Tensor, ...]  # each hidden layer's spikes [B, N] at the last step
    readout: tuple[torch.Tensor, ...]  # the readout's state (leaky: (i, v); spiking: a neuron's)
    inputs: tuple[torch.Tensor | None, ...]  # delayed projections (hidden..., readout): their
    # last max_delay inputs; None where a projection has no delays
    decoded: torch.Tensor  # [B, K] the readout reduced over the steps so far (decode_more)
    steps: int  # time steps streamed so far


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
    ``delays`` (``{max_delay, sigma_init, sigma_final, sigma_epochs, readout}``,
    :class:`DelaySpec`; None: none) gives each hidden layer's feed-forward synapses (and with
    ``readout`` the readout's) learnable delays; ``delays`` in ``trainable`` trains them, and
    :meth:`anneal_delays` sets the kernels' width of each epoch.
    ``dropout``: in training, each hidden layer's spikes pass ``nn.functional.dropout`` before
    the next projection (the readout's too), a fresh mask per time step, sample and neuron (as
    SE-adLIF drops each step's spikes, ``models/pl_module.py`` ``forward``); the recorded
    spikes and the recurrence see the spikes undropped. ``bias``: every feed-forward projection
    (hidden layers and readout; not the recurrent one) has a trained bias, zero at the start.
    ``ignore_steps``: the readout's first steps that no decoding counts.
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
        readout_tau_syn: float | None = 5e-3,
        weight_init: FluctuationDriven | ScaledNormal | Uniform | None = None,
        time_loop: str = "fused",
        delays: Mapping | DelaySpec | None = None,
        dropout: float = 0.0,
        bias: bool = False,
        ignore_steps: int = 0,
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
        checks.boolean("bias", bias)
        if not (checks.is_number(dropout) and 0 <= dropout < 1):
            raise ArgumentError("dropout", dropout, "a probability in [0, 1)")
        checks.non_negative_int("ignore_steps", ignore_steps)
        trainable = selected_names(trainable)
        if not trainable:
            raise ArgumentError(
                "trainable", sorted(trainable), "at least one name, e.g. trainable=[weights]"
            )
        neuron_trainable = trainable - set(WEIGHT_SELECTIONS)
        self.delay_spec = DelaySpec.of(delays)
        if "delays" in trainable and self.delay_spec is None:
            raise ArgumentError(
                "trainable",
                sorted(trainable),
                "'delays' only with synaptic delays (model.network.delays: {max_delay: ...})",
            )

        self.decoding = decoding
        self.surrogate = surrogate
        self.fused = time_loop == "fused"
        self.dropout = float(dropout)
        self.ignore_steps = ignore_steps

        def make_neuron(size: int) -> Neuron:
            return neuron(
                size=size, surrogate=surrogate, trainable=neuron_trainable, tau_init=tau_init
            )

        self.layers = nn.ModuleList()
        sizes = [num_inputs, *hidden]
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            self.layers.append(
                SpikingLayer(n_in, make_neuron(n_out), recurrent, self.delay_spec, bias)
            )
        self.dt = self.layers[0].neuron.dt

        # bias with delays: refused by the first SpikingLayer already
        if self.delay_spec is not None and self.delay_spec.readout:
            self.readout_fc = DelayedLinear(hidden[-1], num_classes, self.delay_spec)
        else:
            self.readout_fc = nn.Linear(hidden[-1], num_classes, bias=bias)
        for module in self.projections():
            if module.bias is not None:  # as SE-adLIF (nn.Linear would draw them at random)
                nn.init.zeros_(module.bias)
        if decoding in SPIKING_DECODINGS:
            self.readout = make_neuron(num_classes)
        else:
            self.readout = LeakyReadout(num_classes, self.dt, readout_tau_mem, readout_tau_syn)
        self.weight_init = FluctuationDriven() if weight_init is None else weight_init
        self.weight_init.initialize(self)

        train_all = "weights" in trainable
        for name, p in self.named_parameters():
            if _is_weight(name):
                p.requires_grad_(train_all or ("readout" in trainable and _is_readout(name)))
        for projection in self.delayed_projections():
            projection.delay.requires_grad_("delays" in trainable)
        for index, layer in enumerate(self.layers):
            if self.fused and layer.autograd_reason is not None:
                log.warning("%s runs the autograd loop: %s", hidden_name(index),
                            layer.autograd_reason)  # fmt: skip

    def time_loops(self) -> dict[str, str]:
        """The time loop each layer runs, in words (``fused, C loops``, ...), by layer name."""
        like = self.readout_fc.weight
        loops = {
            hidden_name(i): describe(layer.neuron, like) if self.fused else "autograd loop"
            for i, layer in enumerate(self.layers)
        }
        if isinstance(self.readout, Neuron):
            loops["readout"] = describe(self.readout, like) if self.fused else "autograd loop"
        else:
            c_loop = self.fused and native.supports(like)
            loops["readout"] = f"leaky filter, {'C loop' if c_loop else 'PyTorch loop'}"
        return loops

    def calibrate(self, x: torch.Tensor) -> None:
        """Let the weight initialisation measure one batch ``x [T, B, C]`` (before training)."""
        self.weight_init.calibrate(self, x)

    def projections(self) -> list[nn.Module]:
        """The feed-forward projections: each hidden layer's, then the readout's."""
        return [*(layer.fc for layer in self.layers), self.readout_fc]

    def delayed_projections(self) -> list[DelayedLinear]:
        """The delayed projections (none without ``delays``)."""
        return [p for p in self.projections() if isinstance(p, DelayedLinear)]

    def anneal_delays(self, epoch: int) -> float | None:
        """Set every delay kernel's width to that of training epoch ``epoch``; return it."""
        if self.delay_spec is None:
            return None
        sigma = self.delay_spec.sigma(epoch)
        for projection in self.delayed_projections():
            projection.set_sigma(sigma)
        return sigma

    def clamp_delays(self) -> None:
        """Keep every delay in ``[0, max_delay]`` (after each optimiser step)."""
        for projection in self.delayed_projections():
            projection.clamp_()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters grouped by kind: ``weights`` (and biases), ``delays``, each
        neuron parameter, ``surrogate_beta``."""
        groups: dict[str, list[nn.Parameter]] = {}
        seen: set[int] = set()
        for name, p in self.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            leaf = name.rsplit(".", 1)[-1]
            if _is_weight(name):
                kind = "weights"
            elif leaf == "delay":
                kind = "delays"
            elif leaf == "log_beta":
                kind = "surrogate_beta"
            else:
                kind = leaf.removesuffix("_raw")
            groups.setdefault(kind, []).append(p)
        return groups

    def forward(self, x: torch.Tensor) -> NetworkOutput:
        if x.dim() == 3 and x.shape[0] <= self.ignore_steps:
            raise ArgumentError(
                "ignore_steps", self.ignore_steps, f"fewer than the input's {x.shape[0]} time steps"
            )
        spikes = {}
        h = x
        binary = False  # h holds only 0 and 1: the spikes of a fused layer
        drop = self.dropout > 0 and self.training
        for index, layer in enumerate(self.layers[:-1]):
            h = layer(h, self.fused, binary)
            spikes[hidden_name(index)] = h
            binary = self.fused and layer.autograd_reason is None
            if drop:
                h, binary = nn.functional.dropout(h, self.dropout), False
        last = self.layers[-1]
        if drop or isinstance(self.readout_fc, DelayedLinear):
            # dropped spikes are no longer 0/1, and a delayed readout convolves: projected
            # outside the layer
            h = spikes[hidden_name(len(self.layers) - 1)] = last(h, self.fused, binary)
            dropped = nn.functional.dropout(h, self.dropout) if drop else h
            if isinstance(self.readout_fc, DelayedLinear):
                current = self.readout_fc(dropped)
            else:
                current = nn.functional.linear(dropped, self.readout_fc.weight)
        else:  # the last hidden layer projects its spikes onto the readout (in a fused loop)
            h, current = last(h, self.fused, binary, self.readout_fc.weight)
            spikes[hidden_name(len(self.layers) - 1)] = h
        if self.readout_fc.bias is not None:
            current = current + self.readout_fc.bias
        if isinstance(self.readout, Neuron):
            readout = spikes["readout"] = run_neuron(self.readout, current, fused=self.fused)
        else:
            readout = self.readout(current, self.fused)
        logits = decode(readout[self.ignore_steps :], self.decoding)
        return NetworkOutput(logits=logits, readout=readout, spikes=spikes)

    # -- streaming ----------------------------------------------------------------------
    @torch.no_grad()
    def init_state(self, batch: int) -> StreamState:
        """The state of ``batch`` streams at their start (every neuron at rest, no steps)."""
        checks.positive_int("batch", batch)
        like = self.readout_fc.weight
        num_classes = self.readout_fc.out_features
        start = -math.inf if self.decoding == "max_membrane" else 0.0
        return StreamState(
            layers=tuple(layer.neuron.initial_state(batch, like) for layer in self.layers),
            spikes=tuple(like.new_zeros(batch, layer.neuron.size) for layer in self.layers),
            readout=self.readout.initial_state(batch, like),
            inputs=tuple(
                like.new_zeros(p.spec.max_delay, batch, p.in_features)
                if isinstance(p, DelayedLinear)
                else None
                for p in self.projections()
            ),
            decoded=like.new_full((batch, num_classes), start),
            steps=0,
        )

    @torch.no_grad()
    def stream(self, x: torch.Tensor, state: StreamState) -> tuple[NetworkOutput, StreamState]:
        """Run the next chunk ``x [t, B, C]`` of a stream from ``state``: ``(output, state)``.

        ``output.spikes`` and ``output.readout`` hold the chunk's ``t`` steps; ``output.logits``
        are decoded over every step streamed so far, so after the last chunk they are what
        :meth:`forward` gives for the whole sequence (in eval mode: no dropout). The steps run
        the neurons' ``step`` (as ``time_loop="autograd"``), without autograd; start a stream
        with :meth:`init_state`. Until ``ignore_steps`` steps have passed, the logits are those
        of no step (-inf for ``max_membrane``, else 0).
        """
        like = self.readout_fc.weight
        batch, inputs = state.decoded.shape[0], self.layers[0].fc.in_features
        if (
            x.dim() != 3
            or x.shape[0] < 1
            or tuple(x.shape[1:]) != (batch, inputs)
            or x.dtype != like.dtype
        ):
            raise ArgumentError(
                "x",
                f"{tuple(x.shape)} of {x.dtype}",
                f"a time-major chunk [t >= 1, {batch} (the state's batch), {inputs}] "
                f"of {like.dtype}",
            )
        spikes, layers, last, inputs = {}, [], [], []
        h = x
        with parametrize.cached():  # weights stored in units of their scale: computed once
            for index, (layer, neuron_state, z, past) in enumerate(
                zip(self.layers, state.layers, state.spikes, state.inputs[:-1], strict=True)
            ):
                current, past = _stream_projection(layer.fc, h, past)
                inputs.append(past)
                h, neuron_state = run_steps(layer.neuron, current, neuron_state, layer.rec, z)
                spikes[hidden_name(index)] = h
                layers.append(neuron_state)
                last.append(h[-1])
            current, past = _stream_projection(self.readout_fc, h, state.inputs[-1])
            inputs.append(past)
            readout, readout_state = run_steps(self.readout, current, state.readout)
        if isinstance(self.readout, Neuron):
            spikes["readout"] = readout
        counted = readout[max(0, self.ignore_steps - state.steps) :]  # after the ignored steps
        decoded = decode_more(state.decoded, counted, self.decoding)
        steps = state.steps + x.shape[0]
        logits = stream_scores(decoded, max(0, steps - self.ignore_steps), self.decoding)
        output = NetworkOutput(logits=logits, readout=readout, spikes=spikes)
        state = StreamState(
            tuple(layers), tuple(last), readout_state, tuple(inputs), decoded, steps
        )
        return output, state


def _stream_projection(projection: nn.Module, h: torch.Tensor, past: torch.Tensor | None):
    """``(current, past)`` of a stream's chunk ``h``: delayed after ``past``, or linear."""
    if isinstance(projection, DelayedLinear):
        return projection.stream(h, past)
    return nn.functional.linear(h, projection.weight, projection.bias), None


def _is_weight(name: str) -> bool:
    """A synaptic weight, stored plainly or in units of its scale (``weight_init.RowScale``),
    or a projection's bias: both train with the ``weights`` selection, in its group."""
    return name.endswith(("weight", "weight.original", "fc.bias"))


def _is_readout(name: str) -> bool:
    return name.startswith("readout_fc.")


def decode(readout: torch.Tensor, decoding: str) -> torch.Tensor:
    """Class scores ``[B, K]`` from a readout trace ``[T, B, K]`` (the steps that count)."""
    if decoding == "max_membrane":
        return readout.max(0).values
    if decoding == "softmax_sum":
        return readout.softmax(-1).sum(0)
    if decoding == "spike_count":
        return readout.sum(0)
    return readout.mean(0)  # mean_membrane, spike_rate


def decode_more(decoded: torch.Tensor, readout: torch.Tensor, decoding: str) -> torch.Tensor:
    """A stream's running reduction of its readout: ``decoded [B, K]`` of the earlier steps
    combined with the next chunk's trace ``readout [t, B, K]`` (max, or sum, over time)."""
    if readout.shape[0] == 0:
        return decoded
    if decoding == "max_membrane":
        return torch.maximum(decoded, readout.max(0).values)
    if decoding == "softmax_sum":
        return decoded + readout.softmax(-1).sum(0)
    return decoded + readout.sum(0)


def stream_scores(decoded: torch.Tensor, steps: int, decoding: str) -> torch.Tensor:
    """:func:`decode`'s class scores from a stream's running reduction over ``steps`` steps.

    Max, count and the softmax sum are exact; a mean's running sum adds chunk by chunk, so it
    can differ from :func:`decode`'s one reduction in the last bit.
    """
    if decoding in ("mean_membrane", "spike_rate"):
        return decoded / max(steps, 1)
    return decoded
