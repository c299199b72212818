"""Learnable synaptic delays: each synapse a weight and a real-valued delay (DCLS-Delays).

After Hammouamri, Khalfaoui-Hassani & Masquelier 2023, "Learning Delays in Spiking Neural
Networks using Dilated Convolutions with Learnable Spacings" (ICLR 2024; code
Thvnvtos/SNN-delays on the DCLS ``Dcls1d`` layer, K-H-Ismail/Dilated-Convolution-with-
Learnable-Spacings-PyTorch). The synapse from input ``i`` to neuron ``j`` has a weight ``w_ji``
and a delay ``d_ji`` in ``[0, max_delay]`` steps; its kernel over the ``max_delay + 1`` taps
``k = 0 .. max_delay`` (tap ``k``: ``k`` steps ago) is ``w_ji g_ji(k)`` with ``g_ji`` a
Gaussian centred on ``d_ji``, normalised over the taps (DCLS's ``X / X.sum(taps)``, written as
a softmax so that a tiny ``sigma`` stays finite). The projection is the causal convolution::

    current[t, b, j] = sum_i w_ji sum_k g_ji(k) x[t - k, b, i]        (x = 0 before t = 0)

The Gaussian spreads each delay's gradient over neighbouring taps; ``sigma`` shrinks over
training (:meth:`DelaySpec.sigma`), and in eval mode every delay is rounded to the nearest
integer step and the kernel is one tap, as the authors evaluate (``eval_model``: ``SIG *= 0``,
``version = 'max'``, ``round_pos``). The output keeps the input's ``T`` steps: the authors
also pad ``(K - 1) // 2`` steps on the right, which lengthens each layer's output; here what is
delayed past the last step is not seen (leave silent steps at the end of the data instead).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from spikelight import checks
from spikelight.checks import ArgumentError

#: the keys of ``model.network.delays``
DELAY_KEYS = ("max_delay", "sigma_init", "sigma_final", "sigma_epochs", "readout")


@dataclass(frozen=True)
class DelaySpec:
    """What every delayed projection shares: the delay range and the ``sigma`` schedule.

    ``max_delay``: the largest delay, in steps (``max_delay + 1`` taps). ``sigma`` (in steps)
    decays exponentially from ``sigma_init`` at epoch 0 to ``sigma_final`` at epoch
    ``sigma_epochs`` and stays there (the authors' ``decrease_sig``; 0: ``sigma_final`` from the
    start). ``readout``: the readout's input projection has delays too (the authors'), not only
    the hidden layers'.
    """

    max_delay: int
    sigma_init: float
    sigma_final: float
    sigma_epochs: int = 0
    readout: bool = False

    def __post_init__(self) -> None:
        checks.positive_int("delays.max_delay", self.max_delay)
        checks.positive("delays.sigma_init", self.sigma_init)
        checks.positive("delays.sigma_final", self.sigma_final)
        if self.sigma_final > self.sigma_init:
            raise ArgumentError(
                "delays.sigma_final",
                self.sigma_final,
                f"a width <= delays.sigma_init={self.sigma_init!r} (sigma only shrinks)",
            )
        checks.non_negative_int("delays.sigma_epochs", self.sigma_epochs)
        checks.boolean("delays.readout", self.readout)

    @classmethod
    def of(cls, config: DelaySpec | Mapping | None) -> DelaySpec | None:
        """A spec from ``model.network.delays`` (a mapping, or None: no delays)."""
        if config is None or isinstance(config, DelaySpec):
            return config
        keys = set(config) if isinstance(config, Mapping) else set()
        if not set(DELAY_KEYS[:3]) <= keys or keys - set(DELAY_KEYS):
            value = dict(config) if isinstance(config, Mapping) else config
            raise ArgumentError(
                "delays",
                value,
                f"null or a mapping with the keys {list(DELAY_KEYS[:3])} (and optionally "
                f"{list(DELAY_KEYS[3:])})",
            )
        return cls(**config)

    @property
    def taps(self) -> int:
        return self.max_delay + 1

    def sigma(self, epoch: int) -> float:
        """The Gaussian's width in training epoch ``epoch`` (0-based)."""
        if epoch >= self.sigma_epochs:
            return float(self.sigma_final)
        ratio = self.sigma_final / self.sigma_init
        return float(self.sigma_init * ratio ** (max(epoch, 0) / self.sigma_epochs))


