"""Adaptive LIF neuron with a second, adaptation variable coupled to the membrane (adLIF)."""

from __future__ import annotations

from spikelight import checks
from spikelight.checks import ArgumentError
from spikelight.constraints import Interval
from spikelight.neurons.base import Neuron

DISCRETIZATIONS = ("euler", "symplectic")


class AdLIF(Neuron):
    """Adaptive LIF (adLIF) of Bittar & Garner 2022 and Baronig et al. 2024.

    Per step of ``dt`` (``a_mem = exp(-dt/tau_mem)``, ``a_w = exp(-dt/tau_adapt)``)::

        u_t = a_mem * u_{t-1} + (1 - a_mem) * (x_t - w_{t-1})
        z_t = H(u_t - threshold);  reset u_t (subtract threshold | to v_reset)
        w_t = a_w * w_{t-1} + (1 - a_w) * adapt_scale * (adapt_a * u + adapt_b * z)

    The adaptation current ``w`` is driven by the membrane (``adapt_a``: sub-threshold coupling,
    which can make the neuron resonate) and by its spikes (``adapt_b``: spike-triggered
    adaptation). ``discretization="euler"`` uses the previous step's ``(u_{t-1}, z_{t-1})``
    there (the forward-Euler adLIF of Bittar & Garner); ``"symplectic"`` uses this step's
    ``(u_t, z_t)`` after the reset (SE-adLIF of Baronig et al.), which keeps the discretised
    oscillation stable for any time constants. ``adapt_scale`` is Baronig's ``q``: it
    compensates the small ``1 - a_w`` so that ``adapt_a`` and ``adapt_b`` stay of order one.
    ``u``, ``w`` and ``z`` start at zero.

    Trainable parameters: ``tau_mem``, ``tau_adapt`` (kept inside their bounds),
    ``adapt_a`` and ``adapt_b`` (kept inside ``adapt_a_bounds`` / ``adapt_b_bounds`` by a scaled
    sigmoid), ``threshold``, ``v_reset``.
    """

    state_names = ("u", "w", "z")
    membrane = "u"

    def __init__(
        self,
        size,
        surrogate,
        trainable=(),
        dt=1e-3,
        tau_mem=10e-3,
        tau_adapt=150e-3,
        adapt_a=0.5,
        adapt_b=1.0,
        adapt_scale=120.0,
        threshold=1.0,
        v_reset=0.0,
        reset="zero",
        detach_reset=True,
        discretization="symplectic",
        tau_mem_bounds=(5e-3, 25e-3),
        tau_adapt_bounds=(60e-3, 300e-3),
        adapt_a_bounds=(0.0, 1.0),
        adapt_b_bounds=(0.0, 2.0),
        tau_init=None,
    ):
        super().__init__(size, surrogate, trainable, dt, reset, detach_reset, tau_init)
        self.discretization = checks.choice("discretization", discretization, DISCRETIZATIONS)
        self.adapt_scale = checks.positive("adapt_scale", adapt_scale)
        self.add_time_constant("tau_mem", tau_mem, tau_mem_bounds)
        self.add_time_constant("tau_adapt", tau_adapt, tau_adapt_bounds)
        for name, value, bounds in (
            ("adapt_a", adapt_a, adapt_a_bounds),
            ("adapt_b", adapt_b, adapt_b_bounds),
        ):
            lo, hi = checks.interval(f"{name}_bounds", bounds)
            if not (checks.is_number(value) and lo <= value <= hi):
                raise ArgumentError(name, value, f"a number inside {name}_bounds=[{lo:g}, {hi:g}]")
            self.add_neuron_parameter(name, float(value), Interval(lo, hi))
        self.add_threshold(threshold)
        self.add_voltage("v_reset", v_reset)
        self.check_trainable()

    def coefficients(self):
        coeffs = super().coefficients()
        coeffs["a_mem"] = self.decay("tau_mem")
        coeffs["a_w"] = self.decay("tau_adapt")
        return coeffs

    def step(self, x, state, coeffs):
        u_prev, w, z_prev = state
        a_mem, a_w = coeffs["a_mem"], coeffs["a_w"]
        u = a_mem * u_prev + (1 - a_mem) * (x - w)
        z, u = self.spike_and_reset(u, coeffs["threshold"], coeffs)
        u_drive, z_drive = (u, z) if self.discretization == "symplectic" else (u_prev, z_prev)
        drive = coeffs["adapt_a"] * u_drive + coeffs["adapt_b"] * z_drive
        w = a_w * w + (1 - a_w) * self.adapt_scale * drive
        return z, (u, w, z)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, discretization={self.discretization}"
