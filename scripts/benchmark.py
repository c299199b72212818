"""Time and memory of one SNN training step: spikelight, a plain-PyTorch reference, and peers.

    python scripts/benchmark.py                           # the three SHD-sized cases (minutes)
    python scripts/benchmark.py --case shd_recurrent      # one case
    python scripts/benchmark.py --scaling                 # cost against T and batch size
    python scripts/benchmark.py --all --markdown --json bench.json   # everything, as in docs/
    python scripts/benchmark.py --device cuda             # the same on a GPU

One *step* is a full training step of the SHD-sized classifier: forward over ``T`` time steps,
max-over-time cross-entropy, backward, ``zero_grad`` (no optimiser update: it costs the same for
every implementation). The network is 700 inputs (about 2% of the ``[T, B, 700]`` bins active,
seeded) -> 256 current-based LIF neurons (recurrent or feed-forward) -> 20-unit leaky-integrator
readout; dt 1 ms, tau_mem 10 ms, tau_syn 5 ms, SuperSpike beta 100, as ``experiment=shd``;
initial weights scaled for a hidden firing rate of about 4-5 % per step.

Implementations (rows), all in one process on the same input tensor and the same initial weights:

- ``spikelight``: :class:`spikelight.network.SpikingNetwork` through its public constructor (and a
  row per alternative time loop once the constructor has a ``time_loop`` argument);
- ``reference``: the same equations written as a straightforward PyTorch loop in this file. Before
  timing, loss and every weight gradient of each spikelight row are checked against it, asserted
  in float64 and reported for the timed float32 rows (:func:`run_checks`; a mismatch stops the
  run), so the rows compute the same thing;
- ``snnTorch`` and ``Norse`` when installed (optional; ``pip install --no-deps``, see
  docs/benchmarks.md): their own LIF modules at the same sizes. Their equations differ in
  normalisation details, so they are not checked for agreement.

Timing: ``--warmup`` steps each, then ``--repeats`` rounds; each round times one step of every
implementation (round-robin, rotating the order), so machine noise hits all rows alike. Reported:
median and interquartile range in ms, ratio to the reference and to the fastest peer.

Memory, two measures:

- ``saved``: bytes of the distinct storages autograd saves for backward during the forward
  (``torch.autograd.graph.saved_tensors_hooks``), excluding the weights and the input: the
  activation memory that grows with ``T * B``. Deterministic. Tensors a custom autograd Function
  keeps as plain ``ctx`` attributes instead of ``save_for_backward`` are not seen.
- ``peak``: growth of memory during one training step over what was in use before it. On CPU,
  measured in a fresh subprocess per implementation: peak resident set (``VmHWM`` reset through
  ``/proc/self/clear_refs``) minus resident set before the step, with glibc's mmap threshold fixed
  at 16 KiB so freed buffers go back to the OS. On CUDA: ``torch.cuda.max_memory_allocated`` minus
  ``memory_allocated`` before the step.

Adding a row: decorate a builder ``setup -> Bench`` with :func:`register`; ``Bench.step()`` is
what gets timed. A spikelight variant takes a few lines, e.g.::

    @register("spikelight (compiled)", group="spikelight", check=True)
    def build_spikelight_compiled(setup):
        return spikelight_bench(setup, wrap=torch.compile)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

SCHEMA = "spikelight-benchmark/1"

# Physics of the benchmarked network (experiment=shd).
DT = 1e-3
TAU_MEM = 10e-3
TAU_SYN = 5e-3
READOUT_TAU_MEM = 10e-3
READOUT_TAU_SYN = 5e-3
THRESHOLD = 1.0
BETA = 100.0  # SuperSpike / fast-sigmoid steepness
# Initial weights ~ N(0, (scale / sqrt(fan_in))^2), as spikelight draws them; the scales give a
# hidden firing rate of about 4-5% per step (reported per row), in the range of trained SHD models.
WEIGHT_SCALES = {"w_in": 8.0, "w_rec": 2.0, "w_out": 2.0}

DEFAULT_RTOL = 1e-6  # agreement of loss and gradients with the reference (relative, float64)
DEFAULT_RTOL_FLOAT32 = 1e-4  # the same where a row cannot run in float64
SCALING_T = (50, 100, 200, 400)  # at batch 64
SCALING_BATCH = (16, 32, 64, 128)  # at T = 100
SCALING_BASE = (100, 64)  # (T, batch) the other axis is held at
MIB = 2**20
MMAP_THRESHOLD = 16384  # bytes; glibc serves larger blocks by mmap, unmapped again on free


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- cases ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    T: int
    batch: int
    recurrent: bool = True
    inputs: int = 700
    hidden: int = 256
    classes: int = 20
    density: float = 0.02  # fraction of active input bins
    seed: int = 0


CASES = {
    "shd_recurrent": Case("shd_recurrent", T=100, batch=64),
    "shd_recurrent_long": Case("shd_recurrent_long", T=250, batch=128),
    "shd_feedforward": Case("shd_feedforward", T=100, batch=64, recurrent=False),
}


@dataclass
class Setup:
    """Everything an implementation is built from: sizes, device, data, initial weights."""

    case: Case
    device: torch.device
    dtype: torch.dtype  # of the input, the weights and every module
    x: torch.Tensor  # [T, B, inputs] float, 0/1
    y: torch.Tensor  # [B] long
    weights: dict[str, torch.Tensor]  # w_in [H, C], w_rec [H, H] (recurrent), w_out [K, H]


def make_setup(case: Case, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Setup:
    """Input, labels and initial weights of ``case``: the same for every seed-equal call."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(case.seed)
    x = (torch.rand(case.T, case.batch, case.inputs, generator=gen) < case.density).float()
    y = torch.randint(0, case.classes, (case.batch,), generator=gen)
    shapes = {"w_in": (case.hidden, case.inputs), "w_out": (case.classes, case.hidden)}
    if case.recurrent:
        shapes["w_rec"] = (case.hidden, case.hidden)
    weights = {
        name: torch.randn(shape, generator=gen) * (WEIGHT_SCALES[name] / math.sqrt(shape[1]))
        for name, shape in shapes.items()
    }
    return Setup(
        case,
        device,
        dtype,
        x.to(device, dtype),
        y.to(device),
        {k: w.to(device, dtype) for k, w in weights.items()},
    )