def gaussian_kernel(
    weight: torch.Tensor, delay: torch.Tensor, sigma: torch.Tensor | float, taps: int
) -> torch.Tensor:
    """``[N, C, taps]``: ``weight * g(k)`` with ``g`` a Gaussian at ``delay`` over taps ``k``."""
    k = torch.arange(taps, dtype=delay.dtype, device=delay.device)
    logits = -0.5 * ((k - delay.unsqueeze(-1)) / sigma) ** 2
    return weight.unsqueeze(-1) * torch.softmax(logits, dim=-1)


def integer_kernel(weight: torch.Tensor, delay: torch.Tensor, taps: int) -> torch.Tensor:
    """``[N, C, taps]``: ``weight`` on the tap of each delay rounded to a whole step."""
    index = delay.detach().clamp(0, taps - 1).round().long()
    return weight.unsqueeze(-1) * F.one_hot(index, taps).to(weight.dtype)


def delayed_projection(
    x: torch.Tensor, kernel: torch.Tensor, past: torch.Tensor | None = None
) -> torch.Tensor:
    """``current [T, B, N]`` of ``x [T, B, C]`` through ``kernel [N, C, taps]`` (tap k: k
    steps ago). ``past [taps - 1, B, C]``: the inputs before ``x`` (None: zeros)."""
    taps = kernel.shape[-1]
    if past is None:
        past = x.new_zeros(taps - 1, *x.shape[1:])
    padded = torch.cat([past.to(x.dtype), x]).permute(1, 2, 0)  # [B, C, taps - 1 + T]
    # conv1d correlates: out[t] = sum_m K'[m] padded[t + m], so tap k = taps - 1 - m
    return F.conv1d(padded, kernel.flip(-1)).permute(2, 0, 1)


class DelayedLinear(nn.Module):
    """``Linear`` without bias whose synapses also have learnable delays; see the module.

    ``weight [N, C]`` and ``delay [N, C]`` (steps) are parameters, ``sigma`` a buffer set by
    :meth:`set_sigma`. The delays start uniform in ``[0, max_delay]`` (the authors'
    ``init_pos_method = 'uniform'`` over the kernel) and are kept there by :meth:`clamp_`
    after each optimiser step (the authors' ``clamp_parameters``).
    """

    bias = None  #: no bias: ``model.network.bias`` is refused with delays

    def __init__(self, in_features: int, out_features: int, spec: DelaySpec) -> None:
        super().__init__()
        self.in_features = checks.positive_int("in_features", in_features)
        self.out_features = checks.positive_int("out_features", out_features)
        self.spec = spec
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's; weight_init redraws
        self.delay = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.uniform_(self.delay, 0.0, float(spec.max_delay))
        self.register_buffer("sigma", torch.tensor(float(spec.sigma_init)))

    def set_sigma(self, sigma: float) -> None:
        checks.positive("sigma", sigma)
        self.sigma.fill_(float(sigma))

    @torch.no_grad()
    def clamp_(self) -> None:
        """Put every delay back into ``[0, max_delay]``."""
        self.delay.clamp_(0.0, float(self.spec.max_delay))

    def kernel(self) -> torch.Tensor:
        """``[N, C, taps]``: Gaussian taps in training mode, whole-step delays in eval mode."""
        if self.training:
            sigma = self.sigma.to(self.delay.dtype)
            return gaussian_kernel(self.weight, self.delay, sigma, self.spec.taps)
        return integer_kernel(self.weight, self.delay, self.spec.taps)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        """``[T, B, N]`` from ``x [T, B, C]``; ``past [max_delay, B, C]``: earlier inputs."""
        return delayed_projection(x, self.kernel(), past)

    def stream(self, x: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The next chunk ``x [t, B, C]`` after ``past``: ``(current [t, B, N], new past)``."""
        current = delayed_projection(x, self.kernel(), past)
        return current, torch.cat([past, x])[-self.spec.max_delay :]

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, max_delay={self.spec.max_delay}, "
            f"sigma={float(self.sigma):g}"
        )
