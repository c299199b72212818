"""Parameter-learning toy (after Norse's parameter-learning workshop): learn tau_mem or not.

A two-layer LIF network (input -> 64 hidden LIF -> 20 output LIF) gets a fixed batch of Poisson
spike trains and is taught to make every fifth output neuron fire (``target_spikes`` spikes in the
sample) and the others stay silent: loss = mean squared error between each output neuron's spike
count and its target. The same network, from the same initial weights, is trained twice: weights
only, and weights plus per-neuron membrane time constants (``tau_mem``, both layers). Both loss
curves (mean and range over seeds) go into one figure:

    python scripts/parameter_learning.py          # writes docs/img/parameter_learning.png
                                                  # and docs/evidence/parameter_learning/*.json
    python scripts/parameter_learning.py --steps 100 --seeds 0 --out /tmp/p.png
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from spikelight.atomic import atomic_output
from spikelight.network import SpikingNetwork
from spikelight.neurons import LIF
from spikelight.surrogates import SuperSpike
from spikelight.weight_init import ScaledNormal

REPO_ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = {"weights only": ["weights"], "weights + tau_mem": ["weights", "tau_mem"]}


def make_task(seed: int, steps: int = 100, batch: int = 8, inputs: int = 100, rate: float = 0.05):
    """Fixed Poisson input ``[T, B, inputs]`` (spike probability ``rate`` per 1 ms step)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, inputs, generator=generator) < rate).float()


def target_counts(outputs: int = 20, every: int = 5, spikes: float = 5.0) -> torch.Tensor:
    """``spikes`` for neurons 0, 5, 10, ...; zero for the others."""
    target = torch.zeros(outputs)
    target[::every] = spikes
    return target


def train(x, target, trainable, seed: int, steps: int, lr: float, tau_mem: float) -> list[float]:
    """Loss after each of ``steps`` Adam steps, for a network built from ``seed``."""
    torch.manual_seed(seed)
    net = SpikingNetwork(
        num_inputs=x.shape[-1],
        num_classes=target.numel(),
        hidden=[64],
        neuron=functools.partial(LIF, tau_mem=tau_mem, tau_syn=5e-3),
        surrogate=SuperSpike(10.0),
        trainable=trainable,
        decoding="spike_count",  # a spiking LIF output layer; scores = its spike counts
        weight_init=ScaledNormal(7.0),
    )
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        counts = net(x).logits  # [B, outputs] spike counts
        loss = F.mse_loss(counts, target.expand_as(counts))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--tau-mem", type=float, default=10e-3, help="initial tau_mem (s)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs/img/parameter_learning.png")
    parser.add_argument(
        "--evidence",
        type=Path,
        default=REPO_ROOT / "docs/evidence/parameter_learning",
        help="folder for one result file per condition (what docs/results.md quotes)",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = time.perf_counter()
    target = target_counts()
    curves = {name: [] for name in CONDITIONS}
    for seed in args.seeds:
        x = make_task(seed)
        for name, trainable in CONDITIONS.items():
            curves[name].append(
                train(x, target, trainable, seed, args.steps, args.lr, args.tau_mem)
            )

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=150)
    print("| condition | final loss (mean over seeds) | per seed |")
    print("| --- | --- | --- |")
    for name, runs in curves.items():
        losses = torch.tensor(runs)
        mean = losses.mean(0)
        steps = range(1, args.steps + 1)
        ax.plot(steps, mean, label=name)
        ax.fill_between(steps, losses.min(0).values, losses.max(0).values, alpha=0.25)
        finals = ", ".join(f"{r[-1]:.3f}" for r in runs)
        print(f"| {name} | {mean[-1].item():.3f} | {finals} |")
        record = {
            "status": "ok",
            "metrics": {
                "final_loss_mean": mean[-1].item(),
                **{f"final_loss_seed_{s}": r[-1] for s, r in zip(args.seeds, runs, strict=True)},
            },
            "command": " ".join(["python scripts/parameter_learning.py", *argv]),
            "seconds": time.perf_counter() - start,
        }
        slug = re.sub(r"\W+", "_", name).strip("_")
        with atomic_output(args.evidence / f"{slug}.json") as out:
            out.write(json.dumps(record, indent=2).encode())
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("MSE of output spike counts")
    ax.set_title("Every fifth output neuron fires", fontsize=10)
    ax.legend(frameon=False)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"\nwrote {args.out} ({time.perf_counter() - start:.0f} s; seeds {args.seeds})")
    print("command: python scripts/parameter_learning.py " + " ".join(argv))


if __name__ == "__main__":
    main()