# -- implementations --------------------------------------------------------------------------
@dataclass
class Bench:
    """A built implementation: ``forward() -> (loss, hidden spikes [T, B, H])``."""

    module: nn.Module
    forward: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    params: dict[str, torch.Tensor]  # w_in, w_rec, w_out: the parameters holding those weights
    info: dict = field(default_factory=dict)

    def step(self) -> None:
        """One training step: forward, loss, backward, zero_grad.

        The spikes returned for checks are dropped before backward, as a training loop would,
        so memory counts only what each implementation itself keeps alive.
        """
        loss = self.forward()[0]
        loss.backward()
        self.module.zero_grad(set_to_none=True)


@dataclass(frozen=True)
class Implementation:
    name: str
    build: Callable[[Setup], Bench]
    group: str  # "spikelight" | "reference" | "peer"
    check: bool  # same equations as the reference: loss and gradients must agree
    available: Callable[[], str | None]  # None, or why this row cannot run
    hide_unavailable: bool  # leave the row out (rather than list it as unavailable)


IMPLEMENTATIONS: dict[str, Implementation] = {}


def register(
    name: str,
    group: str,
    check: bool = False,
    available: Callable[[], str | None] = lambda: None,
    hide_unavailable: bool = False,
):
    """Decorator adding a builder ``setup -> Bench`` as a row of every table."""

    def deco(build: Callable[[Setup], Bench]) -> Callable[[Setup], Bench]:
        IMPLEMENTATIONS[name] = Implementation(
            name, build, group, check, available, hide_unavailable
        )
        return build

    return deco


def requires(module: str) -> Callable[[], str | None]:
    def available() -> str | None:
        if importlib.util.find_spec(module) is None:
            return f"{module} not installed"
        return None

    return available


def _assign(param: torch.Tensor, value: torch.Tensor) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(f"weight shape {tuple(param.shape)} != {tuple(value.shape)}")
    with torch.no_grad():
        param.copy_(value)


# spikelight ---------------------------------------------------------------------------------
def spikelight_has_time_loop() -> bool:
    from spikelight.network import SpikingNetwork

    return "time_loop" in inspect.signature(SpikingNetwork).parameters


def spikelight_network(setup: Setup, **kwargs) -> nn.Module:
    """The benchmarked network, built through spikelight's public constructor, in setup.dtype."""
    from spikelight.network import SpikingNetwork
    from spikelight.neurons import LIF
    from spikelight.surrogates import SuperSpike
    from spikelight.weight_init import ScaledNormal

    case = setup.case
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(setup.dtype)  # neuron parameters are created in the default dtype
    try:
        net = SpikingNetwork(
            num_inputs=case.inputs,
            num_classes=case.classes,
            hidden=[case.hidden],
            neuron=functools.partial(
                LIF, dt=DT, tau_mem=TAU_MEM, tau_syn=TAU_SYN, threshold=THRESHOLD
            ),
            surrogate=SuperSpike(beta=BETA),
            recurrent=case.recurrent,
            decoding="max_membrane",
            readout_tau_mem=READOUT_TAU_MEM,
            readout_tau_syn=READOUT_TAU_SYN,
            weight_init=ScaledNormal(),  # plain weights: overwritten with the shared ones
            **kwargs,
        )
    finally:
        torch.set_default_dtype(default_dtype)
    return net.to(setup.device, setup.dtype)


def spikelight_params(net: nn.Module, recurrent: bool) -> dict[str, torch.Tensor]:
    named = dict(net.named_parameters())
    params = {"w_in": named["layers.0.fc.weight"], "w_out": named["readout_fc.weight"]}
    if recurrent:
        params["w_rec"] = named["layers.0.rec.weight"]
    return params


def spikelight_bench(
    setup: Setup, wrap: Callable[[nn.Module], Callable] | None = None, **kwargs
) -> Bench:
    """A spikelight row: constructor ``kwargs``; ``wrap`` (e.g. ``torch.compile``) the module."""
    net = spikelight_network(setup, **kwargs)
    params = spikelight_params(net, setup.case.recurrent)
    for name, p in params.items():
        _assign(p, setup.weights[name])
    model = net if wrap is None else wrap(net)
    x, y = setup.x, setup.y

    def forward():
        out = model(x)
        return F.cross_entropy(out.logits, y), out.spikes["hidden0"]

    info = dict(kwargs)
    if spikelight_has_time_loop() and "time_loop" not in info:
        from spikelight.network import SpikingNetwork

        info["time_loop"] = inspect.signature(SpikingNetwork).parameters["time_loop"].default
    return Bench(net, forward, params, info)


@register("spikelight", group="spikelight", check=True)
def build_spikelight(setup: Setup) -> Bench:
    """The constructor's defaults: what a user gets."""
    return spikelight_bench(setup)


@register(
    "spikelight (autograd loop)",
    group="spikelight",
    check=True,
    available=lambda: None if spikelight_has_time_loop() else "no time_loop argument",
    hide_unavailable=True,
)
def build_spikelight_autograd(setup: Setup) -> Bench:
    return spikelight_bench(setup, time_loop="autograd")


def spikelight_has_c_loops() -> str | None:
    from spikelight.neurons import fused

    return None if hasattr(fused, "NATIVE") else "no C loops in this version"


@register(
    "spikelight (PyTorch loops)",
    group="spikelight",
    check=True,
    available=spikelight_has_c_loops,
    hide_unavailable=True,
)
def build_spikelight_pytorch_loops(setup: Setup) -> Bench:
    """What runs without a C compiler (or with ``SPIKELIGHT_NATIVE=0``): the fused layer's
    loops issued as PyTorch operations. The forward pass picks the loops; backward follows."""
    from spikelight.neurons import fused

    bench = spikelight_bench(setup)
    forward = bench.forward

    def forward_without_c_loops():
        saved, fused.NATIVE = fused.NATIVE, False
        try:
            return forward()
        finally:
            fused.NATIVE = saved

    bench.forward = forward_without_c_loops
    return bench


