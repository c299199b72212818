"""Resonate-and-fire neuron: a damped oscillator that fires on its real part (Izhikevich 2001)."""

from __future__ import annotations

import math

from spikelight import checks
from spikelight.checks import ArgumentError
from spikelight.constraints import LogInterval
from spikelight.neurons.base import Neuron


class RF(Neuron):
    """Linear resonate-and-fire: ``dz/dt = (-1/tau_mem + i 2 pi frequency) z + input``, complex
    ``z = v + i y``, a spike when ``v > threshold`` (Izhikevich 2001; the RF neurons of Higuchi
    et al. 2024 without their refractory damping).

    Per step of ``dt`` the state rotates by ``phi = 2 pi frequency dt`` and decays by
    ``r = exp(-dt / tau_mem)`` (exact), and the input enters the real part::

        v_t = r (cos phi v_{t-1} - sin phi y_{t-1}) + (1 - r) x_t
        y_t = r (sin phi v_{t-1} + cos phi y_{t-1})
        z_t = H(v_t - threshold);  reset v_t (subtract threshold | to v_reset | none)

    The input gain ``1 - r`` makes a non-rotating RF (``frequency -> 0``) the membrane of a LIF
    without synaptic current. An input pulse rings at ``frequency``, so the neuron responds most
    to input spikes that arrive one period apart: a band-pass filter of its input rate. Trainable
    parameters: ``tau_mem``, ``frequency`` (Hz, kept inside ``frequency_bounds``, below the
    Nyquist rate ``1 / (2 dt)``), ``threshold``, ``v_reset``.
    """

    state_names = ("v", "y")

    def __init__(
        self,
        size,
        surrogate,
        trainable=(),
        dt=1e-3,
        tau_mem=20e-3,
        frequency=20.0,
        threshold=1.0,
        v_reset=0.0,
        reset="subtract",
        detach_reset=True,
        tau_mem_bounds=(1e-3, 0.5),
        frequency_bounds=(1.0, 200.0),
        tau_init=None,
    ):
        super().__init__(size, surrogate, trainable, dt, reset, detach_reset, tau_init)
        self.add_time_constant("tau_mem", tau_mem, tau_mem_bounds)
        lo, hi = checks.interval("frequency_bounds", frequency_bounds, positive_bounds=True)
        if hi >= 0.5 / self.dt:
            nyquist = f"frequencies below the Nyquist rate 1/(2 dt) = {0.5 / dt:g} Hz"
            raise ArgumentError("frequency_bounds", frequency_bounds, nyquist)
        if not (checks.is_number(frequency) and lo <= frequency <= hi):
            raise ArgumentError("frequency", frequency, f"a number inside [{lo:g}, {hi:g}] Hz")
        self.add_neuron_parameter("frequency", float(frequency), LogInterval(lo, hi))
        self.add_threshold(threshold)
        self.add_voltage("v_reset", v_reset)
        self.check_trainable()

    def dynamics(self):
        r = self.decay("tau_mem")
        phi = (2 * math.pi * self.dt) * self.get("frequency")
        cos, sin = r * phi.cos(), r * phi.sin()
        return self.linear(
            pre={(0, 0): cos, (0, 1): -sin, (1, 0): sin, (1, 1): cos}, inputs={0: 1 - r}
        )
