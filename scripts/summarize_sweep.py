"""Summarise a Hydra sweep: one row per job (its overrides, status and final metrics).

    python scripts/summarize_sweep.py outputs/multiruns/<time>
    python scripts/summarize_sweep.py SWEEP_DIR --x surrogate.beta --y test/acc --group surrogate

Every job directory under SWEEP_DIR (one holding ``.hydra/overrides.yaml`` or ``metrics.json``)
becomes a row. ``metrics.json`` is written by ``spikelight.train.train`` when a job ends: status
``ok`` with its metrics, or ``failed``/``interrupted`` with the reason. A job without it was killed
(or is still running); its last TensorBoard scalars are shown and its status is ``incomplete``.

Writes a markdown table to stdout (swept values and the chosen metrics), every override and
metric to ``SWEEP_DIR/summary.csv``, and a plot to ``SWEEP_DIR/summary.png``: the ``--y`` metric
against the ``--x`` override, one line per value of the other swept overrides (``--group``),
mean and standard deviation over seeds as error bars. Needs matplotlib for the plot only.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

OUTCOME_FILE = "metrics.json"  # spikelight.train.OUTCOME_FILE (not imported: no torch needed)
DEFAULT_METRICS = ("val/acc_best", "test/acc")
REASON_WIDTH = 100  # characters of a failure reason in the markdown table (the CSV has all)


@dataclass
class Job:
    """One job directory: its overrides (``key -> value`` strings), outcome and metrics."""

    name: str
    path: Path
    overrides: dict[str, str]
    status: str
    reason: str = ""
    metrics: dict[str, float | None] = field(default_factory=dict)


def is_seed_key(key: str) -> bool:
    return key == "seed" or key.endswith(".seed")


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """``["surrogate.beta=10", "+x=1"]`` -> ``{"surrogate.beta": "10", "x": "1"}``."""
    overrides = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        if sep and not key.startswith("~"):  # deletions (~key) carry no value
            overrides[key.lstrip("+")] = value
    return overrides


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Directories under ``sweep_dir`` that hold a job, in job-number order."""
    dirs = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    dirs |= {p.parent for p in sweep_dir.rglob(OUTCOME_FILE)}

    def order(path: Path):
        parts = path.relative_to(sweep_dir).parts
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]

    return sorted(dirs, key=order)


def last_tensorboard_scalars(job_dir: Path) -> dict[str, float]:
    """The last value of every scalar in the job's TensorBoard events ({} if none)."""
    files = sorted(job_dir.rglob("events.out.tfevents.*"))
    if not files:
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, float] = {}
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags().get("scalars", []):
            scalars[tag] = events.Scalars(tag)[-1].value
    return scalars


def read_job(sweep_dir: Path, job_dir: Path) -> Job:
    name = str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else job_dir.name
    record = {}
    outcome = job_dir / OUTCOME_FILE
    if outcome.is_file():
        record = json.loads(outcome.read_text())
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if overrides_file.is_file():
        overrides = parse_overrides(yaml.safe_load(overrides_file.read_text()) or [])
    else:
        overrides = parse_overrides(record.get("overrides", []))
    if record:
        return Job(
            name,
            job_dir,
            overrides,
            status=record.get("status", "unknown"),
            reason=record.get("reason") or "",
            metrics=record.get("metrics") or {},
        )
    return Job(
        name,
        job_dir,
        overrides,
        status="incomplete",
        reason=f"no {OUTCOME_FILE}: killed, still running, or not a spikelight run",
        metrics=last_tensorboard_scalars(job_dir),
    )


def varying_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value differs between jobs (or is missing in some), in order."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def as_number(value: str | None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def format_metric(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def status_text(job: Job, width: int | None = None) -> str:
    if job.status == "ok":
        return "ok"
    reason = " ".join(job.reason.split())
    if width is not None and len(reason) > width:
        reason = reason[: width - 3] + "..."
    return f"{job.status}: {reason}" if reason else job.status


def markdown_table(jobs: list[Job], keys: list[str], metrics: list[str]) -> str:
    header = ["job", *keys, *metrics, "status"]
    rows = [
        [
            job.name,
            *(job.overrides.get(k, "") for k in keys),
            *(format_metric(job.metrics.get(m)) for m in metrics),
            status_text(job, REASON_WIDTH),
        ]
        for job in jobs
    ]
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in lines)


