"""The runs: each case's rows side by side, the targets, and the scaling in T and batch."""

from __future__ import annotations

import dataclasses
import gc
import statistics

import torch

from . import log
from .cases import CASES, Case, Setup, make_setup
from .checks import run_checks
from .measure import measure_peak, quantiles, saved_bytes, time_round_robin
from .registry import Bench, Implementation

RATIO_METRICS = (("median_ms", "time"), ("peak_bytes", "peak"), ("saved_bytes", "saved"))


def build_rows(setup: Setup, impls: list[Implementation]) -> tuple[dict[str, dict], dict]:
    """Each row's entry and, for those that run here, its built :class:`Bench`.

    A peer that fails to build is reported as not run; any other row's failure stops the run.
    """
    rows: dict[str, dict] = {}
    benches: dict[str, Bench] = {}
    for impl in impls:
        row = {"implementation": impl.name, "group": impl.group, "available": True}
        reason = impl.available()
        if reason is None:
            try:
                benches[impl.name] = impl.build(setup)
                row["info"] = benches[impl.name].info
                if impl.group == "peer":  # a trial step: kernels that fail to build fail here
                    benches[impl.name].step()
            except Exception as err:  # a peer that does not run here: report, go on
                if impl.group != "peer":
                    raise
                benches.pop(impl.name, None)
                reason = f"{type(err).__name__}: {err}"
        if reason is not None:
            row.update(available=False, reason=reason)
            log(f"  {impl.name}: not run ({reason})")
        rows[impl.name] = row
    return rows, benches


def record_forward(row: dict, bench: Bench) -> None:
    """The row's loss and hidden firing rate (fraction of neuron-steps) at its initial weights."""
    loss, spikes = bench.forward()
    row["loss"] = loss.item()
    row["hidden_rate"] = spikes.float().mean().item()
    del loss, spikes
    bench.module.zero_grad(set_to_none=True)


def record_times(rows: dict[str, dict], times: dict[str, list[float]]) -> None:
    """Median, quartiles and every timed step (ms) of each row from the round robin's seconds."""
    for name, values in times.items():
        q1, med, q3 = quantiles([1e3 * v for v in values])
        rows[name].update(
            median_ms=med, q1_ms=q1, q3_ms=q3, iqr_ms=q3 - q1, times_ms=[1e3 * v for v in values]
        )


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def add_ratios(rows: list[dict], metrics=RATIO_METRICS) -> None:
    """Ratios of time and memory to the reference and to the fastest / leanest peer."""
    ran = [r for r in rows if r["available"]]
    ref = next((r for r in ran if r["group"] == "reference"), None)
    peers = [r for r in ran if r["group"] == "peer"]
    for key, short in metrics:
        best_peer = min((p[key] for p in peers if p.get(key) is not None), default=None)
        for r in ran:
            r[f"{short}_vs_reference"] = ratio(r.get(key), ref.get(key) if ref else None)
            r[f"{short}_vs_best_peer"] = ratio(r.get(key), best_peer)


def run_case(case: Case, impls: list[Implementation], args, device: torch.device) -> dict:
    log(
        f"case {case.name}: T={case.T} batch={case.batch} hidden={case.hidden} "
        f"recurrent={case.recurrent}"
    )
    setup = make_setup(case, device)
    rows, benches = build_rows(setup, impls)
    checks = run_checks(case, impls, benches, args)

    for name, bench in benches.items():
        record_forward(rows[name], bench)
        if args.memory in ("both", "saved"):
            rows[name]["saved_bytes"] = saved_bytes(bench, setup)

    record_times(
        rows, time_round_robin(benches, device, args.warmup, args.repeats, f"{case.name} ")
    )
    del benches
    gc.collect()

    if args.memory in ("both", "peak"):
        for name, row in rows.items():
            if not row["available"]:
                continue
            log(f"  peak memory: {name}")
            peak = measure_peak(name, setup, args.child_timeout)
            row.update(peak_bytes=peak["peak_bytes"], peak_method=peak["method"])

    add_ratios(list(rows.values()))
    return {
        **dataclasses.asdict(case),
        "input_density_measured": setup.x.mean().item(),
        "checks": checks,
        "results": list(rows.values()),
    }


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


def line_fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares line ``ys = intercept + slope * xs``, its R^2, and the growth over xs."""
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
            CASES["shd_recurrent"], name="scaling", T=T, batch=batch,
            hidden=args.hidden or CASES["shd_recurrent"].hidden,
        )  # fmt: skip
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
            point["peak_bytes"] = measure_peak(name, setups[T, batch], args.child_timeout)[
                "peak_bytes"
            ]
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
                    line = line_fit(xs, [float(p[metric]) for p in pts])
                    fits.append(
                        {"axis": axis, "implementation": impl.name, "metric": metric, **line}
                    )
    return {"base": {"T": base_T, "batch": base_B}, "points": points, "fits": fits}
