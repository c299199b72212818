"""How a network's synaptic weights start: fluctuation-driven, or one fixed scale.

:class:`ScaledNormal` and :class:`Uniform` (optionally with orthogonal recurrent weights) use one
fixed scale for every projection; :class:`FluctuationDriven` derives each one's scale.

:class:`FluctuationDriven` (Rossbroich, Gygax & Zenke 2022, "Fluctuation-driven initialization
for spiking neural network training", Neuromorph. Comput. Eng. 2, 044016) draws every
projection's weights ``w ~ N(mu_w, sigma_w^2)`` so that the *free* membrane potential (the
membrane with no threshold) of the neurons it drives has the target mean
``mu_U = mu_u * threshold`` and standard deviation ``sigma_U = (1 - mu_u) * threshold / xi``:
the threshold sits ``xi`` standard deviations above the mean, so neurons start in the
fluctuation-driven regime, neither silent nor saturated, whatever the neuron, its time
constants, ``dt``, the fan-in and the input's firing rate.

The closed form: ``N`` independent inputs that each spike with probability ``p`` per step, and
``eps_s``, the membrane's response to one input spike ``s`` steps earlier (the PSP kernel,
computed from the neuron's own ``step``). Each neuron's weight row is drawn from a normal
distribution, then set to exactly mean ``mu_w`` and standard deviation ``sigma_w``, so that
every neuron's membrane has the target mean and its fluctuations are the input's shot noise.
At step ``T - 1`` of a sample (for leaky neurons the stationary value)::

    E[U]   = N mu_w p S1                                   S1 = sum_{s<T} eps_s
    Var[U] = N (mu_w^2 + sigma_w^2) p (1 - p) S2           S2 = sum_{s<T} eps_s^2

(Rossbroich et al.'s ``N nu eps_hat E[w^2]`` in discrete time). A recurrent layer's feed-forward
weights carry the share ``alpha`` of the variance and its recurrent weights ``1 - alpha``; each
projection carries its fan-in's share of the mean. Per neuron, so heterogeneous time constants
and thresholds get their own weight scale.

``p`` is known only for the data: with ``calibrate="rates"`` (the default) the module measures
each layer's presynaptic rate on one training batch, layer after layer, and redraws the closed
form with it; ``"membrane"`` (LSUV-like, for neurons and inputs the closed form does not cover:
rectified IF, correlated inputs) measures the free membrane itself on that batch and rescales
each projection's weights until its mean and fluctuation match the target; ``"none"`` assumes
``rate`` everywhere. A calibration keeps each weight row's draw and only maps it affinely, so it
uses no random numbers (same result on every DDP rank, resumable runs unaffected).
A projection of fan-in one cannot be standardised: its weight is ``mu_w + sigma_w``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from spikelight.neurons.base import Neuron

CALIBRATIONS = ("none", "rates", "membrane")
#: a threshold no membrane reaches: the neuron's own step then gives its free membrane
_UNREACHABLE = 1e30


def _number(key: str, value, lo=-math.inf, hi=math.inf, open_lo=True, open_hi=True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"weight_init.{key} must be a finite number, got {value!r}")
    too_low = value <= lo if open_lo else value < lo
    too_high = value >= hi if open_hi else value > hi
    if too_low or too_high:
        left, right = "(" if open_lo else "[", ")" if open_hi else "]"
        raise ValueError(
            f"weight_init.{key}={value!r}: expected a number in {left}{lo}, {hi}{right}"
        )
    return float(value)


class RowScale(nn.Module):
    """Parametrization ``weight = scale * unit`` with a fixed per-row ``scale`` (a buffer).

    Adam moves every stored coordinate by about ``lr`` per step, so storing each row in units of
    its initial scale makes ``lr`` the same *relative* step for every projection, whatever the
    neuron, kernel or fan-in made that scale (a trust ratio fixed at initialisation, as LAMB's
    is per step). ``linear.weight`` still reads the effective weights.
    """

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().reshape(-1, 1).clone())

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        return unit * self.scale

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / self.scale


@torch.no_grad()
def set_weight(linear: nn.Linear, weight: torch.Tensor, relative: bool = False) -> None:
    """Write ``weight`` into ``linear``; with ``relative``, stored in units of its row RMS."""
    if not relative:
        linear.weight.copy_(weight)
        return
    scale = weight.pow(2).mean(1).sqrt().clamp_min(1e-30)
    if parametrize.is_parametrized(linear, "weight"):
        linear.parametrizations.weight[0].scale.copy_(scale[:, None])
        linear.parametrizations.weight.original.copy_(weight / scale[:, None])
    else:
        linear.weight.copy_(weight)
        parametrize.register_parametrization(linear, "weight", RowScale(scale))


def spiking_targets(network) -> list[tuple[nn.Module, list[tuple[str, nn.Linear]]]]:
    """Each population and the projections onto it: ``(neuron, [(kind, linear), ...])``."""
    targets = []
    for layer in network.layers:
        projections = [("ff", layer.fc)] + ([("rec", layer.rec)] if layer.rec is not None else [])
        targets.append((layer.neuron, projections))
    targets.append((network.readout, [("ff", network.readout_fc)]))
    return targets


class ScaledNormal:
    """``w ~ N(0, (scale / sqrt(fan_in))^2)`` for every projection (one scale for all).

    The published presets that hand-pick their scale keep it with this initialisation.
    """

    def __init__(self, scale: float = 7.0) -> None:
        self.scale = _number("scale", scale, lo=0.0)

    def initialize(self, network) -> None:
        for _, projections in spiking_targets(network):
            for _, linear in projections:
                nn.init.normal_(linear.weight, std=self.scale / math.sqrt(linear.in_features))

    def calibrate(self, network, x: torch.Tensor) -> None:
        """Nothing to measure: the scale is fixed."""

    def __repr__(self) -> str:
        return f"ScaledNormal(scale={self.scale:g})"


RECURRENT_INITS = ("uniform", "orthogonal")


class Uniform:
    """``w ~ U(-scale / sqrt(fan_in), scale / sqrt(fan_in))`` for every feed-forward projection
    (the hidden layers' and the readout's); recurrent weights the same, or with
    ``recurrent="orthogonal"`` a random orthogonal matrix times ``scale``
    (``torch.nn.init.orthogonal_``).

    With ``scale=1`` and ``recurrent="orthogonal"`` this is SE-adLIF's initialisation (Baronig
    et al. 2024, ``models/alif.py`` ``reset_parameters``: ``uniform_`` within
    ``+-sqrt(1 / in_features)``, ``orthogonal_(gain=1.0)``; ``models/li.py`` for the readout).
    """

    def __init__(self, scale: float = 1.0, recurrent: str = "uniform") -> None:
        self.scale = _number("scale", scale, lo=0.0)
        if recurrent not in RECURRENT_INITS:
            raise ValueError(
                f"weight_init.recurrent must be one of {list(RECURRENT_INITS)}, got {recurrent!r}"
            )
        self.recurrent = recurrent

    @torch.no_grad()
    def initialize(self, network) -> None:
        for _, projections in spiking_targets(network):
            for kind, linear in projections:
                if kind == "rec" and self.recurrent == "orthogonal":
                    nn.init.orthogonal_(linear.weight, gain=self.scale)
                else:
                    bound = self.scale / math.sqrt(linear.in_features)
                    nn.init.uniform_(linear.weight, -bound, bound)

    def calibrate(self, network, x: torch.Tensor) -> None:
        """Nothing to measure: the scale is fixed."""

    def __repr__(self) -> str:
        return f"Uniform(scale={self.scale:g}, recurrent={self.recurrent})"


def free_membrane(population: nn.Module, current: torch.Tensor) -> torch.Tensor:
    """The membrane ``[T, B, N]`` that ``current [T, B, N]`` drives with no threshold.

    For a spiking neuron this runs its own ``step`` with an unreachable threshold, so the
    dynamics come from the one definition; a leaky readout has no threshold already.
    """
    if not isinstance(population, Neuron):
        return population(current, fused=False)
    coeffs = population.coefficients().map(torch.Tensor.detach)
    coeffs = dataclasses.replace(coeffs, threshold=torch.full_like(coeffs.threshold, _UNREACHABLE))
    state = population.initial_state(current.shape[1], current)
    index = population.state_names.index(population.membrane)
    trace = []
    for current_t in current.unbind(0):
        _, state = population.step(current_t, state, coeffs)
        trace.append(state[index])
    return torch.stack(trace)


def psp_kernel(population: nn.Module, steps: int) -> torch.Tensor:
    """``eps [steps, N]``: each neuron's free-membrane response to one unit input at step 0."""
    dtype = next(iter(population.state_dict().values())).dtype
    impulse = torch.zeros(steps, 2, population.size, dtype=dtype)
    impulse[0, 0] = 1.0  # batch row 1 stays at rest: its trace is subtracted (v_leak, offsets)
    with torch.no_grad():
        trace = free_membrane(population, impulse)
    return trace[:, 0] - trace[:, 1]