@register(
    "spikelight (compiled)",
    group="spikelight",
    check=True,
    available=lambda: None if shutil.which("cc") else "torch.compile on CPU needs a C compiler",
)
def build_spikelight_compiled(setup: Setup) -> Bench:
    """``model.compile=true``: torch.compile around the network (fused loops stay eager)."""
    return spikelight_bench(setup, wrap=torch.compile)


# reference ----------------------------------------------------------------------------------
class SuperSpikeFn(torch.autograd.Function):
    """Heaviside forward; SuperSpike derivative ``1 / (beta |x| + 1)^2`` backward."""

    @staticmethod
    def forward(ctx, x, beta):
        ctx.save_for_backward(x)
        ctx.beta = beta
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (ctx.beta * x.abs() + 1.0) ** 2, None


class ReferenceSNN(nn.Module):
    """spikelight's LIF network as a plain PyTorch loop (the equations of ``neurons/lif.py``).

    Hidden layer, per step: ``i = a_syn i + W_in x_t + W_rec z_{t-1}``;
    ``v = a_mem v + (1 - a_mem) i``; ``z = H(v - thr)`` (SuperSpike backward);
    ``v = v - detach(z) thr``. Readout: ``i = a_syn i + W_out z_t``; ``v = a_mem v + (1 - a_mem) i``
    (no threshold); class scores = max over time of ``v``. Keyword arguments change the equations
    (used to check that the agreement check notices).
    """

    def __init__(
        self,
        weights: dict[str, torch.Tensor],
        tau_mem: float = TAU_MEM,
        tau_syn: float = TAU_SYN,
        readout_tau_mem: float = READOUT_TAU_MEM,
        readout_tau_syn: float = READOUT_TAU_SYN,
        threshold: float = THRESHOLD,
        beta: float = BETA,
        detach_reset: bool = True,
    ) -> None:
        super().__init__()
        self.w_in = nn.Parameter(weights["w_in"].clone())
        self.w_rec = nn.Parameter(weights["w_rec"].clone()) if "w_rec" in weights else None
        self.w_out = nn.Parameter(weights["w_out"].clone())
        self.a_mem, self.a_syn = math.exp(-DT / tau_mem), math.exp(-DT / tau_syn)
        self.ro_a_mem = math.exp(-DT / readout_tau_mem)
        self.ro_a_syn = math.exp(-DT / readout_tau_syn)
        self.threshold, self.beta, self.detach_reset = threshold, beta, detach_reset

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [T, B, C]`` -> (class scores [B, K], hidden spikes [T, B, H])."""
        current = F.linear(x, self.w_in)
        i = v = z = current.new_zeros(current.shape[1:])
        spikes = []
        for current_t in current.unbind(0):
            if self.w_rec is not None:
                current_t = current_t + F.linear(z, self.w_rec)
            i = self.a_syn * i + current_t
            v = self.a_mem * v + (1 - self.a_mem) * i
            z = SuperSpikeFn.apply(v - self.threshold, self.beta)
            v = v - (z.detach() if self.detach_reset else z) * self.threshold
            spikes.append(z)
        spikes = torch.stack(spikes)
        ro_current = F.linear(spikes, self.w_out)
        i = v = ro_current.new_zeros(ro_current.shape[1:])
        trace = []
        for current_t in ro_current.unbind(0):
            i = self.ro_a_syn * i + current_t
            v = self.ro_a_mem * v + (1 - self.ro_a_mem) * i
            trace.append(v)
        return torch.stack(trace).max(0).values, spikes


def reference_bench(setup: Setup, **equation_changes) -> Bench:
    net = ReferenceSNN(setup.weights, **equation_changes).to(setup.device, setup.dtype)
    x, y = setup.x, setup.y

    def forward():
        logits, spikes = net(x)
        return F.cross_entropy(logits, y), spikes

    params = {"w_in": net.w_in, "w_out": net.w_out}
    if net.w_rec is not None:
        params["w_rec"] = net.w_rec
    return Bench(net, forward, params, dict(equation_changes))


@register("reference", group="reference")
def build_reference(setup: Setup) -> Bench:
    return reference_bench(setup)


# peers --------------------------------------------------------------------------------------
@register("snnTorch", group="peer", available=requires("snntorch"))
def build_snntorch(setup: Setup) -> Bench:
    """snn.RSynaptic (snn.Synaptic feed-forward), fast_sigmoid(slope=beta), Synaptic readout.

    snnTorch's membrane integrates ``mem = beta mem + syn`` (no ``1 - beta`` factor), so the
    shared weights are scaled by ``1 - beta`` to give the same drive. The input projection runs
    over all time steps at once, as spikelight's does.
    """
    import snntorch as snn
    from snntorch import surrogate

    case = setup.case
    a_mem, a_syn = math.exp(-DT / TAU_MEM), math.exp(-DT / TAU_SYN)
    ro_a_mem, ro_a_syn = math.exp(-DT / READOUT_TAU_MEM), math.exp(-DT / READOUT_TAU_SYN)
    spike_grad = surrogate.fast_sigmoid(slope=BETA)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(case.inputs, case.hidden, bias=False)
            if case.recurrent:
                self.lif = snn.RSynaptic(
                    alpha=a_syn,
                    beta=a_mem,
                    linear_features=case.hidden,
                    threshold=THRESHOLD,
                    spike_grad=spike_grad,
                    reset_mechanism="subtract",
                )
            else:
                self.lif = snn.Synaptic(
                    alpha=a_syn,
                    beta=a_mem,
                    threshold=THRESHOLD,
                    spike_grad=spike_grad,
                    reset_mechanism="subtract",
                )
            self.fc_out = nn.Linear(case.hidden, case.classes, bias=False)
            self.readout = snn.Synaptic(
                alpha=ro_a_syn, beta=ro_a_mem, spike_grad=spike_grad, reset_mechanism="none"
            )

        def forward(self, x):
            current = self.fc(x)
            if case.recurrent:
                spk, syn, mem = self.lif.reset_mem()
            else:
                syn, mem = self.lif.reset_mem()
            spikes = []
            for current_t in current.unbind(0):
                if case.recurrent:
                    spk, syn, mem = self.lif(current_t, spk, syn, mem)
                else:
                    spk, syn, mem = self.lif(current_t, syn, mem)
                spikes.append(spk)
            spikes = torch.stack(spikes)
            ro_current = self.fc_out(spikes)
            syn, mem = self.readout.reset_mem()
            trace = []
            for current_t in ro_current.unbind(0):
                _, syn, mem = self.readout(current_t, syn, mem)
                trace.append(mem)
            return torch.stack(trace).max(0).values, spikes

    net = Net()
    params = {"w_in": net.fc.weight, "w_out": net.fc_out.weight}
    _assign(net.fc.weight, setup.weights["w_in"].cpu() * (1 - a_mem))
    _assign(net.fc_out.weight, setup.weights["w_out"].cpu() * (1 - ro_a_mem))
    if case.recurrent:
        params["w_rec"] = net.lif.recurrent.weight
        _assign(net.lif.recurrent.weight, setup.weights["w_rec"].cpu() * (1 - a_mem))
        _assign(net.lif.recurrent.bias, torch.zeros_like(net.lif.recurrent.bias))  # kept, at 0
    net = net.to(setup.device, setup.dtype)
    x, y = setup.x, setup.y

    def forward():
        logits, spikes = net(x)
        return F.cross_entropy(logits, y), spikes

    return Bench(net, forward, params, {"version": _version("snntorch")})


@register("Norse", group="peer", available=requires("norse"))
def build_norse(setup: Setup) -> Bench:
    """norse.torch.LIFRecurrent (LIF feed-forward after a Linear), method="super", LI readout.

    ``LIFRecurrent`` holds the input weights and projects the input inside its time loop (its own
    design); autapses are allowed so the recurrent weights are the shared ones.
    """
    import norse.torch as norse

    case = setup.case
    p = norse.LIFParameters(
        tau_syn_inv=torch.as_tensor(1 / TAU_SYN),
        tau_mem_inv=torch.as_tensor(1 / TAU_MEM),
        v_th=torch.as_tensor(THRESHOLD),
        method="super",
        alpha=torch.as_tensor(BETA),
    )
    p_out = norse.LIParameters(
        tau_syn_inv=torch.as_tensor(1 / READOUT_TAU_SYN),
        tau_mem_inv=torch.as_tensor(1 / READOUT_TAU_MEM),
    )

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            if case.recurrent:
                self.lif = norse.LIFRecurrent(
                    case.inputs,
                    case.hidden,
                    p=p,
                    dt=DT,
                    autapses=True,
                    input_weights=nn.Parameter(setup.weights["w_in"].cpu().clone()),
                    recurrent_weights=nn.Parameter(setup.weights["w_rec"].cpu().clone()),
                )
                self.fc = None
            else:
                self.fc = nn.Linear(case.inputs, case.hidden, bias=False)
                self.lif = norse.LIF(p=p, dt=DT)
            self.fc_out = nn.Linear(case.hidden, case.classes, bias=False)
            self.readout = norse.LI(p=p_out, dt=DT)

        def forward(self, x):
            spikes, _ = self.lif(x if self.fc is None else self.fc(x))
            v, _ = self.readout(self.fc_out(spikes))
            return v.max(0).values, spikes

    net = Net()
    _assign(net.fc_out.weight, setup.weights["w_out"].cpu())
    if case.recurrent:
        params = {"w_in": net.lif.input_weights, "w_rec": net.lif.recurrent_weights}
    else:
        _assign(net.fc.weight, setup.weights["w_in"].cpu())
        params = {"w_in": net.fc.weight}
    params["w_out"] = net.fc_out.weight
    net = net.to(setup.device, setup.dtype)
    x, y = setup.x, setup.y

    def forward():
        logits, spikes = net(x)
        return F.cross_entropy(logits, y), spikes

    return Bench(net, forward, params, {"version": _version("norse")})


# -- agreement check --------------------------------------------------------------------------
class AgreementError(AssertionError):
    """Two implementations meant to compute the same step disagree."""


def candidate_dtype(bench: Bench) -> torch.dtype:
    return next(iter(bench.params.values())).dtype


def run_checks(case: Case, impls, benches: dict[str, Bench], args) -> list[dict]:
    """Agreement of every ``check`` row with the reference, asserted in float64.

    float64, because the recurrent network is chaotic: at T=250, batch 128, float32 runs of the
    very same equations that differ only in the last bit of a decay constant flip a few dozen
    of 8 million spikes and then differ in their gradients by percents. In float64 the rows
    agree to about 1e-13. The float32 differences of the timed rows are reported alongside (not
    asserted); a row that cannot run in float64 is checked (asserted) in float32 instead.
    """
    to_check = [impl for impl in impls if impl.check and impl.name in benches]
    if not to_check:
        return []
    setup64 = make_setup(case, args.device, torch.float64)
    reference64 = build_reference(setup64)
    checks = []
    for impl in to_check:
        entry = {"implementation": impl.name, "against": "reference"}
        try:
            candidate64 = impl.build(setup64)
            _grads(candidate64)
        except Exception as err:  # no float64 support: assert the float32 agreement instead
            entry["float64"] = {"error": f"{type(err).__name__}: {err}"}
            entry["float32"] = check_agreement(
                benches[impl.name], benches["reference"], args.rtol_float32
            )
            entry["asserted"] = "float32"
        else:
            entry["float64"] = check_agreement(candidate64, reference64, args.rtol)
            entry["float32"] = check_agreement(
                benches[impl.name], benches["reference"], args.rtol_float32, strict=False
            )
            entry["asserted"] = "float64"
        entry["passed"] = True
        checks.append(entry)
        log(f"  check {check_line(entry)}")
    return checks


def check_line(entry: dict) -> str:
    """One line per agreement check, e.g. for the table's footer."""
    parts = []
    for dtype in ("float64", "float32"):
        r = entry[dtype]
        if "error" in r:
            parts.append(f"{dtype}: not run ({r['error']})")
            continue
        asserted = " (asserted)" if entry["asserted"] == dtype else " (not asserted)"
        parts.append(
            f"{dtype}{asserted}: loss rel diff {r['loss_rel_diff']:.1e}, max grad rel diff "
            f"{max(r['grad_rel_diff'].values()):.1e}, {r['spikes_differing']} of "
            f"{r['spikes']} spikes differ, rtol {r['rtol']:g}"
        )
    status = "passed" if entry["passed"] else "FAILED"
    return f"{entry['implementation']} == {entry['against']}: {status}; " + "; ".join(parts)


