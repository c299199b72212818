"""The results as tables: text or markdown, the machine line, and the machine's description."""

from __future__ import annotations

import os
import platform
import time

import torch

from .checks import check_line
from .registry import dist_version

MIB = 2**20


def machine_info(device: torch.device) -> dict:
    """The CPU, GPU, versions and load a run was measured on."""
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
            name: dist_version(name)
            for name in (
                "spikelight",
                "snntorch",
                "norse",
                "spikingjelly",
                "cupy-cuda12x",
                "cupy-cuda13x",
                "triton",
                "nir",
                "nirtorch",
            )  # fmt: skip
        },
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    return info


def fmt(value, spec: str = ".1f", scale: float = 1.0, suffix: str = "") -> str:
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
                fmt(r.get("median_ms")),
                fmt(r.get("iqr_ms")),
                fmt(r.get("time_vs_reference"), ".2f"),
                fmt(r.get("time_vs_best_peer"), ".2f"),
                fmt(r.get("saved_bytes"), ".1f", MIB),
                fmt(r.get("peak_bytes"), ".1f", MIB),
                fmt(r.get("peak_vs_best_peer"), ".2f"),
                fmt(r.get("hidden_rate"), ".3f"),
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
                fmt(p["median_ms"]),
                fmt(p["us_per_sample_step"], ".2f"),
                fmt(p["saved_bytes"], ".1f", MIB),
                fmt(p["peak_bytes"], ".1f", MIB),
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
                f"{fmt(f['growth'], '.2f')}x ({f['ideal_growth']:.0f}x)",
            ]
        )
    tables.append(("least-squares fit cost = intercept + slope * size", header, lines))
    return tables


