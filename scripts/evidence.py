"""Run the commands behind the figures in README.md and docs/ and keep their results as evidence.

    python scripts/evidence.py                 # every run below, one after another
    python scripts/evidence.py quick_start     # only the named ones
    python scripts/evidence.py --list          # names and commands
    python scripts/evidence.py --collect NAME  # copy the results of a run made before

A single run goes to ``outputs/evidence/<name>/``; its ``metrics.json`` (final metrics,
overrides, wall time) is copied to ``docs/evidence/<folder>/<name>.json``. A multirun goes to
``outputs/multiruns/<name>/``; each job's ``metrics.json`` is copied to
``docs/evidence/<name>/<job>.json`` next to the sweep's ``summary.csv``
(``scripts/summarize_sweep.py``). The tables in the docs quote these files and
``tests/test_evidence.py`` checks every figure against them; the slow test
``tests/test_documented_commands.py`` reruns the README's single runs and compares.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVIDENCE = ROOT / "docs" / "evidence"
MNIST = "data.data_dir=../shared/data/mnist"
# espeak-shd-dev: SHD's layout, not the official files (no md5 check); each epoch's test accuracy
# is logged beside the validation-selected one, and the per-epoch curve kept (csv logger)
ESPEAK = (
    "data.data_dir=../shared/data/espeak-shd-dev",
    "data.verify_checksums=false",
    "data.test_every_epoch=true",
    "logger=[tensorboard,csv]",
)
#: the per-epoch columns kept from a run's csv log (docs/results.md draws its curves from them)
CURVE = ("epoch", "train/acc", "val/acc", "val/acc_best", "test_epoch/acc", "test_epoch/acc_best")


@dataclass(frozen=True)
class Run:
    """One documented command: ``python train.py [-m] ARGS``."""

    args: tuple[str, ...]
    folder: str = "documented_commands"  # single runs: the evidence folder they share
    multirun: bool = False
    summary: tuple[str, ...] = ()  # extra scripts/summarize_sweep.py arguments

    @property
    def command(self) -> str:
        return " ".join(["python train.py", *(["-m"] if self.multirun else []), *self.args])


#: name -> run, with the arguments exactly as the docs print them
RUNS: dict[str, Run] = {
    # README.md and the first table of docs/results.md
    "quick_start": Run(("neuron=lif", "surrogate=superspike")),
    "randman_heterogeneous": Run(
        ("experiment=randman_heterogeneous", "trainable=[weights,tau_mem,tau_syn]")
    ),
    "alif_recurrent": Run(
        ("neuron=alif", "model.network.recurrent=true", "trainable=[weights,tau_adapt]")
    ),
    "heterogeneous_trained": Run(
        ("init=heterogeneous", "trainable=[weights,tau_mem,tau_syn]", "model.neuron_lr=1e-2")
    ),
    "reservoir": Run(("trainable=[readout]",)),
    "spike_count": Run(("model.network.decoding=spike_count",)),
    "recurrent": Run(("model.network.recurrent=true",)),
    "nir_reset_zero": Run(("neuron.reset=zero",)),  # the reset NIR can express (README: NIR)
    # docs/results.md: MNIST and the reproduced studies
    "mnist_seed0": Run(("experiment=mnist", MNIST), folder="mnist"),
    "mnist_seed1": Run(("experiment=mnist", MNIST, "seed=1"), folder="mnist"),
    "shd_best_seed0": Run(("experiment=shd_best", *ESPEAK), folder="shd"),
    "shd_best_seed1": Run(("experiment=shd_best", *ESPEAK, "seed=1"), folder="shd"),
    # shd_se_adlif's published schedule (300 epochs, constant lr) takes 4.4 h here: its first 30
    "shd_se_adlif_30_seed0": Run(
        ("experiment=shd_se_adlif", *ESPEAK, "trainer.max_epochs=30"), folder="shd"
    ),
    "shd_se_adlif_30_seed1": Run(
        ("experiment=shd_se_adlif", *ESPEAK, "trainer.max_epochs=30", "seed=1"), folder="shd"
    ),
    # shd_delays' published schedule (150 epochs) takes 4.2 h here: its 40-epoch schedule
    "shd_delays_40_seed0": Run(
        ("experiment=shd_delays", *ESPEAK, "trainer.max_epochs=40"), folder="shd"
    ),
    "shd_delays_40_seed1": Run(
        ("experiment=shd_delays", *ESPEAK, "trainer.max_epochs=40", "seed=1"), folder="shd"
    ),
    "if_mnist": Run(("experiment=if_mnist", MNIST), folder="if_mnist"),
    "if_mnist_3_epochs": Run(
        ("experiment=if_mnist", MNIST, "trainer.max_epochs=3"), folder="if_mnist"
    ),
    "heterogeneity_randman": Run(
        ("experiment=heterogeneity_randman",),
        multirun=True,
        summary=("--x", "trainable", "--group", "init"),
    ),
    "why_surrogate_randman": Run(
        ("experiment=glob(why_surrogate_randman*)",), multirun=True, summary=("--no-plot",)
    ),
    "why_surrogate_mnist": Run(
        ("experiment=glob(why_surrogate_mnist*)", "paths.data_dir=../shared/data"),
        multirun=True,
        summary=("--no-plot",),
    ),
    "surrogate_sweep": Run(
        ("experiment=surrogate_sweep",),
        multirun=True,
        summary=("--plot", str(ROOT / "docs" / "img" / "surrogate_sweep.png")),
    ),
}


def output_dir(name: str) -> Path:
    """Where the run (or the sweep) of RUNS[name] writes its files."""
    kind = "multiruns" if RUNS[name].multirun else "evidence"
    return ROOT / "outputs" / kind / name


def run(name: str) -> list[Path]:
    """Run one entry of RUNS, then :func:`collect` its evidence."""
    spec, out = RUNS[name], output_dir(name)
    print("$", spec.command, flush=True)
    shutil.rmtree(out, ignore_errors=True)
    key = "hydra.sweep.dir" if spec.multirun else "hydra.run.dir"
    call = [sys.executable, "train.py", *(["-m"] if spec.multirun else []), *spec.args]
    subprocess.run([*call, f"{key}={out}"], cwd=ROOT, check=True)
    return collect(name)


def collect(name: str) -> list[Path]:
    """Copy the result files of RUNS[name]'s finished run into docs/evidence/; return them."""
    spec, out = RUNS[name], output_dir(name)
    if not spec.multirun:
        target = EVIDENCE / spec.folder / f"{name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "metrics.json", target)
        curve = write_curve(out / "csv" / "metrics.csv", target.with_suffix(".epochs.csv"))
        return [target, *([curve] if curve else [])]
    summarize = [sys.executable, "scripts/summarize_sweep.py", str(out), *spec.summary]
    subprocess.run(summarize, cwd=ROOT, check=True)
    folder = EVIDENCE / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    written = [folder / "summary.csv"]
    shutil.copyfile(out / "summary.csv", written[0])
    for metrics in sorted(out.glob("*/metrics.json")):
        written.append(folder / f"{metrics.parent.name}.json")
        shutil.copyfile(metrics, written[-1])
    return written


