"""Encoders that turn static images into input sequences for a spiking network.

Each encoder is a plain ``nn.Module`` called as ``encoder(images, num_steps, generator=None)``:
``images`` is ``[B, C]`` with intensities in [0, 1], the result is ``[B, T, C]`` float with
``T = num_steps``. Data modules call it once per batch on the training device, so a dataset is
never stored ``T`` times. ``generator`` (a ``torch.Generator`` on the images' device) makes
stochastic encoders reproducible; deterministic encoders ignore it.
"""

from __future__ import annotations

import torch
from torch import nn


def _check_images(images: torch.Tensor, num_steps: int) -> None:
    if images.dim() != 2:
        raise ValueError(f"encoders expect images [B, C], got shape {tuple(images.shape)}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")


def _check_positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


class RateEncoder(nn.Module):
    """Poisson-like rate code: at every step each input spikes with ``p = clamp(gain * x, 0, 1)``.

    Steps are independent Bernoulli draws, so the expected spike count of an input over ``T``
    steps is ``T * p`` (snnTorch ``spikegen.rate``). Draws use ``generator`` when given.
    """

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        if gain < 0:
            raise ValueError(f"RateEncoder gain must be >= 0, got {gain!r}")
        self.gain = float(gain)

    def forward(
        self, images: torch.Tensor, num_steps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        _check_images(images, num_steps)
        probability = (self.gain * images.float()).clamp_(0.0, 1.0)
        batch, channels = probability.shape
        uniform = torch.rand(batch, num_steps, channels, generator=generator, device=images.device)
        return (uniform < probability[:, None, :]).float()

    def extra_repr(self) -> str:
        return f"gain={self.gain}"


class LatencyEncoder(nn.Module):
    """Time-to-first-spike code (SPyTorch tutorial 2): brighter inputs spike earlier, once.

    An input ``x > threshold`` is treated as a constant current into a leaky membrane with time
    constant ``tau`` (seconds) and unit threshold; it first crosses at
    ``t = tau * log(x / (x - threshold))`` seconds. The spike goes to step ``floor(t / dt)``;
    inputs ``x <= threshold`` and spikes at or after ``num_steps * dt`` are dropped. With the
    defaults (tau 20 ms, dt 1 ms) a white pixel spikes at step 4.
    """

    def __init__(self, tau: float = 20e-3, threshold: float = 0.2, dt: float = 1e-3) -> None:
        super().__init__()
        self.tau = _check_positive("LatencyEncoder tau", tau)
        self.dt = _check_positive("LatencyEncoder dt", dt)
        if not 0 <= threshold < 1:
            raise ValueError(f"LatencyEncoder threshold must be in [0, 1), got {threshold!r}")
        self.threshold = float(threshold)

    def spike_steps(self, images: torch.Tensor) -> torch.Tensor:
        """Step index of each input's spike (long ``[B, C]``), ``-1`` where it never spikes."""
        # float64 so that floor() agrees with the closed form at step boundaries.
        dtype = torch.float32 if images.device.type == "mps" else torch.float64
        x = images.to(dtype)
        fires = x > self.threshold
        safe_x = torch.where(fires, x, torch.ones_like(x))  # avoid log of <= 0 off the mask
        seconds = self.tau * torch.log(safe_x / (safe_x - self.threshold))
        steps = torch.floor(seconds / self.dt).long()
        return torch.where(fires, steps, torch.full_like(steps, -1))

    def forward(
        self, images: torch.Tensor, num_steps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        _check_images(images, num_steps)
        steps = self.spike_steps(images)
        on_time = (steps >= 0) & (steps < num_steps)
        spikes = torch.zeros(images.shape[0], num_steps + 1, images.shape[1], device=images.device)
        # Late or absent spikes go to an extra step that is cut off.
        index = torch.where(on_time, steps, torch.full_like(steps, num_steps))
        spikes.scatter_(1, index[:, None, :], 1.0)
        return spikes[:, :num_steps]

    def extra_repr(self) -> str:
        return f"tau={self.tau}, threshold={self.threshold}, dt={self.dt}"


class DirectEncoder(nn.Module):
    """Analog input: ``gain * x`` is fed as input current at every step (snnTorch tutorial 5).

    The first spiking layer does the encoding; the input itself is not binary.
    """

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = float(gain)

    def forward(
        self, images: torch.Tensor, num_steps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        _check_images(images, num_steps)
        return (self.gain * images.float())[:, None, :].repeat(1, num_steps, 1)

    def extra_repr(self) -> str:
        return f"gain={self.gain}"


class IFEncoder(nn.Module):
    """Deterministic integrate-and-fire code: each input drives its own non-leaky IF neuron.

    Per step: ``v += gain * x + bias``; if ``v > threshold`` the input spikes and
    ``v -= threshold`` (subtractive reset, at most one spike per step). Starting from ``v = 0``
    with constant drive ``I = gain * x + bias``, an input emits
    ``min(T, max(0, ceil(T * I / threshold) - 1))`` spikes in ``T`` steps, i.e.
    ``floor(T * I / threshold)`` unless that product is an integer; a higher intensity means a
    proportionally higher rate, without sampling noise.
    """

    def __init__(self, gain: float = 1.0, bias: float = 0.0, threshold: float = 1.0) -> None:
        super().__init__()
        self.gain = float(gain)
        self.bias = float(bias)
        self.threshold = _check_positive("IFEncoder threshold", threshold)

    def forward(
        self, images: torch.Tensor, num_steps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        _check_images(images, num_steps)
        drive = self.gain * images.float() + self.bias
        voltage = torch.zeros_like(drive)
        spikes = []
        for _ in range(num_steps):
            voltage = voltage + drive
            spike = (voltage > self.threshold).float()
            voltage = voltage - spike * self.threshold
            spikes.append(spike)
        return torch.stack(spikes, dim=1)

    def extra_repr(self) -> str:
        return f"gain={self.gain}, bias={self.bias}, threshold={self.threshold}"
