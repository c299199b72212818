"""Table and learning curves of the "why surrogate gradients" study (docs/results.md).

Reads multirun directories made by ``python train.py -m 'experiment=glob(why_surrogate_*)'``
(one job per condition; each job needs the ``csv`` logger, which the presets select), prints a
markdown table per dataset and draws the learning curves into one figure:

    python scripts/plot_why_surrogate.py outputs/multiruns/<randman> outputs/multiruns/<mnist>
    python scripts/plot_why_surrogate.py SWEEP_DIR ... --out docs/img/why_surrogate.png

For every job the table also shows the gradient norm of the hidden and readout weights on the
first training batch at initialisation (recomputed here from the job's resolved ``config.yaml``,
seeded as the run was) and the mean hidden-layer output, which is a spike rate in [0, 1] per
step for spiking networks and a smooth value for ``smooth_forward``. Wall time is ``seconds``
in the job's ``metrics.json`` (else the span between its first and last written file).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

#: preset suffix -> (label in table and legend, order)
CONDITIONS = {
    "_true_gradient_spiking_readout": "(a') true gradient, spiking readout",
    "_true_gradient": "(a) true gradient (Heaviside)",
    "_reservoir": "(b) reservoir (readout only)",
    "_smooth": "(c) smooth forward (sigmoid, no spikes)",
    "": "(d) surrogate gradient",
}


@dataclass
class Job:
    dataset: str
    condition: str
    path: Path
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    probe: dict[str, float] = field(default_factory=dict)
    wall_s: float = math.nan


def experiment_of(job_dir: Path) -> str | None:
    overrides = job_dir / ".hydra" / "overrides.yaml"
    if not overrides.is_file():
        return None
    for line in overrides.read_text().splitlines():
        line = line.strip().lstrip("- ").strip("'\"")
        if line.startswith("experiment="):
            return line.split("=", 1)[1]
    return None


def classify(experiment: str) -> tuple[str, str] | None:
    """``why_surrogate_mnist_reservoir`` -> (``mnist``, label of the reservoir condition)."""
    if not experiment.startswith("why_surrogate_"):
        return None
    rest = experiment.removeprefix("why_surrogate_")
    dataset, _, suffix = rest.partition("_")
    for key, label in CONDITIONS.items():  # longest suffixes first
        if ("_" + suffix if suffix else "") == key:
            return dataset, label
    return None


def read_metrics(job_dir: Path) -> tuple[dict, dict]:
    """Curves ``name -> [(x, value)]`` (train loss by step, val acc by epoch) and final values."""
    files = sorted(job_dir.glob("csv/**/metrics.csv"))
    if not files:
        raise FileNotFoundError(f"{job_dir}: no csv/metrics.csv (run with the csv logger)")
    curves: dict[str, list[tuple[float, float]]] = {"train/loss_step": [], "val/acc": []}
    final: dict[str, float] = {}
    with open(files[0], newline="") as handle:
        for row in csv.DictReader(handle):
            for name, axis in (("train/loss_step", "step"), ("val/acc", "epoch")):
                if row.get(name):
                    curves[name].append((float(row[axis]) + (name == "val/acc"), float(row[name])))
            for name in ("val/acc_best", "test/acc"):
                if row.get(name):
                    final[name] = float(row[name])
    return curves, final


def probe_gradients(job_dir: Path) -> dict[str, float]:
    """Gradient norms on the first training batch at initialisation, and hidden output stats."""
    import hydra
    import lightning as L
    import torch
    from omegaconf import OmegaConf
    from torch.nn import functional as F

    from spikelight.resolvers import register_resolvers

    register_resolvers()
    cfg = OmegaConf.load(job_dir / "config.yaml")
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    x = datamodule.encode(x, train=True) if hasattr(datamodule, "encode") else x
    out = model.network(x.float().transpose(0, 1))
    F.cross_entropy(out.logits, y).backward()
    net = model.network

    def norm(weights) -> float:
        grads = [w.grad for w in weights if w.grad is not None]
        if not grads:
            return math.nan  # not trained (reservoir: hidden weights have no gradient at all)
        return float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))

    hidden = out.spikes["hidden0"].detach()
    return {
        "grad_hidden": norm([layer.fc.weight for layer in net.layers]),
        "grad_readout": norm([net.readout_fc.weight]),
        "hidden_mean": float(hidden.mean()),
        "hidden_binary": float(((hidden == 0) | (hidden == 1)).float().mean()),
    }


def wall_time(job_dir: Path) -> float:
    """``seconds`` from the job's ``metrics.json``, else the span of its files' write times."""
    outcome = job_dir / "metrics.json"
    if outcome.is_file():
        seconds = json.loads(outcome.read_text()).get("seconds")
        if seconds is not None:
            return float(seconds)
    times = [p.stat().st_mtime for p in job_dir.rglob("*") if p.is_file()]
    return max(times) - min(times) if times else math.nan


def collect(sweep_dirs: list[Path]) -> list[Job]:
    jobs = []
    for sweep_dir in sweep_dirs:
        if not sweep_dir.is_dir():
            raise FileNotFoundError(f"{sweep_dir} is not a directory")
        for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
            experiment = experiment_of(job_dir)
            kind = classify(experiment) if experiment else None
            if kind is None:
                continue
            job = Job(*kind, job_dir)
            job.curves, job.final = read_metrics(job_dir)
            job.probe = probe_gradients(job_dir)
            job.wall_s = wall_time(job_dir)
            jobs.append(job)
    if not jobs:
        raise SystemExit(f"no why_surrogate_* jobs found under {[str(d) for d in sweep_dirs]}")
    order = list(CONDITIONS.values())
    jobs.sort(key=lambda j: (j.dataset, order.index(j.condition)))
    return jobs


def fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def table(jobs: list[Job]) -> str:
    lines = []
    for dataset in dict.fromkeys(j.dataset for j in jobs):
        lines += [
            f"\n{dataset}\n",
            "| condition | val/acc_best | test/acc | grad norm, hidden weights | "
            "grad norm, readout | hidden output: mean, binary fraction | wall time |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for j in (j for j in jobs if j.dataset == dataset):
            p = j.probe
            lines.append(
                f"| {j.condition} | {fmt(j.final.get('val/acc_best'))} | "
                f"{fmt(j.final.get('test/acc'))} | {fmt(p['grad_hidden'], 3)} | "
                f"{fmt(p['grad_readout'], 3)} | {p['hidden_mean']:.3f}, "
                f"{p['hidden_binary']:.3f} | {j.wall_s:.0f} s |"
            )
    return "\n".join(lines)


def plot(jobs: list[Job], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(j.dataset for j in jobs))
    fig, axes = plt.subplots(len(datasets), 2, figsize=(10, 3.2 * len(datasets)), squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = dict(zip(CONDITIONS.values(), palette[: len(CONDITIONS)], strict=True))
    for row, dataset in zip(axes, datasets, strict=True):
        for j in (j for j in jobs if j.dataset == dataset):
            style = dict(color=colors[j.condition], label=j.condition)
            if j.condition == CONDITIONS["_true_gradient"]:  # drawn over (b), which it equals
                style.update(linestyle="--", linewidth=2.5, zorder=3)
            if j.curves["train/loss_step"]:
                row[0].plot(*zip(*j.curves["train/loss_step"], strict=True), **style)
            if j.curves["val/acc"]:
                row[1].plot(*zip(*j.curves["val/acc"], strict=True), marker="o", **style)
        row[0].set(title=f"{dataset}: training loss", xlabel="optimiser step", ylabel="loss")
        row[1].set(title=f"{dataset}: validation accuracy", xlabel="epoch", ylabel="accuracy")
        row[1].set_ylim(0, 1)
        row[1].xaxis.get_major_locator().set_params(integer=True)
    axes[0][1].legend(fontsize=7, frameon=False, loc="center right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dirs", type=Path, nargs="+", help="multirun directories")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs/img/why_surrogate.png")
    args = parser.parse_args(argv)
    try:
        jobs = collect(args.sweep_dirs)
    except FileNotFoundError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    print(table(jobs))
    plot(jobs, args.out)
    print(f"\nwrote {args.out}\ncommand: python scripts/plot_why_surrogate.py {' '.join(argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