def write_curve(log: Path, target: Path) -> Path | None:
    """One row per epoch of a csv log (its CURVE columns); None where the run kept no csv log.

    Lightning's csv logger writes a row per logging call (steps, the train and the validation
    epoch ends apart); the epoch's values are merged into one row here.
    """
    if not log.is_file():
        return None
    epochs: dict[int, dict[str, str]] = {}
    with log.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("epoch"):
                merged = epochs.setdefault(int(row["epoch"]), {})
                merged.update({k: row[k] for k in CURVE[1:] if row.get(k)})
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CURVE)
        for epoch, values in sorted(epochs.items()):
            if "val/acc" in values:  # an epoch cut short before its validation is left out
                writer.writerow([epoch, *(values.get(k, "") for k in CURVE[1:])])
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"some of {list(RUNS)} (default: all)")
    parser.add_argument("--list", action="store_true", help="print the runs and exit")
    parser.add_argument(
        "--collect", action="store_true", help="only copy the results of runs already made"
    )
    args = parser.parse_args(argv)
    if args.list:
        for name, spec in RUNS.items():
            print(f"{name}: {spec.command}")
        return 0
    unknown = sorted(set(args.names) - set(RUNS))
    if unknown:
        parser.error(f"unknown run name(s) {unknown}; expected some of {list(RUNS)}")
    for name in args.names or RUNS:
        for path in (collect if args.collect else run)(name):
            print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
