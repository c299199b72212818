"""The command line: ``python scripts/benchmark.py ...`` (options: ``--help``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import torch

from . import __doc__ as DESCRIPTION
from . import log
from .augment import run_augment
from .cases import (
    BETA,
    CASES,
    DT,
    READOUT_TAU_MEM,
    READOUT_TAU_SYN,
    TAU_MEM,
    TAU_SYN,
    THRESHOLD,
    WEIGHT_SCALES,
    Case,
    default_cases,
)
from .checks import DEFAULT_RTOL, DEFAULT_RTOL_FLOAT32
from .measure import child_main
from .neuron_loops import NEURON_KINDS, neuron_loop_targets, run_neuron_loops
from .rates import DEFAULT_RATES, RATE_SWEEP_CASES, run_rate_sweep
from .registry import implementations, select_implementations
from .report import machine_info, machine_line, render
from .runs import evaluate_targets, run_case, run_scaling

SCHEMA = "spikelight-benchmark/1"
SCALING_T = (50, 100, 200, 400)  # at batch 64
SCALING_BATCH = (16, 32, 64, 128)  # at T = 100
SCALING_BASE = (100, 64)  # (T, batch) the other axis is held at


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if len(values) < 2 or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected at least two positive integers, got {text!r}")
    return values


def rate_list(text: str) -> list[float]:
    """``--rates``: hidden firing-rate targets, percent of neuron-steps, each in (0, 100)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated percentages, got {text!r}"
        ) from None
    if not values or any(not 0 < v < 100 for v in values):
        raise argparse.ArgumentTypeError(f"expected percentages in (0, 100), got {text!r}")
    return values


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=DESCRIPTION.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--case", action="append", choices=list(CASES), help="repeatable")
    p.add_argument("--scaling", action="store_true", help="time/memory against T and batch")
    p.add_argument("--all", action="store_true", help="the device's default cases and --scaling")
    p.add_argument(
        "--rate-sweep",
        action="store_true",
        help=f"step time against the hidden firing rate in {', '.join(RATE_SWEEP_CASES)}",
    )
    p.add_argument(
        "--rates",
        type=rate_list,
        metavar="LIST",
        help="--rate-sweep's targets, percent of neuron-steps "
        f"(default {','.join(f'{r:g}' for r in DEFAULT_RATES)})",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="with --rate-sweep: spikelight's step time by phase (C loops, BLAS, events)",
    )
    p.add_argument(
        "--trained",
        type=Path,
        metavar="CKPT",
        help="with --rate-sweep: one more point, a train.py checkpoint of experiment=shd's "
        "network on real input (--trained-data)",
    )
    p.add_argument(
        "--trained-data",
        type=Path,
        metavar="H5",
        help="an SHD-layout file (.h5 or .h5.gz) whose first samples --trained runs on",
    )
    p.add_argument(
        "--neuron-loops",
        action="store_true",
        help=f"each neuron's fused loop against its autograd loop ({', '.join(NEURON_KINDS)}; "
        "issue 15's network, T=100, batch 32 unless --T/--batch)",
    )
    p.add_argument(
        "--augment",
        action="store_true",
        help="event augmentation per batch, each transform of conf/data/augment/shd.yaml "
        "(B=256, T=100 unless --batch/--T)",
    )
    p.add_argument("--impl", action="append", help=f"repeatable; from {list(implementations())}")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--threads", type=positive, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--repeats", type=positive, default=11, help="timed steps per row")
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
    p.add_argument("--T", type=positive, help="override the cases' time steps")
    p.add_argument("--batch", type=positive, help="override the cases' batch size")
    p.add_argument("--hidden", type=positive, help="override the cases' hidden LIF neurons")
    p.add_argument("--inputs", type=positive, help="override the 700 input channels")
    p.add_argument("--density", type=float, help="fraction of active input bins (0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scaling-T", type=int_list, default=list(SCALING_T), metavar="LIST")
    p.add_argument("--scaling-batch", type=int_list, default=list(SCALING_BATCH), metavar="LIST")
    p.add_argument("--scaling-base", type=int_list, default=list(SCALING_BASE), metavar="T,BATCH")
    p.add_argument("--child-timeout", type=float, default=600, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, metavar="PATH", help="write all results as JSON")
    p.add_argument("--markdown", action="store_true", help="print markdown tables")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    return p


def configured(case: Case, args) -> Case:
    """``case`` with the command line's sizes, density and seed."""
    case = dataclasses.replace(case, seed=args.seed)
    overrides = {"T": args.T, "batch": args.batch, "inputs": args.inputs, "hidden": args.hidden}
    overrides["density"] = args.density
    return dataclasses.replace(case, **{k: v for k, v in overrides.items() if v is not None})


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
    if args.rates is not None and not args.rate_sweep:
        raise SystemExit(f"--rates {','.join(f'{r:g}' for r in args.rates)} needs --rate-sweep")
    for flag, value in (("--profile", args.profile), ("--trained", args.trained)):
        if value and not args.rate_sweep:
            raise SystemExit(f"{flag} needs --rate-sweep")
    if (args.trained is None) != (args.trained_data is None):
        raise SystemExit("--trained and --trained-data go together: a checkpoint and its data")
    for flag, path in (("--trained", args.trained), ("--trained-data", args.trained_data)):
        if path is not None and not path.is_file():
            raise SystemExit(f"{flag} {path}: no such file")

    asked = args.case or args.scaling or args.rate_sweep or args.neuron_loops or args.augment
    names = default_cases(device) if args.all or not asked else args.case or []
    cases = [configured(CASES[name], args) for name in dict.fromkeys(names)]
    sweep_cases = [configured(CASES[name], args) for name in RATE_SWEEP_CASES]
    rates = list(DEFAULT_RATES) if args.rates is None else args.rates

    impls = select_implementations(args.impl)
    trained = None if args.trained is None else (args.trained, args.trained_data)
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
        "rate_sweep": (
            run_rate_sweep(sweep_cases, rates, impls, args, device, trained)
            if args.rate_sweep
            else None
        ),
        "neuron_loops": run_neuron_loops(args, device) if args.neuron_loops else None,
        "augment": run_augment(args, device) if args.augment else None,
    }
    results["targets"] = evaluate_targets(results["cases"])
    results["targets"] += neuron_loop_targets(results["neuron_loops"])
    print(render(results, args.markdown))
    if args.json is not None:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(args.json)
        log(f"wrote {args.json}")
    return results
