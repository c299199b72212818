"""Reparameterisations that keep trained neuron parameters valid without killing gradients.

A trainable neuron parameter is stored as an unconstrained tensor ``raw`` and read through a
smooth, strictly monotonic map, so every optimiser step lands on a valid value and the gradient is
finite and non-zero everywhere inside the allowed range (clamping would zero it at the edges and
let a step jump past them).

- time constants: ``LogInterval(lo, hi)``, ``tau = lo * (hi/lo) ** sigmoid(raw)``: bounded, and
  uniform in log-time, so a step moves 2 ms and 200 ms by the same relative amount;
- thresholds: ``Positive()``, ``1e-6 + softplus(raw)``;
- voltages (v_leak, v_reset): ``Identity()``.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


class Identity:
    """No constraint."""

    def to_raw(self, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def __repr__(self) -> str:
        return "Identity()"


class Positive:
    """``value = floor + softplus(raw)``: stays above ``floor`` even where softplus underflows."""

    def __init__(self, floor: float = 1e-6) -> None:
        self.floor = float(floor)

    def to_raw(self, value: torch.Tensor) -> torch.Tensor:
        if (value <= self.floor).any():
            raise ValueError(f"value must be > {self.floor:g}, got min {value.min().item():.4g}")
        excess = value - self.floor
        return excess + torch.log(-torch.expm1(-excess))  # inverse softplus, stable

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return self.floor + F.softplus(raw)

    def __repr__(self) -> str:
        return f"Positive(floor={self.floor:g})"


class LogInterval:
    """``value = lo * (hi/lo) ** sigmoid(raw)``, always inside ``[lo, hi]``."""

    def __init__(self, lo: float, hi: float) -> None:
        if not (0 < lo < hi and math.isfinite(hi)):
            raise ValueError(f"bounds must satisfy 0 < min < max < inf, got [{lo}, {hi}]")
        self.lo, self.hi = float(lo), float(hi)
        self._log_lo, self._log_span = math.log(lo), math.log(hi / lo)

    def to_raw(self, value: torch.Tensor) -> torch.Tensor:
        if (value < self.lo).any() or (value > self.hi).any():
            raise ValueError(
                f"value outside bounds [{self.lo:g}, {self.hi:g}]: "
                f"min {value.min().item():g}, max {value.max().item():g}"
            )
        # Values exactly on a bound map to +-inf; move them just inside.
        fraction = ((value.log() - self._log_lo) / self._log_span).clamp(1e-6, 1 - 1e-6)
        return torch.logit(fraction)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        value = torch.exp(self._log_lo + self._log_span * torch.sigmoid(raw))
        # The clamp only catches float rounding once the sigmoid has saturated to 0 or 1,
        # where its gradient is zero anyway; inside the bounds it never acts.
        return value.clamp(self.lo, self.hi)

    def __repr__(self) -> str:
        return f"LogInterval({self.lo:g}, {self.hi:g})"


class Interval:
    """``value = lo + (hi - lo) * sigmoid(raw)``: a bounded parameter with finite gradients."""

    def __init__(self, lo: float, hi: float) -> None:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds must satisfy min < max (both finite), got [{lo}, {hi}]")
        self.lo, self.hi = float(lo), float(hi)

    def to_raw(self, value: torch.Tensor) -> torch.Tensor:
        if (value < self.lo).any() or (value > self.hi).any():
            raise ValueError(
                f"value outside bounds [{self.lo:g}, {self.hi:g}]: "
                f"min {value.min().item():g}, max {value.max().item():g}"
            )
        fraction = ((value - self.lo) / (self.hi - self.lo)).clamp(1e-6, 1 - 1e-6)
        return torch.logit(fraction)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return self.lo + (self.hi - self.lo) * torch.sigmoid(raw)

    def __repr__(self) -> str:
        return f"Interval({self.lo:g}, {self.hi:g})"