def _grads(bench: Bench) -> tuple[float, dict[str, torch.Tensor], torch.Tensor]:
    bench.module.zero_grad(set_to_none=True)
    loss, spikes = bench.forward()
    loss.backward()
    grads = {
        k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().double().clone()
        for k, p in bench.params.items()
    }
    bench.module.zero_grad(set_to_none=True)
    return loss.item(), grads, spikes.detach()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.norm().item()
    diff = (a - b).norm().item()
    return diff / scale if scale > 0 else diff


def check_agreement(
    candidate: Bench, reference: Bench, rtol: float = DEFAULT_RTOL_FLOAT32, strict: bool = True
) -> dict:
    """Loss and weight gradients of ``candidate`` equal ``reference``'s within ``rtol``.

    Relative differences: ``|loss_a - loss_b| / |loss_b|`` and, per weight matrix,
    ``||g_a - g_b|| / ||g_b||`` (Frobenius). Returns the differences; when ``strict``, raises
    :class:`AgreementError` if one exceeds ``rtol``.
    """
    loss_c, grads_c, spikes_c = _grads(candidate)
    loss_r, grads_r, spikes_r = _grads(reference)
    if set(grads_c) != set(grads_r):
        raise AgreementError(f"different weights: {sorted(grads_c)} vs {sorted(grads_r)}")
    result = {
        "loss": loss_c,
        "loss_reference": loss_r,
        "loss_rel_diff": abs(loss_c - loss_r) / max(abs(loss_r), 1e-30),
        "grad_rel_diff": {k: _rel(grads_c[k], grads_r[k]) for k in sorted(grads_r)},
        "spikes_differing": int((spikes_c != spikes_r).sum().item())
        if spikes_c.shape == spikes_r.shape
        else None,
        "spikes": spikes_r.numel(),
        "hidden_rate": spikes_r.float().mean().item(),
        "dtype": str(candidate_dtype(candidate)).removeprefix("torch."),
        "rtol": rtol,
    }
    worst = max(result["loss_rel_diff"], *result["grad_rel_diff"].values())
    finite = all(math.isfinite(v) for v in (loss_c, worst))
    result["max_rel_diff"] = worst
    result["passed"] = finite and worst <= rtol
    if strict and not result["passed"]:
        raise AgreementError(
            f"loss/gradients disagree (rtol {rtol:g}): loss {loss_c:.8g} vs {loss_r:.8g}, "
            f"gradient relative differences {result['grad_rel_diff']}, "
            f"{result['spikes_differing']} of {spikes_r.numel()} hidden spikes differ"
        )
    return result


