"""Every neuron's fused time loop against its own autograd loop (issue 15): ``--neuron-loops``.

The network is the one issue 15 measured: 700 inputs (2 % of the bins active, seeded) -> two
recurrent hidden layers of 64 and 32 neurons of one kind -> 20-unit leaky readout decoded by
``max_membrane``; SuperSpike beta 10, trainable weights + ``tau_mem`` + threshold (IF has no
``tau_mem``), float32. Per neuron kind it is built twice, ``time_loop="fused"`` and
``time_loop="autograd"``, with the same parameters (``load_state_dict``). Before timing, loss,
logits and every trainable parameter's gradient of the two are asserted equal in float64 (the
float32 differences reported alongside); then one training step of each is timed round robin.

Weights: the network's own initialisation (:class:`~spikelight.weight_init.FluctuationDriven`,
calibrated on the seeded input, stored plainly), with a per-kind ``xi`` (the threshold's
distance from the mean membrane in standard deviations) where the default ``xi=1`` leaves the
first hidden layer outside 2-15 % spikes per step; see :data:`NEURON_KINDS`.
"""

from __future__ import annotations

import dataclasses
import functools
import gc

import torch
from torch.nn import functional as F

from . import log
from .cases import READOUT_TAU_MEM, READOUT_TAU_SYN, Case, Setup, make_setup
from .checks import AgreementError, check_agreement, rel
from .measure import time_round_robin
from .registry import Bench
from .runs import ratio, record_times
from .spikelight_rows import default_dtype

SURROGATE_BETA = 10.0  # SuperSpike steepness of issue 15's network
HIDDEN = (64, 32)
TIME_LOOPS = ("fused", "autograd")
DEFAULTS = {"T": 100, "batch": 32, "inputs": 700, "density": 0.02}  # issue 15's sizes
CLASSES = 20


@dataclasses.dataclass(frozen=True)
class NeuronKind:
    """A neuron of the comparison: its class, constructor options, what trains, and ``xi``."""

    cls: str  # name in spikelight.neurons
    options: dict
    trainable: tuple[str, ...]
    # FluctuationDriven's xi. At the default 1, the first hidden layer (T=100, batch 32, seed 0)
    # fires 0.35 % (IF: its membrane variance grows with time, so the kernel sums over T put
    # the threshold far out), 2.3 % (LIF), 1.6 % (ALIF), 5.8 % (adLIF), 4.3 % (adLIF Euler),
    # 4.9 % (RF); the values below put every kind at about 3.5-6 % (second layer 4-8 %).
    xi: float = 1.0


WITH_TAU = ("weights", "tau_mem", "threshold")
NEURON_KINDS = {
    "if": NeuronKind("IF", {}, ("weights", "threshold"), xi=0.2),
    "lif": NeuronKind("LIF", {}, WITH_TAU, xi=0.7),
    "alif": NeuronKind("ALIF", {}, WITH_TAU, xi=0.5),
    "adlif": NeuronKind("AdLIF", {"discretization": "symplectic"}, WITH_TAU),
    "adlif_euler": NeuronKind("AdLIF", {"discretization": "euler"}, WITH_TAU),
    "rf": NeuronKind("RF", {}, WITH_TAU),
}

#: issue 15's acceptance: autograd step time / fused step time at least this, at DEFAULTS
TARGET_SPEEDUP = {"adlif": 3.0, "adlif_euler": 3.0}


def build_network(kind: str, T: int, time_loop: str, dtype: torch.dtype, inputs: int):
    """Issue 15's network of neuron ``kind`` (weights drawn from torch's global generator)."""
    from spikelight import neurons
    from spikelight.network import SpikingNetwork
    from spikelight.surrogates import SuperSpike
    from spikelight.weight_init import FluctuationDriven

    spec = NEURON_KINDS[kind]
    with default_dtype(dtype):  # neuron parameters are created in the default dtype
        return SpikingNetwork(
            num_inputs=inputs,
            num_classes=CLASSES,
            hidden=list(HIDDEN),
            neuron=functools.partial(getattr(neurons, spec.cls), **spec.options),
            surrogate=SuperSpike(beta=SURROGATE_BETA),
            trainable=list(spec.trainable),
            recurrent=True,
            decoding="max_membrane",
            readout_tau_mem=READOUT_TAU_MEM,
            readout_tau_syn=READOUT_TAU_SYN,
            weight_init=FluctuationDriven(xi=spec.xi, num_steps=T, relative_lr=False),
            time_loop=time_loop,
        )


def copy_state(source, target) -> None:
    """Give ``target`` every parameter and buffer of ``source`` (cast to target's dtype)."""
    target.load_state_dict(source.state_dict())


def network_bench(net, x: torch.Tensor, y: torch.Tensor) -> Bench:
    """A :class:`Bench` of ``net``: cross-entropy on its logits; the first hidden layer's spikes."""

    def forward():
        out = net(x)
        return F.cross_entropy(out.logits, y), out.spikes["hidden0"]

    params = {name: p for name, p in net.named_parameters() if p.requires_grad}
    return Bench(net, forward, params, {"time_loops": net.time_loops()})


def twins(kind: str, case: Case, device: torch.device, x: torch.Tensor) -> dict:
    """``{dtype: {time_loop: network}}``, float32 and float64, all with one set of parameters.

    The float32 fused network is drawn (seeded) and calibrated on ``x``; the others copy it.
    """
    nets: dict[torch.dtype, dict] = {}
    for dtype in (torch.float32, torch.float64):
        nets[dtype] = {}
        for time_loop in TIME_LOOPS:
            torch.manual_seed(case.seed)
            net = build_network(kind, case.T, time_loop, dtype, case.inputs).to(device, dtype)
            if dtype == torch.float32 and time_loop == "fused":
                net.calibrate(x)
            else:
                copy_state(nets[torch.float32]["fused"], net)
            nets[dtype][time_loop] = net
    return nets


