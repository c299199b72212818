"""A trained network's step: weights from a ``train.py`` checkpoint, input from real SHD data.

The rate sweep sets firing rates through the input weights' scale; this case is the rate a
trained network really has (issue 20). The checkpoint must come from a 700-H-20 network of
the benchmark's physics (``experiment=shd``: LIF, tau_mem 10 ms, tau_syn 5 ms, SuperSpike
beta 100, max-over-time readout); its weights replace the seeded ones, and the first ``batch``
samples of an SHD-layout file (``.h5`` or ``.h5.gz``), binned as ``experiment=shd`` bins them
(``T`` steps over 1.4 s), replace the random input. Every row is then built from that setup.
"""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import tempfile
from pathlib import Path

import torch

from .cases import Case, Setup

MAX_TIME = 1.4  # seconds binned into T steps, as experiment=shd
WEIGHT_KEYS = {  # the checkpoint's state_dict key -> the setup's weight
    "network.layers.0.fc.weight": "w_in",
    "network.layers.0.rec.weight": "w_rec",
    "network.readout_fc.weight": "w_out",
}


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """``w_in``, ``w_out`` (and ``w_rec`` for a recurrent network) of a train.py checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    weights = {name: state[key].float() for key, name in WEIGHT_KEYS.items() if key in state}
    missing = {"w_in", "w_out"} - set(weights)
    hidden = [k for k in state if k.startswith("network.layers.") and k.endswith(".fc.weight")]
    if missing or len(hidden) != 1:
        raise SystemExit(
            f"--trained {path}: expected one hidden layer's weights {sorted(WEIGHT_KEYS)}, "
            f"found hidden layers {hidden} and missing {sorted(missing)}"
        )
    return weights


def shd_batch(path: Path, steps: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``batch`` samples of an SHD-layout file: counts ``[T, B, 700]`` and labels."""
    from spikelight.data.shd import NUM_CHANNELS, read_and_bin

    with tempfile.TemporaryDirectory() as tmp:
        if path.suffix == ".gz":  # h5py reads plain files: decompress to a scratch copy
            plain = Path(tmp) / path.stem
            with gzip.open(path, "rb") as src, plain.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            path = plain
        split = read_and_bin(path, 20, steps, MAX_TIME, 1)
    if len(split) < batch:
        raise SystemExit(f"--trained-data {path}: {len(split)} samples, fewer than batch {batch}")
    x = torch.zeros(batch, steps * NUM_CHANNELS)
    for row in range(batch):
        lo, hi = split.offsets[row], split.offsets[row + 1]
        x[row, torch.from_numpy(split.index[lo:hi]).long()] = torch.from_numpy(
            split.count[lo:hi].astype("float32")
        )
    labels = torch.from_numpy(split.labels[:batch])
    return x.view(batch, steps, NUM_CHANNELS).transpose(0, 1).contiguous(), labels


def trained_fits(checkpoint: Path, case: Case) -> bool:
    """Whether the checkpoint's network has ``case``'s recurrence."""
    return ("w_rec" in checkpoint_weights(checkpoint)) == case.recurrent


def trained_setup(base: Setup, checkpoint: Path, data: Path) -> Setup:
    """``base`` with a checkpoint's weights and real input, for the case of its recurrence."""
    weights = checkpoint_weights(checkpoint)
    hidden, inputs = weights["w_in"].shape
    if ("w_rec" in weights) != base.case.recurrent or inputs != base.case.inputs:
        raise SystemExit(
            f"--trained {checkpoint}: a {'recurrent' if 'w_rec' in weights else 'feed-forward'} "
            f"{inputs}-{hidden} network does not fit case {base.case.name!r}"
        )
    x, y = shd_batch(data, base.case.T, base.case.batch)
    case: Case = dataclasses.replace(
        base.case,
        name=f"{base.case.name} (trained)",
        hidden=hidden,
        density=x.gt(0).float().mean().item(),
    )
    return Setup(
        case,
        base.device,
        base.dtype,
        x.to(base.device, base.dtype),
        y.to(base.device),
        {k: w.to(base.device, base.dtype) for k, w in weights.items()},
    )