# -- measurements -----------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(bench: Bench, device: torch.device) -> float:
    """Seconds of one ``bench.step()`` (device synchronised; Python GC paused)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _sync(device)
        start = time.perf_counter()
        bench.step()
        _sync(device)
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def time_round_robin(
    benches: dict[str, Bench], device: torch.device, warmup: int, repeats: int, label: str = ""
) -> dict[str, list[float]]:
    """Warm-up steps, then ``repeats`` rounds timing one step of each bench (rotating order)."""
    names = list(benches)
    for name in names:
        for _ in range(warmup):
            benches[name].step()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(timed_step(benches[name], device))
        gc.collect()
        if (r + 1) % max(1, repeats // 4) == 0 or r + 1 == repeats:
            log(f"  {label}round {r + 1}/{repeats}")
    return times


def saved_bytes(bench: Bench, setup: Setup) -> int:
    """Bytes of the distinct storages saved for backward by one forward, without weights/input."""
    excluded = {p.untyped_storage().data_ptr() for p in bench.module.parameters()}
    excluded.add(setup.x.untyped_storage().data_ptr())
    storages: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            key, size = (str(t.device), storage.data_ptr()), storage.nbytes()
            if storage.data_ptr() in excluded:
                return t
        except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
            key, size = (str(t.device), id(t)), t.numel() * t.element_size()
        storages[key] = size
        return t

    bench.module.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = bench.forward()
    total = sum(storages.values())
    del loss
    return total


def _proc_status() -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of this process in bytes (Linux)."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set size to the current one
        return True
    except OSError:
        return False


class _RssSampler:
    """Fallback where VmHWM cannot be reset: the largest RSS seen, sampled every 0.5 ms."""

    def __init__(self) -> None:
        self.peak = _proc_status()["VmRSS"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _proc_status()["VmRSS"])
            time.sleep(0.0005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def peak_step_memory(bench: Bench, device: torch.device, steps: int = 3) -> dict:
    """Peak memory growth of a training step over the memory in use before it (bytes).

    One warm-up step first (lazy initialisation, thread pools); then the median growth over
    ``steps`` steps. CPU: resident set size, meaningful in a fresh process (see ``--_child``).
    """
    bench.step()
    gc.collect()
    peaks = []
    for _ in range(steps):
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            bench.step()
            torch.cuda.synchronize(device)
            peaks.append(torch.cuda.max_memory_allocated(device) - before)
            method = "cuda_max_memory_allocated"
        elif _reset_peak_rss():
            before = _proc_status()["VmRSS"]
            bench.step()
            peaks.append(_proc_status()["VmHWM"] - before)
            method = "rss_hwm"
        else:
            before = _proc_status()["VmRSS"]
            with _RssSampler() as sampler:
                bench.step()
            peaks.append(sampler.peak - before)
            method = "rss_sampled"
    return {"peak_bytes": statistics.median(peaks), "peak_bytes_each": peaks, "method": method}


def child_main(spec: dict) -> dict:
    """``--_child``: build one implementation in this fresh process and measure its peak."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    setup = make_setup(Case(**spec["case"]), device)
    bench = IMPLEMENTATIONS[spec["impl"]].build(setup)
    return peak_step_memory(bench, device)


