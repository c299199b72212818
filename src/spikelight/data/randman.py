"""Random-manifold spike-timing benchmark (Zenke & Vogels 2021), generated from a seed.

Each class is a smooth random manifold: a map from a ``dim``-dimensional latent space to one
firing time per input unit, built from random Fourier series whose power falls off as
``1/(f**alpha + 1)`` (larger ``alpha``: smoother). A sample draws a latent point uniformly and
makes every unit fire exactly ``spikes_per_unit`` spikes at the times the class's manifold
gives, so spike counts are identical across classes and only timing carries the label.
Follows the reference implementation (github.com/fzenke/randman), vectorised, with a private
generator so that the dataset depends on ``seed`` alone.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from spikelight.data.base import SpikeDataModule, check_positive_int


def random_manifold(
    latent: torch.Tensor, units: int, alpha: float, generator: torch.Generator, precision=1e-3
) -> torch.Tensor:
    """Evaluate one smooth random manifold ``[0,1]^dim -> R^units`` at ``latent [S, dim]``.

    Unit ``u`` is ``prod_d sum_f a * s_f * sin(2 pi (f * x_d * w + phase))`` with random
    amplitude, frequency scale and phase in [0, 1), spectrum ``s_f = 1 / (f**alpha + 1)``
    truncated where it falls below ``precision`` (Zenke's ``TorchRandman``, no bias).
    """
    dim = latent.shape[1]
    cutoff = int(min(math.ceil(precision ** (-1 / alpha)), 1000))
    amp, freq, phase = torch.rand(3, units, dim, cutoff, generator=generator, dtype=torch.float64)
    amp[:, :, 0] = 0.0  # no constant offset (use_bias=False in the reference)
    f = torch.arange(cutoff, dtype=torch.float64)
    spectrum = 1.0 / ((f + 1) ** alpha + 1.0)
    # [S, units, dim, cutoff]
    arg = 2 * math.pi * (f * latent[:, None, :, None] * freq + phase)
    per_dim = (amp * spectrum * torch.sin(arg)).sum(-1)
    return per_dim.prod(-1)


def make_randman(
    classes: int = 10,
    units: int = 100,
    steps: int = 100,
    dim: int = 2,
    spikes_per_unit: int = 1,
    samples_per_class: int = 1000,
    alpha: float = 2.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return spike times ``[N, units * spikes_per_unit]`` (long, in ``[0, steps)``) and labels.

    Sample order is shuffled with the same seed. Units of the ``k``-th spike repeat in order.
    """
    generator = torch.Generator().manual_seed(seed)
    times, labels = [], []
    for label in range(classes):
        latent = torch.rand(samples_per_class, dim, generator=generator, dtype=torch.float64)
        per_spike = []
        for _ in range(spikes_per_unit):
            y = random_manifold(latent, units, alpha, generator)
            lo, hi = y.min(0).values, y.max(0).values
            per_spike.append((y - lo) / (hi - lo + 1e-7))  # each unit spans [0, 1)
        times.append(torch.cat(per_spike, dim=1))
        labels.append(torch.full((samples_per_class,), label, dtype=torch.long))
    times, labels = torch.cat(times), torch.cat(labels)
    order = torch.randperm(len(labels), generator=generator)
    steps_index = (times[order] * steps).long().clamp_(0, steps - 1)
    return steps_index, labels[order]


def spike_raster(times: torch.Tensor, units: int, steps: int) -> torch.Tensor:
    """Dense ``[N, steps, units]`` float raster from spike-time indices ``[N, units * k]``."""
    n, events = times.shape
    raster = torch.zeros(n, steps, units, device=times.device)
    sample = torch.arange(n, device=times.device)[:, None].expand(n, events)
    unit = (torch.arange(events, device=times.device) % units).expand(n, events)
    raster.index_put_(
        (sample, times, unit), torch.ones_like(raster[0, 0, :1]).expand(n, events), accumulate=True
    )
    return raster


class RandmanDataModule(SpikeDataModule):
    """Randman as a LightningDataModule; splits are fractions of the shuffled samples."""

    def __init__(
        self,
        batch_size: int = 256,
        num_steps: int = 100,
        num_inputs: int = 100,
        num_classes: int = 10,
        dim: int = 2,
        spikes_per_unit: int = 1,
        samples_per_class: int = 1000,
        alpha: float = 2.0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool | None = None,
        test_every_epoch: bool = False,
    ) -> None:
        super().__init__(batch_size, num_steps, num_workers, seed, pin_memory, test_every_epoch)
        self.num_inputs = check_positive_int("num_inputs", num_inputs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.class_names = [f"manifold {k}" for k in range(num_classes)]
        self.dim = check_positive_int("dim", dim)
        self.spikes_per_unit = check_positive_int("spikes_per_unit", spikes_per_unit)
        self.samples_per_class = check_positive_int("samples_per_class", samples_per_class)
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"data.alpha must be > 0, got {alpha!r}")
        self.alpha = float(alpha)
        if not (val_fraction >= 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"data.val_fraction={val_fraction!r} and data.test_fraction={test_fraction!r} "
                "must be >= 0, > 0 and sum to less than 1"
            )
        self.val_fraction, self.test_fraction = val_fraction, test_fraction

    def make_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        times, labels = make_randman(
            self.num_classes,
            self.num_inputs,
            self.num_steps,
            self.dim,
            self.spikes_per_unit,
            self.samples_per_class,
            self.alpha,
            self.seed,
        )
        dataset = TensorDataset(times, labels)  # compact; densified per batch in encode()
        n = len(labels)
        n_test, n_val = round(n * self.test_fraction), round(n * self.val_fraction)
        index = torch.arange(n)
        test = Subset(dataset, index[:n_test].tolist())
        val = Subset(dataset, index[n_test : n_test + n_val].tolist())
        train = Subset(dataset, index[n_test + n_val :].tolist())
        return train, val, test

    def encode(self, x: torch.Tensor, train: bool, generator=None) -> torch.Tensor:
        return spike_raster(x, self.num_inputs, self.num_steps)
