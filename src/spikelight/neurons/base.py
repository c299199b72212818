"""Shared machinery of spiking neurons: per-neuron parameters, reset, the time loop.

A neuron module maps input current ``[T, B, N]`` to spikes ``[T, B, N]`` starting from its rest
state at every call. Each named neuron parameter (``tau_mem``, ``threshold``, ...) is a per-neuron
tensor stored unconstrained as ``<name>_raw`` and read through a constraint
(:mod:`spikelight.constraints`); it is an ``nn.Parameter`` when its name is in ``trainable`` and a
buffer otherwise, so optimisers and checkpoints see exactly what the config selected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from spikelight import checks
from spikelight.checks import ArgumentError
from spikelight.constraints import Identity, LogInterval, Positive
from spikelight.init import Homogeneous
from spikelight.neurons import dynamics
from spikelight.neurons.dynamics import Dynamics
from spikelight.surrogates import Surrogate

RESET_MODES = ("zero", "subtract", "none")
RAW_SUFFIX = "_raw"


class Neuron(nn.Module):
    """Base class. Subclasses declare parameters in ``__init__`` and implement ``dynamics``."""

    #: names of the state tensors, in the order ``step`` takes and returns them
    state_names: tuple[str, ...] = ()
    #: the state that holds the membrane potential (what the threshold is compared with)
    membrane: str = "v"

    def __init__(
        self,
        size: int,
        surrogate: Surrogate,
        trainable: Iterable[str] = (),
        dt: float = 1e-3,
        reset: str = "subtract",
        detach_reset: bool = True,
        tau_init: Callable[[float, int], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.size = checks.positive_int("size", size)
        self.surrogate = surrogate
        self.dt = checks.positive("dt", dt)
        self.reset = checks.choice("reset", reset, RESET_MODES)
        self.detach_reset = checks.boolean("detach_reset", detach_reset)
        self.tau_init = tau_init if tau_init is not None else Homogeneous()
        self._requested_trainable = set(trainable)
        self._constraints: dict[str, Callable] = {}

    # -- parameters ---------------------------------------------------------------------
    def add_neuron_parameter(self, name: str, value: torch.Tensor | float, constraint) -> None:
        """Register per-neuron ``name`` as a Parameter (if selected as trainable) or buffer."""
        value = torch.as_tensor(value, dtype=torch.get_default_dtype())
        value = value.expand(self.size).clone() if value.dim() == 0 else value
        try:
            raw = constraint.to_raw(value)
        except ValueError as err:
            raise ArgumentError(
                name, value.tolist(), f"a value the constraint takes ({err})"
            ) from None
        if name in self._requested_trainable:
            self.register_parameter(name + RAW_SUFFIX, nn.Parameter(raw))
        else:
            self.register_buffer(name + RAW_SUFFIX, raw)
        self._constraints[name] = constraint

    def add_time_constant(self, name: str, mean: float, bounds: Iterable[float]) -> None:
        """A time constant in seconds, drawn by ``tau_init`` and kept inside ``bounds``."""
        mean = checks.positive(name, mean)
        lo, hi = checks.interval(f"{name}_bounds", bounds, positive_bounds=True)
        if not lo <= mean <= hi:
            raise ArgumentError(f"{name}_bounds", bounds, f"[min, max] around {name}={mean:g}")
        if mean <= self.dt:
            raise ArgumentError("dt", self.dt, f"a step shorter than {name}={mean:g} s")
        values = self.tau_init(mean, self.size).clamp(lo, hi)
        self.add_neuron_parameter(name, values, LogInterval(lo, hi))

    def add_threshold(self, value: float) -> None:
        self.add_neuron_parameter("threshold", checks.positive("threshold", value), Positive())

    def add_voltage(self, name: str, value: float) -> None:
        self.add_neuron_parameter(name, checks.finite(name, value), Identity())

    def check_trainable(self) -> None:
        """Call at the end of a subclass ``__init__``: unknown trainable names are errors."""
        unknown = self._requested_trainable - set(self._constraints)
        if unknown:
            raise ArgumentError(
                "trainable",
                sorted(unknown),
                f"parameters of {type(self).__name__}: {sorted(self._constraints)}",
            )
        if "v_reset" in self._requested_trainable and self.reset != "zero":
            raise ArgumentError(
                "reset", self.reset, "'zero' when v_reset is trainable (other resets ignore it)"
            )

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(self._constraints)

    @property
    def trainable_names(self) -> tuple[str, ...]:
        return tuple(n for n in self._constraints if n in self._requested_trainable)

    def get(self, name: str) -> torch.Tensor:
        """The constrained per-neuron value of parameter ``name``."""
        return self._constraints[name](getattr(self, name + RAW_SUFFIX))

    @torch.no_grad()
    def set(self, name: str, values: torch.Tensor) -> None:
        """Make ``get(name)`` return per-neuron ``values`` (stored through the constraint)."""
        raw = getattr(self, name + RAW_SUFFIX)
        values = torch.as_tensor(values, dtype=raw.dtype, device=raw.device).expand(self.size)
        try:
            raw.copy_(self._constraints[name].to_raw(values))
        except ValueError as err:
            raise ValueError(f"neuron.{name}: {err}") from None

    def has_leak(self) -> bool:
        """Whether ``v_leak`` takes part (trained, or away from zero): else its terms are left
        out of the step."""
        return "v_leak" in self.trainable_names or bool(self.get("v_leak").any())

    def decay(self, tau_name: str) -> torch.Tensor:
        """``exp(-dt / tau)``: the factor a quantity with time constant tau keeps per step."""
        return torch.exp(-self.dt / self.get(tau_name))

    # -- dynamics -----------------------------------------------------------------------
    def dynamics(self) -> Dynamics | None:
        """This neuron's step as coefficients of the linear form (:mod:`.dynamics`), built from
        its constrained parameters so that autograd carries their gradients; None for a neuron
        whose step is not of that form (it then overrides ``coefficients`` and ``step``)."""
        return None

    def linear(self, **parts) -> Dynamics:
        """:class:`Dynamics` with this neuron's states, reset, surrogate and threshold."""
        return Dynamics.build(
            self.size, self.get("threshold"), states=self.state_names,
            membrane=self.state_names.index(self.membrane), reset=self.reset,
            detach_reset=self.detach_reset, surrogate=self.surrogate,
            threshold=self.get("threshold"),
            v_reset=self.get("v_reset") if self.reset == "zero" else None, **parts,
        )  # fmt: skip

    def fused_reason(self) -> str | None:
        """Why the fused time loop cannot run this neuron, or None when it can."""
        if self.surrogate.smooth_forward:
            return "the surrogate's smooth forward pass makes no binary spikes"
        if type(self).step is not Neuron.step or type(self).dynamics is Neuron.dynamics:
            return f"{type(self).__name__} defines its own step"
        return None

    def coefficients(self):
        """Per-sequence constants (decays, thresholds) computed once before the time loop."""
        return self.dynamics()

    def initial_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.coefficients().initial_state(batch, like)

    def step(self, x, state, coeffs):
        """One time step: ``(input [B, N], state, coeffs) -> (spikes [B, N], new state)``."""
        z, _, state = dynamics.step(coeffs, x, state)
        return z, state

    def forward(self, x: torch.Tensor, return_traces: bool = False):
        """Run over a whole sequence ``x [T, B, N]``; optionally also return state traces."""
        if x.dim() != 3 or x.shape[-1] != self.size:
            raise ValueError(
                f"{type(self).__name__} expects input [T, B, {self.size}], got {tuple(x.shape)}"
            )
        coeffs = self.coefficients()
        state = self.initial_state(x.shape[1], x)
        spikes, traces = [], {name: [] for name in self.state_names}
        for x_t in x.unbind(0):
            z, state = self.step(x_t, state, coeffs)
            spikes.append(z)
            if return_traces:
                for name, s in zip(self.state_names, state, strict=True):
                    traces[name].append(s)
        spikes = torch.stack(spikes)
        if return_traces:
            return spikes, {name: torch.stack(t) for name, t in traces.items()}
        return spikes

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, dt={self.dt:g}, reset={self.reset}, "
            f"detach_reset={self.detach_reset}, trainable={list(self.trainable_names)}"
        )
