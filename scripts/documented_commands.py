"""Run the randman commands that README.md documents and keep their results as evidence.

    python scripts/documented_commands.py              # every command below, one after another
    python scripts/documented_commands.py quick_start  # only the named ones

Each command runs as ``python train.py ARGS`` into ``outputs/documented/<name>/``; its
``metrics.json`` (final metrics, overrides, wall time) is copied to
``docs/evidence/documented_commands/<name>.json``, which the tables in README.md and
docs/results.md quote and ``tests/test_evidence.py`` checks them against. The slow test
``tests/test_documented_commands.py`` reruns the single runs and compares with these files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVIDENCE = ROOT / "docs" / "evidence" / "documented_commands"

#: name -> the command's arguments, exactly as README.md prints them
COMMANDS: dict[str, list[str]] = {
    "quick_start": ["neuron=lif", "surrogate=superspike"],
    "randman_heterogeneous": [
        "experiment=randman_heterogeneous",
        "trainable=[weights,tau_mem,tau_syn]",
    ],
    "alif_recurrent": [
        "neuron=alif",
        "model.network.recurrent=true",
        "trainable=[weights,tau_adapt]",
    ],
    "heterogeneous_trained": [
        "init=heterogeneous",
        "trainable=[weights,tau_mem,tau_syn]",
        "model.neuron_lr=1e-2",
    ],
    "reservoir": ["trainable=[readout]"],
    "spike_count": ["model.network.decoding=spike_count"],
    "recurrent": ["model.network.recurrent=true"],
    "nir_reset_zero": ["neuron.reset=zero"],
}


def run(name: str) -> Path:
    """Run one command; return the evidence file it produced."""
    run_dir = ROOT / "outputs" / "documented" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "train.py", *COMMANDS[name], f"hydra.run.dir={run_dir}"]
    print("$", " ".join(["python", "train.py", *COMMANDS[name]]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)
    EVIDENCE.mkdir(parents=True, exist_ok=True)
    target = EVIDENCE / f"{name}.json"
    shutil.copyfile(run_dir / "metrics.json", target)
    return target


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(COMMANDS))
    if unknown:
        print(f"unknown command name(s) {unknown}; expected some of {list(COMMANDS)}")
        return 2
    for name in names or COMMANDS:
        print(run(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
