"""The benchmarked network's physics, the SHD-sized cases, and what every row is built from."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Physics of the benchmarked network (experiment=shd).
DT = 1e-3
TAU_MEM = 10e-3
TAU_SYN = 5e-3
READOUT_TAU_MEM = 10e-3
READOUT_TAU_SYN = 5e-3
THRESHOLD = 1.0
BETA = 100.0  # SuperSpike / fast-sigmoid steepness
# Initial weights ~ N(0, (scale / sqrt(fan_in))^2), as spikelight draws them; the scales give a
# hidden firing rate of about 4-5% per step (reported per row), in the range of trained SHD models.
WEIGHT_SCALES = {"w_in": 8.0, "w_rec": 2.0, "w_out": 2.0}


@dataclass(frozen=True)
class Case:
    name: str
    T: int
    batch: int
    recurrent: bool = True
    inputs: int = 700
    hidden: int = 256
    classes: int = 20
    density: float = 0.02  # fraction of active input bins
    seed: int = 0


SHD_CASES = {
    "shd_recurrent": Case("shd_recurrent", T=100, batch=64),
    "shd_recurrent_long": Case("shd_recurrent_long", T=250, batch=128),
    "shd_feedforward": Case("shd_feedforward", T=100, batch=64, recurrent=False),
}
#: The open-neuromorphic SNN library benchmark's sizes (Linear n -> n, then n LIF neurons,
#: batch 16, T = 500), inside this benchmark's training step (the readout and loss above). At
#: 2 % input density the input current has the SHD cases' spread whatever n (the weights scale
#: with 1 / sqrt(n)), so the hidden layer fires in the same range.
OPEN_NEUROMORPHIC_CASES = {
    f"on_{n // 1024}k": Case(
        f"on_{n // 1024}k", T=500, batch=16, recurrent=False, inputs=n, hidden=n
    )  # fmt: skip
    for n in (4096, 8192, 16384)
}
CASES = {**SHD_CASES, **OPEN_NEUROMORPHIC_CASES}


def default_cases(device: torch.device) -> list[str]:
    """The cases run when none is named: the SHD-sized ones, and on a GPU the
    open-neuromorphic ones too (16k x 16k weights and T = 500 are for a GPU)."""
    extra = list(OPEN_NEUROMORPHIC_CASES) if device.type == "cuda" else []
    return [*SHD_CASES, *extra]


@dataclass
class Setup:
    """Everything an implementation is built from: sizes, device, data, initial weights."""

    case: Case
    device: torch.device
    dtype: torch.dtype  # of the input, the weights and every module
    x: torch.Tensor  # [T, B, inputs] float, 0/1
    y: torch.Tensor  # [B] long
    weights: dict[str, torch.Tensor]  # w_in [H, C], w_rec [H, H] (recurrent), w_out [K, H]


def make_setup(case: Case, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Setup:
    """Input, labels and initial weights of ``case``: the same for every seed-equal call."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(case.seed)
    x = (torch.rand(case.T, case.batch, case.inputs, generator=gen) < case.density).float()
    y = torch.randint(0, case.classes, (case.batch,), generator=gen)
    shapes = {"w_in": (case.hidden, case.inputs), "w_out": (case.classes, case.hidden)}
    if case.recurrent:
        shapes["w_rec"] = (case.hidden, case.hidden)
    weights = {
        name: torch.randn(shape, generator=gen) * (WEIGHT_SCALES[name] / math.sqrt(shape[1]))
        for name, shape in shapes.items()
    }
    return Setup(
        case,
        device,
        dtype,
        x.to(device, dtype),
        y.to(device),
        {k: w.to(device, dtype) for k, w in weights.items()},
    )