def peak_memory_subprocess(impl: str, case: Case, device: torch.device, timeout: float) -> dict:
    """Run :func:`child_main` in a fresh interpreter (glibc: freed buffers returned to the OS)."""
    spec = {
        "impl": impl,
        "case": dataclasses.asdict(case),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    env["GLIBC_TUNABLES"] = f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--_child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"memory subprocess for {impl!r} failed: {' | '.join(tail)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- running ----------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "versions": {
            name: _version(name) for name in ("spikelight", "snntorch", "norse", "nir", "nirtorch")
        },
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    return info


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, statistics.median(values), q3


def select_implementations(names: list[str] | None) -> list[Implementation]:
    if names:
        unknown = [n for n in names if n not in IMPLEMENTATIONS]
        if unknown:
            raise SystemExit(f"unknown --impl {unknown}; choose from {list(IMPLEMENTATIONS)}")
        if "reference" not in names:
            names = ["reference", *names]
    chosen = [impl for name, impl in IMPLEMENTATIONS.items() if not names or name in names]
    return [impl for impl in chosen if not (impl.hide_unavailable and impl.available())]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def measure_peak(name: str, setup: Setup, args) -> dict:
    """Peak step memory of implementation ``name``: CUDA in-process, CPU in a subprocess."""
    if setup.device.type == "cuda":  # the CUDA allocator's counters are exact in-process
        peak = peak_step_memory(IMPLEMENTATIONS[name].build(setup), setup.device)
        gc.collect()
        return peak
    return peak_memory_subprocess(name, setup.case, setup.device, args.child_timeout)


def run_case(case: Case, impls: list[Implementation], args, device: torch.device) -> dict:
    log(
        f"case {case.name}: T={case.T} batch={case.batch} hidden={case.hidden} "
        f"recurrent={case.recurrent}"
    )
    setup = make_setup(case, device)
    rows: dict[str, dict] = {}
    benches: dict[str, Bench] = {}
    for impl in impls:
        row = {"implementation": impl.name, "group": impl.group, "available": True}
        reason = impl.available()
        if reason is None:
            try:
                benches[impl.name] = impl.build(setup)
                row["info"] = benches[impl.name].info
            except Exception as err:  # a peer that does not run here: report, go on
                if impl.group != "peer":
                    raise
                reason = f"{type(err).__name__}: {err}"
        if reason is not None:
            row.update(available=False, reason=reason)
            log(f"  {impl.name}: not run ({reason})")
        rows[impl.name] = row

    checks = run_checks(case, impls, benches, args)

    for name, bench in benches.items():
        loss, spikes = bench.forward()
        rows[name]["loss"] = loss.item()
        rows[name]["hidden_rate"] = spikes.float().mean().item()
        del loss, spikes
        bench.module.zero_grad(set_to_none=True)
        if args.memory in ("both", "saved"):
            rows[name]["saved_bytes"] = saved_bytes(bench, setup)

    times = time_round_robin(benches, device, args.warmup, args.repeats, f"{case.name} ")
    for name, values in times.items():
        q1, med, q3 = _quantiles([1e3 * v for v in values])
        rows[name].update(
            median_ms=med, q1_ms=q1, q3_ms=q3, iqr_ms=q3 - q1, times_ms=[1e3 * v for v in values]
        )
    del benches
    gc.collect()

    if args.memory in ("both", "peak"):
        for name, row in rows.items():
            if not row["available"]:
                continue
            log(f"  peak memory: {name}")
            peak = measure_peak(name, setup, args)
            row.update(peak_bytes=peak["peak_bytes"], peak_method=peak["method"])

    add_ratios(list(rows.values()))
    return {
        **dataclasses.asdict(case),
        "input_density_measured": setup.x.mean().item(),
        "checks": checks,
        "results": list(rows.values()),
    }


def add_ratios(rows: list[dict]) -> None:
    """Ratios of time and memory to the reference and to the fastest / leanest peer."""
    ran = [r for r in rows if r["available"]]
    ref = next((r for r in ran if r["group"] == "reference"), None)
    peers = [r for r in ran if r["group"] == "peer"]
    for key, short in (("median_ms", "time"), ("peak_bytes", "peak"), ("saved_bytes", "saved")):
        best_peer = min((p[key] for p in peers if p.get(key) is not None), default=None)
        for r in ran:
            r[f"{short}_vs_reference"] = _ratio(r.get(key), ref.get(key) if ref else None)
            r[f"{short}_vs_best_peer"] = _ratio(r.get(key), best_peer)


def evaluate_targets(cases: list[dict]) -> list[dict]:
    """The issue's targets for every spikelight row, where the case ran at its default sizes."""
    specs = {
        "shd_recurrent": ("time_vs_best_peer", 1 / 3, "step time <= 1/3 of the fastest peer"),
        "shd_recurrent_long": ("peak_vs_best_peer", 1 / 2, "peak memory <= 1/2 of leanest peer"),
    }
    sizes = ("T", "batch", "hidden", "inputs", "density")
    targets = []
    for case in cases:
        if case["name"] not in specs:
            continue
        default = dataclasses.asdict(CASES[case["name"]])
        if any(case[k] != default[k] for k in sizes):
            continue
        key, limit, text = specs[case["name"]]
        for row in case["results"]:
            if row["group"] != "spikelight" or not row["available"]:
                continue
            value = row.get(key)
            targets.append(
                {
                    "case": case["name"],
                    "implementation": row["implementation"],
                    "target": text,
                    "metric": key,
                    "limit": limit,
                    "value": value,
                    "met": None if value is None else value <= limit,
                }
            )
    return targets