class FluctuationDriven:
    """Weights that put each layer's membrane at a target mean and fluctuation; see module.

    ``mu_u``: target mean of the free membrane, as a fraction of the threshold (< 1).
    ``xi``: the threshold's distance from that mean, in standard deviations (> 0).
    ``alpha``: share of a recurrent layer's membrane variance from its feed-forward input.
    ``rate``: presynaptic firing rate (Hz) assumed where it is not measured.
    ``num_steps``: the sample length ``T`` (the kernel sums run over it).
    ``calibrate``: ``rates`` | ``membrane`` | ``none``; see the module docstring.
    ``relative_lr``: store each weight row in units of its initial RMS (:class:`RowScale`), so
    the optimiser's learning rate is relative to each projection's scale.
    """

    def __init__(
        self,
        mu_u: float = 0.0,
        xi: float = 1.0,
        alpha: float = 0.9,
        rate: float = 10.0,
        num_steps: int = 100,
        calibrate: str = "rates",
        relative_lr: bool = True,
    ) -> None:
        self.mu_u = _number("mu_u", mu_u, hi=1.0)
        self.xi = _number("xi", xi, lo=0.0)
        self.alpha = _number("alpha", alpha, lo=0.0, hi=1.0, open_hi=False)
        self.rate = _number("rate", rate, lo=0.0)
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"weight_init.num_steps must be an integer >= 1, got {num_steps!r}")
        self.num_steps = num_steps
        if calibrate not in CALIBRATIONS:
            raise ValueError(
                f"weight_init.calibrate must be one of {list(CALIBRATIONS)}, got {calibrate!r}"
            )
        self.calibrate_mode = calibrate
        if not isinstance(relative_lr, bool):
            raise ValueError(f"weight_init.relative_lr must be true or false, got {relative_lr!r}")
        self.relative_lr = relative_lr

    def __repr__(self) -> str:
        return (
            f"FluctuationDriven(mu_u={self.mu_u:g}, xi={self.xi:g}, alpha={self.alpha:g}, "
            f"rate={self.rate:g}, num_steps={self.num_steps}, calibrate={self.calibrate_mode}, "
            f"relative_lr={self.relative_lr})"
        )

    # -- the target and the closed form -------------------------------------------------
    def targets(self, population: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-neuron target mean and standard deviation of the free membrane."""
        if isinstance(population, Neuron):
            threshold = population.get("threshold").detach()
        else:  # a leaky readout: no threshold; membranes of order one
            threshold = torch.ones(population.size)
        return self.mu_u * threshold, (1 - self.mu_u) * threshold / self.xi

    def shares(self, projections) -> list[tuple[float, float]]:
        """``(mean share, variance share)`` of each projection onto one population."""
        total = sum(linear.in_features for _, linear in projections)
        recurrent = any(kind == "rec" for kind, _ in projections)
        result = []
        for kind, linear in projections:
            variance = 1.0 if not recurrent else (self.alpha if kind == "ff" else 1 - self.alpha)
            result.append((linear.in_features / total, variance))
        return result

    def weight_moments(self, population, fan_in: int, p, shares, kernel=None):
        """Closed form: per-neuron ``(mu_w, sigma_w)`` for ``fan_in`` inputs spiking w.p. ``p``."""
        mean_share, var_share = shares
        kernel = psp_kernel(population, self.num_steps) if kernel is None else kernel
        s1, s2 = kernel.sum(0).double(), kernel.pow(2).sum(0).double()
        mu_u, sigma_u = (t.double() for t in self.targets(population))
        p = float(p)
        mu_w = mean_share * mu_u / (fan_in * p * s1)
        sigma2 = var_share * sigma_u**2 / (fan_in * p * (1 - p) * s2) - mu_w**2
        if (sigma2 < 0).any():
            raise ValueError(
                f"weight_init.mu_u={self.mu_u:g} with weight_init.xi={self.xi:g}: the mean "
                "membrane alone already fluctuates more than the target; lower mu_u or xi"
            )
        dtype = torch.get_default_dtype()
        return mu_w.to(dtype), sigma2.sqrt().to(dtype)

    # -- drawing and calibrating ----------------------------------------------------------
    def initialize(self, network) -> None:
        """Draw every projection from the closed form with the assumed ``rate``."""
        for population, projections in spiking_targets(network):
            p = self.spike_probability(population.dt)
            kernel = psp_kernel(population, self.num_steps)
            for (_, linear), shares in zip(projections, self.shares(projections), strict=True):
                nn.init.normal_(linear.weight)
                mu_w, sigma_w = self.weight_moments(
                    population, linear.in_features, p, shares, kernel
                )
                z = _standardized_rows(linear.weight.detach())
                set_weight(linear, mu_w[:, None] + sigma_w[:, None] * z, self.relative_lr)

    def spike_probability(self, dt: float) -> float:
        """The assumed ``rate`` as spikes per step of ``dt``; an error unless below one."""
        p = self.rate * dt
        if not p < 1:
            raise ValueError(
                f"weight_init.rate={self.rate:g} Hz is {p:g} spikes per step of "
                f"dt={dt:g} s: expected less than one spike per step"
            )
        return p

    @torch.no_grad()
    def calibrate(self, network, x: torch.Tensor) -> None:
        """Re-derive every projection from one batch ``x [T, B, C]``, layer after layer."""
        if self.calibrate_mode == "none":
            return
        x = x.to(network.readout_fc.weight.dtype)
        h, binary = x, False
        targets = spiking_targets(network)
        for index, (population, projections) in enumerate(targets):
            spiking = index < len(network.layers)
            layer = network.layers[index] if spiking else None
            for _ in range(3 if len(projections) > 1 else 1):  # recurrence: its own rate
                rec_input = None
                if len(projections) > 1:
                    z = layer(h, network.fused, binary)
                    rec_input = torch.cat([torch.zeros_like(z[:1]), z[:-1]])
                for (kind, linear), shares in zip(
                    projections, self.shares(projections), strict=True
                ):
                    source = h if kind == "ff" else rec_input
                    if kind == "rec" and not source.any():
                        continue  # a silent layer: keep the assumed-rate recurrent weights
                    self._fit(population, linear, source, shares)
            if spiking:
                h = layer(h, network.fused, binary)
                binary = network.fused and layer.autograd_reason is None

    def _fit(self, population, linear: nn.Linear, source: torch.Tensor, shares) -> None:
        """Map ``linear``'s weight rows affinely so that ``source`` drives the target."""
        w = linear.weight.detach()
        z = _standardized_rows(w)
        if self.calibrate_mode == "rates":
            p = source.float().mean().item()
            if p <= 0:
                return  # no input spikes in the batch: keep the assumed-rate draw
            mu_w, sigma_w = self.weight_moments(population, linear.in_features, p, shares)
            set_weight(linear, mu_w[:, None] + sigma_w[:, None] * z, self.relative_lr)
            return
        mean_share, var_share = shares
        mu_u, sigma_u = self.targets(population)
        mu_u, sigma_u = (mean_share * mu_u).to(w), (math.sqrt(var_share) * sigma_u).to(w)
        # free membranes of the standardized rows and of all-ones rows, per neuron
        u_z = free_membrane(population, nn.functional.linear(source, z)).flatten(0, 1)
        drive = source.sum(-1, keepdim=True).expand(*source.shape[:2], w.shape[0])
        ones = free_membrane(population, drive).flatten(0, 1)
        # w = a + b z per row: its free membrane is a C + b U_z. Pick a, b per neuron so that
        # a mean(C) + b mean(U_z) = mu_u and Var(a C + b U_z) = sigma_u^2 (a quadratic in b).
        c_mean, z_mean = ones.mean(0), u_z.mean(0)
        if not (c_mean > 0).all():
            return  # some neuron gets no input spikes in the batch: keep the draw
        r = 1 / c_mean
        var_c, var_z = ones.var(0, correction=0), u_z.var(0, correction=0)
        cov = ((u_z - z_mean) * (ones - c_mean)).mean(0)
        quad = (r * z_mean) ** 2 * var_c - 2 * r * z_mean * cov + var_z
        lin = 2 * r * mu_u * (cov - r * z_mean * var_c)
        const = (r * mu_u) ** 2 * var_c - sigma_u**2
        b = (-lin + (lin**2 - 4 * quad * const).clamp_min(0).sqrt()) / (2 * quad.clamp_min(1e-30))
        a = r * (mu_u - z_mean * b)
        set_weight(linear, a[:, None] + b[:, None] * z, self.relative_lr)


def _standardized_rows(w: torch.Tensor) -> torch.Tensor:
    """Each row minus its mean, over its standard deviation (a row of one entry: ``1``)."""
    if w.shape[1] < 2:
        return torch.ones_like(w)
    centred = w - w.mean(1, keepdim=True)
    return centred / centred.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-30)