def csv_text(jobs: list[Job]) -> str:
    """Every override and every metric of every job (full precision, full failure reason)."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    metrics = sorted({m for job in jobs for m in job.metrics})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["job", *keys, "status", "reason", *metrics, "path"])
    for job in jobs:
        values = [job.metrics.get(m) for m in metrics]
        writer.writerow(
            [
                job.name,
                *(job.overrides.get(k, "") for k in keys),
                job.status,
                job.reason,
                *("" if v is None else repr(float(v)) for v in values),
                str(job.path),
            ]
        )
    return buffer.getvalue()


def default_x(keys: list[str]) -> str | None:
    """``surrogate.beta`` if swept, else the first swept override with numeric values."""
    if "surrogate.beta" in keys:
        return "surrogate.beta"
    return next((k for k in keys if not is_seed_key(k)), None)


def sort_x(values: list[str]) -> tuple[list[str], bool]:
    """Override values in axis order (numeric when all are numbers) and whether they are."""
    numeric = all(as_number(v) is not None for v in values)
    return (sorted(values, key=as_number) if numeric else list(values)), numeric


def aggregate(
    jobs: list[Job], x_key: str, y_key: str, group_keys: list[str]
) -> dict[tuple[str, ...], list[tuple[str, float, float, int]]]:
    """``{group: [(x, mean, std, n), ...]}`` of ``y_key`` over the finished jobs (``ok``).

    Jobs with the same group and x (different seeds) are one point: their mean, sample standard
    deviation (0 for a single job) and count.
    """
    values: dict[tuple[str, ...], dict[str, list[float]]] = {}
    for job in jobs:
        y = job.metrics.get(y_key)
        if job.status != "ok" or y is None:
            continue
        group = tuple(job.overrides.get(k, "") for k in group_keys)
        values.setdefault(group, {}).setdefault(job.overrides.get(x_key, ""), []).append(float(y))
    points = {}
    for group, by_x in values.items():
        xs, _ = sort_x(list(by_x))
        points[group] = [
            (
                x,
                statistics.fmean(by_x[x]),
                statistics.stdev(by_x[x]) if len(by_x[x]) > 1 else 0.0,
                len(by_x[x]),
            )
            for x in xs
        ]
    return points


def plot(jobs: list[Job], x_key: str, y_key: str, group_keys: list[str], path: Path) -> int:
    """Draw ``y_key`` against ``x_key``, one line per group, seeds as error bars; lines drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = aggregate(jobs, x_key, y_key, group_keys)
    x_values, numeric = sort_x(list(dict.fromkeys(x for p in points.values() for x, *_ in p)))
    position = {v: (as_number(v) if numeric else float(i)) for i, v in enumerate(x_values)}
    figure, axes = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for group, line in points.items():
        axes.errorbar(
            [position[x] for x, *_ in line],
            [mean for _, mean, _, _ in line],
            yerr=[std for _, _, std, _ in line],
            marker="o",
            capsize=3,
            label=", ".join(group) if group else None,
        )
    if numeric and x_values:
        low, high = position[x_values[0]], position[x_values[-1]]
        if low > 0 and high / low >= 10:
            axes.set_xscale("log")
    else:
        axes.set_xticks(list(position.values()), list(position.keys()))
    axes.set_xlabel(x_key)
    axes.set_ylabel(y_key)
    seeds = [k for k in varying_keys(jobs) if is_seed_key(k)]
    spread = f"mean ± std over {', '.join(seeds)}" if seeds else "one run per point"
    axes.set_title(f"{y_key} ({spread})", fontsize=10)
    if group_keys:
        axes.legend(title=", ".join(group_keys), fontsize=8)
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return len(points)


def write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_text(text)
    temporary.replace(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (outputs/multiruns/..)")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help=f"metrics in the markdown table (default: those of {list(DEFAULT_METRICS)} logged)",
    )
    parser.add_argument("--x", help="override on the plot's x axis (default: surrogate.beta)")
    parser.add_argument("--y", help="metric on the y axis (default: test/acc, else the first)")
    parser.add_argument(
        "--group",
        nargs="*",
        help="overrides that make one line each (default: every swept override but x and seeds)",
    )
    parser.add_argument("--csv", type=Path, help="CSV path (default: SWEEP_DIR/summary.csv)")
    parser.add_argument("--plot", type=Path, help="plot path (default: SWEEP_DIR/summary.png)")
    parser.add_argument("--no-plot", action="store_true", help="write no plot")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sweep_dir = args.sweep_dir
    if not sweep_dir.is_dir():
        print(f"Error: SWEEP_DIR={str(sweep_dir)!r}: expected a sweep directory", file=sys.stderr)
        return 2
    jobs = [read_job(sweep_dir, d) for d in find_job_dirs(sweep_dir)]
    if not jobs:
        print(
            f"Error: SWEEP_DIR={str(sweep_dir)!r}: expected job directories holding "
            f".hydra/overrides.yaml or {OUTCOME_FILE}; found none",
            file=sys.stderr,
        )
        return 2
    logged = list(dict.fromkeys(m for job in jobs for m in job.metrics))
    metrics = args.metrics or [m for m in DEFAULT_METRICS if m in logged] or logged[:4]
    keys = varying_keys(jobs)
    fixed = [f"{k}={v}" for k, v in jobs[0].overrides.items() if k not in keys]

    print(f"Sweep {sweep_dir}: {len(jobs)} jobs")
    if fixed:
        print(f"Fixed overrides: {' '.join(fixed)}")
    print()
    print(markdown_table(jobs, keys, metrics))
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    print()
    print("Jobs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))

    csv_path = args.csv or sweep_dir / "summary.csv"
    write_text(csv_path, csv_text(jobs))
    print(f"CSV: {csv_path}")

    if args.no_plot:
        return 0
    x_key = args.x or default_x(keys)
    y_key = args.y or ("test/acc" if "test/acc" in logged else (metrics[0] if metrics else None))
    if x_key is None or y_key is None:
        print("Plot: skipped (no swept override for the x axis, or no metric)")
        return 0
    group_keys = (
        args.group
        if args.group is not None
        else [k for k in keys if k != x_key and not is_seed_key(k)]
    )
    plot_path = args.plot or sweep_dir / "summary.png"
    try:
        lines = plot(jobs, x_key, y_key, group_keys, plot_path)
    except ImportError:
        print("Plot: skipped (needs matplotlib: pip install -e '.[plots]')")
        return 0
    print(f"Plot: {plot_path} ({y_key} against {x_key}, {lines} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