def _fit(xs: list[float], ys: list[float]) -> dict:
    slope, intercept = statistics.linear_regression(xs, ys)
    mean = statistics.fmean(ys)
    ss_tot = sum((y - mean) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    return {
        "slope": slope,
        "intercept": intercept,
        "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 1.0,
        "growth": ys[-1] / ys[0] if ys[0] > 0 else None,  # cost at largest size / at smallest
        "ideal_growth": xs[-1] / xs[0],  # the same if cost were proportional to size
    }


def run_scaling(impls: list[Implementation], args, device: torch.device) -> dict:
    """Time and memory of spikelight and the reference against T and against batch size.

    All (T, batch, implementation) combinations are timed in the same round-robin, so machine
    noise is shared across sizes too.
    """
    impls = [i for i in impls if i.group in ("spikelight", "reference") and not i.available()]
    base_T, base_B = args.scaling_base
    axes = {"T": [(t, base_B) for t in args.scaling_T]}
    axes["batch"] = [(base_T, b) for b in args.scaling_batch]
    sizes = list(dict.fromkeys(axes["T"] + axes["batch"]))
    setups, benches = {}, {}
    for T, batch in sizes:
        case = dataclasses.replace(
            CASES["shd_recurrent"], name="scaling", T=T, batch=batch, hidden=args.hidden
        )
        if args.inputs:
            case = dataclasses.replace(case, inputs=args.inputs)
        setups[T, batch] = make_setup(case, device)
        for impl in impls:
            benches[impl.name, T, batch] = impl.build(setups[T, batch])
    log(f"scaling: {len(sizes)} sizes x {len(impls)} implementations")
    times = time_round_robin(
        {f"{n} T={T} B={b}": bench for (n, T, b), bench in benches.items()},
        device,
        max(1, args.warmup // 2),
        args.repeats,
        "scaling ",
    )
    measured = {}
    for (name, T, batch), bench in benches.items():
        median = statistics.median(times[f"{name} T={T} B={batch}"])
        measured[name, T, batch] = {
            "median_ms": 1e3 * median,
            "us_per_sample_step": 1e6 * median / (T * batch),
            "saved_bytes": saved_bytes(bench, setups[T, batch])
            if args.memory in ("both", "saved")
            else None,
            "peak_bytes": None,
        }
    del benches
    gc.collect()
    if args.memory in ("both", "peak"):
        for (name, T, batch), point in measured.items():
            log(f"  peak memory: {name} T={T} batch={batch}")
            point["peak_bytes"] = measure_peak(name, setups[T, batch], args)["peak_bytes"]
    points, fits = [], []
    for axis, axis_sizes in axes.items():
        for impl in impls:
            pts = [
                {"axis": axis, "implementation": impl.name, "T": T, "batch": b}
                | measured[impl.name, T, b]
                for T, b in axis_sizes
            ]
            points += pts
            xs = [float(p[axis]) for p in pts]
            for metric in ("median_ms", "saved_bytes", "peak_bytes"):
                if len(xs) > 1 and pts[0][metric] is not None:
                    fit = _fit(xs, [float(p[metric]) for p in pts])
                    fits.append(
                        {"axis": axis, "implementation": impl.name, "metric": metric, **fit}
                    )
    return {"base": {"T": base_T, "batch": base_B}, "points": points, "fits": fits}


# -- reporting --------------------------------------------------------------------------------
def _fmt(value, spec: str = ".1f", scale: float = 1.0, suffix: str = "") -> str:
    return "-" if value is None else f"{value / scale:{spec}}{suffix}"


def case_table(case: dict) -> tuple[list[str], list[list[str]]]:
    header = [
        "implementation",
        "median ms",
        "IQR ms",
        "x reference",
        "x fastest peer",
        "saved MiB",
        "peak MiB",
        "peak x leanest peer",
        "hidden rate",
    ]
    lines = []
    for r in case["results"]:
        if not r["available"]:
            lines.append([r["implementation"], f"not run: {r['reason']}"] + [""] * 7)
            continue
        lines.append(
            [
                r["implementation"],
                _fmt(r.get("median_ms")),
                _fmt(r.get("iqr_ms")),
                _fmt(r.get("time_vs_reference"), ".2f"),
                _fmt(r.get("time_vs_best_peer"), ".2f"),
                _fmt(r.get("saved_bytes"), ".1f", MIB),
                _fmt(r.get("peak_bytes"), ".1f", MIB),
                _fmt(r.get("peak_vs_best_peer"), ".2f"),
                _fmt(r.get("hidden_rate"), ".3f"),
            ]
        )
    return header, lines


def scaling_tables(scaling: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    tables = []
    for axis in ("T", "batch"):
        pts = [p for p in scaling["points"] if p["axis"] == axis]
        header = [
            "implementation",
            "T",
            "batch",
            "median ms",
            "us per (T*B)",
            "saved MiB",
            "peak MiB",
        ]
        lines = [
            [
                p["implementation"],
                str(p["T"]),
                str(p["batch"]),
                _fmt(p["median_ms"]),
                _fmt(p["us_per_sample_step"], ".2f"),
                _fmt(p["saved_bytes"], ".1f", MIB),
                _fmt(p["peak_bytes"], ".1f", MIB),
            ]
            for p in pts
        ]
        tables.append((f"scaling in {axis}", header, lines))
    header = ["implementation", "axis", "metric", "slope", "intercept", "R^2", "growth (ideal)"]
    lines = []
    for f in scaling["fits"]:
        is_time = f["metric"] == "median_ms"
        unit, scale = ("ms", 1.0) if is_time else ("MiB", MIB)
        lines.append(
            [
                f["implementation"],
                f["axis"],
                {"median_ms": "time", "saved_bytes": "saved", "peak_bytes": "peak"}[f["metric"]],
                f"{f['slope'] / scale:.4g} {unit}/{f['axis']}",
                f"{f['intercept'] / scale:.3g} {unit}",
                f"{f['r2']:.4f}",
                f"{_fmt(f['growth'], '.2f')}x ({f['ideal_growth']:.0f}x)",
            ]
        )
    tables.append(("least-squares fit cost = intercept + slope * size", header, lines))
    return tables


def _markdown(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def _text(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    rows = [header, ["-" * w for w in widths], *lines]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def machine_line(machine: dict) -> str:
    cpus = f"{machine['cpus_usable']} usable CPUs"
    gpu = f", GPU {machine['gpu']}" if machine["gpu"] else ""
    peers = ", ".join(
        f"{k} {v}" for k, v in machine["versions"].items() if v and k in ("snntorch", "norse")
    )
    return (
        f"{machine['cpu']} ({cpus}), torch {machine['torch']} "
        f"({machine['torch_threads']} threads), device {machine['device']}{gpu}; "
        f"python {machine['python']}; peers: {peers or 'none installed'}"
    )


def render(results: dict, markdown: bool) -> str:
    table = _markdown if markdown else _text
    out = []
    if markdown:
        out += [
            f"Command: `{results['command']}`",
            "",
            f"Machine: {machine_line(results['machine'])}",
        ]
    else:
        out += [f"machine: {machine_line(results['machine'])}"]
    s = results["settings"]
    out.append(f"{s['repeats']} timed steps per row after {s['warmup']} warm-up steps, {s['date']}")
    for case in results["cases"]:
        kind = "recurrent" if case["recurrent"] else "feed-forward"
        title = (
            f"{case['name']}: {kind}, T={case['T']}, batch={case['batch']}, "
            f"{case['inputs']}-{case['hidden']}-{case['classes']}, "
            f"input density {case['input_density_measured']:.3f}"
        )
        out += ["", f"### {title}" if markdown else title, "", table(*case_table(case))]
        out += ["\n" + check_line(c) for c in case["checks"]]
    if results["targets"]:
        out += ["", "### Targets" if markdown else "targets:", ""]
        for t in results["targets"]:
            met = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
            value = "-" if t["value"] is None else f"{t['value']:.2f}"
            out.append(f"- {t['case']}: {t['implementation']} {t['target']}: {value} -> {met}")
    if results["scaling"]:
        for title, header, lines in scaling_tables(results["scaling"]):
            out += ["", f"### {title}" if markdown else title, "", table(header, lines)]
    return "\n".join(out)


# -- command line -----------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if len(values) < 2 or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected at least two positive integers, got {text!r}")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--case", action="append", choices=list(CASES), help="repeatable")
    p.add_argument("--scaling", action="store_true", help="time/memory against T and batch")
    p.add_argument("--all", action="store_true", help="every case and --scaling")
    p.add_argument("--impl", action="append", help=f"repeatable; from {list(IMPLEMENTATIONS)}")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--threads", type=_positive, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--repeats", type=_positive, default=11, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per row first")
    p.add_argument(
        "--memory",
        choices=("both", "saved", "peak", "none"),
        default="both",
        help="saved-for-backward bytes and/or peak step memory (CPU: a subprocess per row)",
    )
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="agreement, float64")
    p.add_argument(
        "--rtol-float32",
        type=float,
        default=DEFAULT_RTOL_FLOAT32,
        help="agreement where a row cannot run in float64",
    )
    p.add_argument("--T", type=_positive, help="override the cases' time steps")
    p.add_argument("--batch", type=_positive, help="override the cases' batch size")
    p.add_argument("--hidden", type=_positive, default=256, help="hidden LIF neurons")
    p.add_argument("--inputs", type=_positive, help="override the 700 input channels")
    p.add_argument("--density", type=float, help="fraction of active input bins (0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scaling-T", type=_int_list, default=list(SCALING_T), metavar="LIST")
    p.add_argument("--scaling-batch", type=_int_list, default=list(SCALING_BATCH), metavar="LIST")
    p.add_argument("--scaling-base", type=_int_list, default=list(SCALING_BASE), metavar="T,BATCH")
    p.add_argument("--child-timeout", type=float, default=600, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, metavar="PATH", help="write all results as JSON")
    p.add_argument("--markdown", action="store_true", help="print markdown tables")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args._child:
        print(json.dumps(child_main(json.loads(args._child))))
        return {}
    if args.density is not None and not 0 < args.density <= 1:
        raise SystemExit(f"--density must be in (0, 1], got {args.density}")
    if len(args.scaling_base) != 2:
        raise SystemExit(f"--scaling-base takes T,BATCH, got {args.scaling_base}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.json is not None and not args.json.parent.is_dir():
        raise SystemExit(f"--json {args.json}: directory {args.json.parent} does not exist")

    names = list(CASES) if args.all or not (args.case or args.scaling) else args.case or []
    cases = []
    for name in dict.fromkeys(names):
        case = dataclasses.replace(CASES[name], hidden=args.hidden, seed=args.seed)
        overrides = {"T": args.T, "batch": args.batch, "inputs": args.inputs}
        overrides["density"] = args.density
        case = dataclasses.replace(case, **{k: v for k, v in overrides.items() if v is not None})
        cases.append(case)

    impls = select_implementations(args.impl)
    machine = machine_info(device)
    log(f"machine: {machine_line(machine)}")
    results = {
        "schema": SCHEMA,
        "command": "python scripts/benchmark.py " + shlex.join(argv),
        "machine": machine,
        "settings": {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "memory": args.memory,
            "rtol": args.rtol,
            "rtol_float32": args.rtol_float32,
            "seed": args.seed,
            "date": machine["date"],
            "implementations": [i.name for i in impls],
            "physics": {
                "dt": DT,
                "tau_mem": TAU_MEM,
                "tau_syn": TAU_SYN,
                "readout_tau_mem": READOUT_TAU_MEM,
                "readout_tau_syn": READOUT_TAU_SYN,
                "threshold": THRESHOLD,
                "surrogate_beta": BETA,
                "weight_scales": WEIGHT_SCALES,
            },
        },
        "cases": [run_case(case, impls, args, device) for case in cases],
        "scaling": run_scaling(impls, args, device) if args.scaling or args.all else None,
    }
    results["targets"] = evaluate_targets(results["cases"])
    print(render(results, args.markdown))
    if args.json is not None:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(args.json)
        log(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