def rate_sweep_tables(sweep: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per case: spikelight's, the reference's and the fastest peer's step time at each rate."""
    header = [
        "target rate",
        "measured rate",
        "spikelight ms",
        "reference ms",
        "fastest peer ms",
        "spikelight x fastest peer",
        "spikelight x reference",
    ]
    tables = []
    for case in sweep["cases"]:
        lines = []
        for point in case["points"]:
            rows = {r["implementation"]: r for r in point["results"] if r["available"]}
            timed = [r for r in rows.values() if r["group"] == "peer" and "median_ms" in r]
            peer = min(timed, key=lambda r: r["median_ms"], default=None)
            spikelight = rows.get("spikelight", {})
            lines.append(
                [
                    "trained"
                    if point["target_rate"] is None
                    else f"{100 * point['target_rate']:g} %",
                    f"{100 * point['hidden_rate']:.2f} %",
                    fmt(spikelight.get("median_ms")),
                    fmt(rows.get("reference", {}).get("median_ms")),
                    "-" if peer is None else f"{peer['median_ms']:.1f} ({peer['implementation']})",
                    fmt(spikelight.get("time_vs_best_peer"), ".2f"),
                    fmt(spikelight.get("time_vs_reference"), ".2f"),
                ]
            )
        tables.append((f"rate sweep, {case_title(case)}", header, lines))
        profiled = [p for p in case["points"] if "profile" in p]
        if profiled:
            tables.append(profile_table(case, profiled))
    return tables


def profile_table(case: dict, points: list[dict]) -> tuple[str, list[str], list[list[str]]]:
    """spikelight's step by phase (ms per step) at each rate of the sweep."""
    phases = list(points[0]["profile"]["phases_ms"])
    header = ["measured rate", "step ms", *(f"{p} ms" for p in phases), "other ms"]
    lines = []
    for point in points:
        prof = point["profile"]
        lines.append(
            [
                f"{100 * point['hidden_rate']:.2f} %"
                + (" (trained)" if point["target_rate"] is None else ""),
                fmt(prof["step_ms"]),
                *(fmt(prof["phases_ms"][p]) for p in phases),
                fmt(prof["other_ms"]),
            ]
        )
    return (f"where the time goes, spikelight, {case_title(case)}", header, lines)


def neuron_loops_table(section: dict) -> tuple[str, list[str], list[list[str]]]:
    """Per neuron: fused and autograd step time, their ratio, the rates, and the check."""
    net = section["network"]
    title = (
        f"neuron loops, fused against autograd: recurrent {net['inputs']}-"
        f"{'-'.join(map(str, net['hidden']))}-{net['classes']}, T={net['T']}, "
        f"batch={net['batch']}, input density {net['input_density_measured']:.3f}, "
        f"SuperSpike beta {net['surrogate_beta']:g}, {net['dtype']}"
    )
    header = [
        "neuron",
        "fused ms",
        "fused IQR ms",
        "autograd ms",
        "autograd IQR ms",
        "autograd / fused",
        "hidden0 rate",
        "hidden1 rate",
        "fused loop (hidden layers)",
        "agreement (float64, asserted)",
    ]
    lines = []
    for r in section["results"]:
        loops = {v for k, v in r["time_loops"]["fused"].items() if k != "readout"}
        check = r["check"]["float64"]
        worst = max(check["max_rel_diff"], check["logits_rel_diff"])
        lines.append(
            [
                r["neuron"],
                fmt(r["fused"]["median_ms"]),
                fmt(r["fused"]["iqr_ms"]),
                fmt(r["autograd"]["median_ms"]),
                fmt(r["autograd"]["iqr_ms"]),
                fmt(r["autograd_vs_fused"], ".2f"),
                fmt(r["hidden_rates"]["hidden0"], ".3f"),
                fmt(r["hidden_rates"].get("hidden1"), ".3f"),
                "; ".join(sorted(loops)),
                f"{'passed' if r['check']['passed'] else 'FAILED'}, max rel diff {worst:.1e}",
            ]
        )
    return title, header, lines


def augment_table(section: dict) -> tuple[str, list[str], list[list[str]]]:
    """Per row of ``--augment``: ms from the stored events and from a dense batch."""
    b = section["batch"]
    title = (
        f"event augmentation per batch: B={b['batch']}, T={b['T']}, C={b['inputs']}, "
        f"density {b['density_measured']:.3f} ({section['events']} events), "
        f"settings of {section['recipe']}; writing the dense batch (densify) "
        f"{section['densify_ms']:.1f} ms"
    )
    header = ["transforms", "from events ms", "IQR ms", "extra over densify ms"]
    header += ["dense in ms", "IQR ms"]
    lines = [
        [
            r["row"],
            fmt(r["from_events"]["median_ms"]),
            fmt(r["from_events"]["iqr_ms"]),
            fmt(r["extra_ms"]),
            fmt(r["dense_in"]["median_ms"]),
            fmt(r["dense_in"]["iqr_ms"]),
        ]
        for r in section["results"]
    ]
    return title, header, lines


def case_title(case: dict) -> str:
    kind = "recurrent" if case["recurrent"] else "feed-forward"
    return (
        f"{case['name']}: {kind}, T={case['T']}, batch={case['batch']}, "
        f"{case['inputs']}-{case['hidden']}-{case['classes']}, "
        f"input density {case['input_density_measured']:.3f}"
    )


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def text_table(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    rows = [header, ["-" * w for w in widths], *lines]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def machine_line(machine: dict) -> str:
    cpus = f"{machine['cpus_usable']} usable CPUs"
    gpu = f", GPU {machine['gpu']}" if machine["gpu"] else ""
    peers = ", ".join(
        f"{k} {v}"
        for k, v in machine["versions"].items()
        if v and k in ("snntorch", "norse", "spikingjelly", "cupy-cuda12x", "cupy-cuda13x")
    )
    return (
        f"{machine['cpu']} ({cpus}), torch {machine['torch']} "
        f"({machine['torch_threads']} threads), device {machine['device']}{gpu}; "
        f"python {machine['python']}; peers: {peers or 'none installed'}"
    )


def render(results: dict, markdown: bool) -> str:
    table = markdown_table if markdown else text_table
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
        title = case_title(case)
        out += ["", f"### {title}" if markdown else title, "", table(*case_table(case))]
        out += ["\n" + check_line(c) for c in case["checks"]]
    if results["targets"]:
        out += ["", "### Targets" if markdown else "targets:", ""]
        for t in results["targets"]:
            met = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
            value = "-" if t["value"] is None else f"{t['value']:.2f}"
            out.append(f"- {t['case']}: {t['implementation']} {t['target']}: {value} -> {met}")
    tables = scaling_tables(results["scaling"]) if results["scaling"] else []
    if results.get("rate_sweep"):  # absent from files written before the sweep existed
        tables += rate_sweep_tables(results["rate_sweep"])
    if results.get("neuron_loops"):  # absent from files written before that section existed
        tables.append(neuron_loops_table(results["neuron_loops"]))
    if results.get("augment"):
        tables.append(augment_table(results["augment"]))
    for title, header, lines in tables:
        out += ["", f"### {title}" if markdown else title, "", table(header, lines)]
    return "\n".join(out)
