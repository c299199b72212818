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
        # euler keeps the last spike as a third state row
        self.state_names = ("u", "w") if discretization == "symplectic" else ("u", "w", "z")
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

    def dynamics(self):
        a_mem, a_w = self.decay("tau_mem"), self.decay("tau_adapt")
        gain, drive = 1 - a_mem, (1 - a_w) * self.adapt_scale
        from_u, from_z = drive * self.get("adapt_a"), drive * self.get("adapt_b")
        if self.discretization == "symplectic":  # w from this step's reset u and spike
            return self.linear(
                pre={(0, 0): a_mem, (0, 1): -gain, (1, 1): 1.0}, inputs={0: gain},
                post={(1, 0): from_u, (1, 1): a_w}, post_spike={1: from_z},
            )  # fmt: skip
        # euler: w from the previous step's u and spike, the spike kept as state row 2
        return self.linear(
            pre={(0, 0): a_mem, (0, 1): -gain, (1, 0): from_u, (1, 1): a_w, (1, 2): from_z},
            inputs={0: gain}, post_spike={2: 1.0},
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, discretization={self.discretization}"
