"""Where spikelight's training step spends its time: the fused layer's calls, timed by phase.

Each call the fused layer makes into the C loops (``native``) and each BLAS product it issues
(``torch.mm``) is wrapped for the duration of :func:`phase_profile` by a timer that adds its
wall time to the call's phase; what the wrapped calls do not cover (autograd, the readout's
loss, allocation, the Python loop itself) is the remainder. Nothing in spikelight is changed
to be profiled: the wrappers replace module attributes, and are removed on exit.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Iterator

import torch

#: phase -> what it covers (the order of the report's columns)
PHASES = {
    "forward loop": "the C forward loop over each chunk: input + recurrent sums, neuron steps",
    "recompute": "the backward's C recompute of each chunk's states from its start state",
    "backward steps": "the C backward step at every time step (the neuron's adjoint)",
    "event products": "input current and readout projection summed over events (gather_rows)",
    "event gradients": "input, recurrent and readout weight gradients over events (scatter_rows)",
    "event listing": "listing the input's non-zero entries (native.nonzero)",
    "BLAS products": "torch.mm: the recurrent product of the adjoint, the readout's gradient",
}


@contextlib.contextmanager
def phase_profile() -> Iterator[dict[str, float]]:
    """Seconds per phase of every fused-layer call made inside the block (see :data:`PHASES`)."""
    from spikelight.neurons import native

    seconds: dict[str, float] = defaultdict(float)
    patched: list[tuple[object, str, object]] = []

    def wrap(owner, name: str, phase_of) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[phase_of(args, kwargs)] += time.perf_counter() - start

        patched.append((owner, name, original))
        setattr(owner, name, timed)

    def run_phase(args, kwargs) -> str:
        return "forward loop" if kwargs.get("decide") else "recompute"

    wrap(native.Kernel, "run", run_phase)
    wrap(native.Kernel, "step", lambda a, k: "backward steps")
    wrap(native, "gather_rows", lambda a, k: "event products")
    wrap(native, "scatter_rows", lambda a, k: "event gradients")
    wrap(native, "nonzero", lambda a, k: "event listing")
    wrap(torch, "mm", lambda a, k: "BLAS products")
    try:
        yield seconds
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)


def profile_bench(bench, repeats: int, warmup: int = 2) -> dict:
    """Median step time and the mean ms per phase over ``repeats`` training steps of ``bench``."""
    for _ in range(warmup):
        bench.step()
    steps = []
    with phase_profile() as seconds:
        for _ in range(repeats):
            start = time.perf_counter()
            bench.step()
            steps.append(time.perf_counter() - start)
    total_ms = 1e3 * sum(steps) / repeats
    phases = {phase: 1e3 * seconds.get(phase, 0.0) / repeats for phase in PHASES}
    return {
        "step_ms": total_ms,
        "phases_ms": phases,
        "other_ms": total_ms - sum(phases.values()),
    }