def check_twins(nets: dict, x: torch.Tensor, y: torch.Tensor, rtol: float, strict: bool) -> dict:
    """Loss and gradients (:func:`check_agreement`) and logits of the two loops agree.

    ``strict``: raise :class:`AgreementError` where they do not.
    """
    fused, autograd = (network_bench(nets[loop], x, y) for loop in TIME_LOOPS)
    result = check_agreement(fused, autograd, rtol, strict=strict)
    with torch.no_grad():
        logits = [nets[loop](x).logits.double() for loop in TIME_LOOPS]
    result["logits_rel_diff"] = rel(*logits)
    result["passed"] = result["passed"] and result["logits_rel_diff"] <= rtol
    if strict and not result["passed"]:
        raise AgreementError(
            f"logits disagree (rtol {rtol:g}): relative difference {result['logits_rel_diff']:.3g}"
        )
    return result


def run_kind(kind: str, setup: Setup, args) -> dict:
    """One neuron kind: the agreement check (float64, asserted), rates, and the timed steps."""
    x, y, device = setup.x, setup.y, setup.device
    nets = twins(kind, setup.case, device, x)
    check = {
        "against": "autograd",
        "float64": check_twins(nets[torch.float64], x.double(), y, args.rtol, strict=True),
        "float32": check_twins(nets[torch.float32], x, y, args.rtol_float32, strict=False),
        "asserted": "float64",
        "passed": True,
    }
    log(
        f"  check {kind}: fused == autograd in float64, max rel diff "
        f"{check['float64']['max_rel_diff']:.1e} (logits {check['float64']['logits_rel_diff']:.1e})"
    )
    timed = {loop: network_bench(net, x, y) for loop, net in nets[torch.float32].items()}
    del nets
    gc.collect()

    with torch.no_grad():
        rates = {
            name: s.float().mean().item() for name, s in timed["fused"].module(x).spikes.items()
        }
    times = time_round_robin(
        {f"{kind} {loop}": bench for loop, bench in timed.items()},
        device,
        args.warmup,
        args.repeats,
        f"{kind} ",
    )
    rows: dict[str, dict] = {loop: {} for loop in TIME_LOOPS}
    record_times(rows, {loop: times[f"{kind} {loop}"] for loop in TIME_LOOPS})
    spec = NEURON_KINDS[kind]
    result = {
        "neuron": kind,
        "class": spec.cls,
        "options": spec.options,
        "trainable": list(spec.trainable),
        "weight_init": repr(timed["fused"].module.weight_init) + ", calibrated on the input",
        "time_loops": {loop: bench.info["time_loops"] for loop, bench in timed.items()},
        "hidden_rate": rates["hidden0"],
        "hidden_rates": rates,
        "check": check,
        **rows,
        "autograd_vs_fused": ratio(rows["autograd"]["median_ms"], rows["fused"]["median_ms"]),
    }
    log(
        f"  {kind}: fused {rows['fused']['median_ms']:.1f} ms, autograd "
        f"{rows['autograd']['median_ms']:.1f} ms, x{result['autograd_vs_fused']:.2f}, hidden "
        f"rate {100 * rates['hidden0']:.2f} %"
    )
    return result


def section_case(args) -> Case:
    """The sizes of the run: issue 15's, with --T, --batch, --inputs, --density, --seed."""
    sizes = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    sizes = DEFAULTS | sizes
    return Case(
        "neuron_loops", hidden=HIDDEN[0], classes=CLASSES, recurrent=True, seed=args.seed, **sizes
    )


def run_neuron_loops(args, device: torch.device) -> dict:
    """``--neuron-loops``: every kind of :data:`NEURON_KINDS`, fused against autograd."""
    case = section_case(args)
    log(
        f"neuron loops: T={case.T} batch={case.batch} {case.inputs}-"
        f"{'-'.join(map(str, HIDDEN))}-{CLASSES} recurrent"
    )
    setup = make_setup(case, device)  # x and y only: the networks draw their own weights
    return {
        "network": {
            "T": case.T,
            "batch": case.batch,
            "inputs": case.inputs,
            "hidden": list(HIDDEN),
            "classes": CLASSES,
            "recurrent": True,
            "decoding": "max_membrane",
            "density": case.density,
            "input_density_measured": setup.x.mean().item(),
            "seed": case.seed,
            "surrogate_beta": SURROGATE_BETA,
            "dtype": "float32",
        },
        "results": [run_kind(kind, setup, args) for kind in NEURON_KINDS],
    }


def neuron_loop_targets(section: dict | None) -> list[dict]:
    """Issue 15's speed-up targets, where the section ran at issue 15's sizes."""
    if not section or any(section["network"][k] != v for k, v in DEFAULTS.items()):
        return []
    targets = []
    for row in section["results"]:
        limit = TARGET_SPEEDUP.get(row["neuron"])
        if limit is None:
            continue
        value = row["autograd_vs_fused"]
        targets.append(
            {
                "case": "neuron_loops",
                "implementation": row["neuron"],
                "target": f"fused step >= {limit:g}x its autograd loop",
                "metric": "autograd_vs_fused",
                "limit": limit,
                "value": value,
                "met": None if value is None else value >= limit,
            }
        )
    return targets
