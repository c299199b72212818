"""Step time against the hidden firing rate (issue 20): the input weights scaled to each target.

The fused layer's cost follows the number of spikes (events), a dense loop's does not, so the
ratios at the cases' 4-5 % say little about a network that fires more. For each target rate the
input weights ``w_in`` are multiplied by the factor at which spikelight's hidden layer fires at
that rate on the case's seeded input (recurrent and readout weights unchanged), found by
bisection on forward passes; every row is then built from the same scaled weights and timed.
"""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path

import torch

from . import log
from .cases import Case, Setup, make_setup
from .measure import time_round_robin
from .profile import profile_bench
from .registry import Implementation
from .runs import add_ratios, build_rows, record_forward, record_times
from .spikelight_rows import spikelight_bench
from .trained import trained_fits, trained_setup

RATE_SWEEP_CASES = ("shd_recurrent", "shd_feedforward")
DEFAULT_RATES = (2.0, 5.0, 10.0, 15.0, 25.0)  # percent of neuron-steps with a spike
MAX_FORWARD_PASSES = 40
MAX_SCALE = 2.0**16


def with_input_scale(setup: Setup, scale: float) -> Setup:
    """``setup`` with its input weights multiplied by ``scale`` (the other weights shared)."""
    return dataclasses.replace(
        setup, weights={**setup.weights, "w_in": setup.weights["w_in"] * scale}
    )


def find_input_scale(setup: Setup, target: float) -> dict:
    """The factor on ``w_in`` at which spikelight's hidden rate on ``setup.x`` is ``target``.

    ``target`` is a fraction of neuron-steps. Without input weights nothing fires, so the factor
    is bracketed in ``[0, hi]`` (``hi`` doubled from 1 until the rate reaches the target) and
    bisected until the rate is within 1 % of the target, or one spike of it where that is
    finer than the rate can resolve, or :data:`MAX_FORWARD_PASSES` passes have run. Returns the
    factor, the rate it gives and the number of forward passes.
    """
    bench = spikelight_bench(setup)
    w_in, base = bench.params["w_in"], setup.weights["w_in"]
    passes = 0

    def rate_at(scale: float) -> float:
        nonlocal passes
        passes += 1
        with torch.no_grad():
            w_in.copy_(base * scale)
            spikes = bench.forward()[1]
        return spikes.float().mean().item()

    neuron_steps = setup.case.T * setup.case.batch * setup.case.hidden
    tolerance = max(0.01 * target, 1 / neuron_steps)
    lo, hi = 0.0, 1.0
    rate = rate_at(hi)
    while rate < target:
        if hi >= MAX_SCALE:
            raise RuntimeError(
                f"hidden rate target {100 * target:g} % not reached in case {setup.case.name!r}: "
                f"{100 * rate:.2f} % with the input weights x{hi:g}"
            )
        lo, hi = hi, 2 * hi
        rate = rate_at(hi)
    best = (abs(rate - target), hi, rate)
    while best[0] > tolerance and passes < MAX_FORWARD_PASSES:
        mid = (lo + hi) / 2
        rate = rate_at(mid)
        best = min(best, (abs(rate - target), mid, rate))
        if rate < target:
            lo = mid
        else:
            hi = mid
    _, scale, rate = best
    return {"input_scale": scale, "hidden_rate": rate, "forward_passes": passes}


def time_point(setup: Setup, impls: list[Implementation], args, device, label: str) -> dict:
    """Every row's step time on ``setup`` (no memory), and spikelight's phases if profiled."""
    rows, benches = build_rows(setup, impls)
    for name, bench in benches.items():
        record_forward(rows[name], bench)
    record_times(rows, time_round_robin(benches, device, args.warmup, args.repeats, label))
    point = {}
    if getattr(args, "profile", False) and "spikelight" in benches:
        point["profile"] = profile_bench(benches["spikelight"], args.repeats)
    del benches
    gc.collect()
    add_ratios(list(rows.values()), metrics=(("median_ms", "time"),))
    return {**point, "results": list(rows.values())}


def run_rate_sweep(
    cases: list[Case],
    rates: list[float],
    impls: list[Implementation],
    args,
    device: torch.device,
    trained: tuple[Path, Path] | None = None,
) -> dict:
    """Every row's step time at each hidden-rate target (percent) in each case; no memory.

    ``trained`` (checkpoint, SHD-layout file): one more point, in the case of the checkpoint's
    recurrence, at the rate the trained network has on real input (:mod:`.trained`).
    """
    swept = []
    for case in cases:
        base = make_setup(case, device)
        points = []
        for percent in rates:
            found = find_input_scale(base, percent / 100)
            log(
                f"rate sweep {case.name}: target {percent:g} % -> input weights "
                f"x{found['input_scale']:.4g}, rate {100 * found['hidden_rate']:.2f} % "
                f"({found['forward_passes']} forward passes)"
            )
            setup = with_input_scale(base, found["input_scale"])
            point = time_point(setup, impls, args, device, f"{case.name} {percent:g}% ")
            points.append({"target_rate": percent / 100, **found, **point})
        if trained is not None and trained_fits(trained[0], case):
            setup = trained_setup(base, *trained)
            point = time_point(setup, impls, args, device, f"{case.name} trained ")
            rate = next(
                r["hidden_rate"] for r in point["results"] if r["implementation"] == "spikelight"
            )
            log(f"rate sweep {case.name}: trained network {trained[0]}, rate {100 * rate:.2f} %")
            points.append(
                {
                    "target_rate": None,
                    "trained": {"checkpoint": str(trained[0]), "data": str(trained[1])},
                    "input_density_measured": setup.case.density,
                    "hidden_rate": rate,
                    **point,
                }
            )
        swept.append(
            {
                **dataclasses.asdict(case),
                "input_density_measured": base.x.mean().item(),
                "points": points,
            }
        )
    return {"rates_percent": list(rates), "cases": swept}
