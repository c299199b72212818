"""Current-based leaky integrate-and-fire neuron."""

from __future__ import annotations

from spikelight.neurons.base import Neuron


class LIF(Neuron):
    """Current-based LIF with exponential synaptic current.

    Continuous time: ``tau_syn di/dt = -i + input``, ``tau_mem dv/dt = (v_leak - v) + i``.
    Per step of ``dt`` (exact exponential integration, current held over the step)::

        i_t = a_syn * i_{t-1} + x_t                        a_syn = exp(-dt / tau_syn)
        v_t = v_leak + a_mem * (v_{t-1} - v_leak) + (1 - a_mem) * i_t
        z_t = H(v_t - threshold);  reset v_t (subtract threshold | to v_reset | none)

    As the linear step of :mod:`.dynamics` (state ``(i, v)``, ``g = 1 - a_mem``):
    ``A = [[a_syn, 0], [g a_syn, a_mem]]``, ``B = [1, g]``, ``c = [0, g v_leak]``.

    ``i`` is in voltage units, so a constant current ``I`` charges ``v`` towards ``v_leak + I``
    with time constant ``tau_mem``, and learning ``tau_mem`` does not change the steady-state
    gain. ``v`` starts at ``v_leak`` (rest), ``i`` at zero. Defaults follow Norse.
    """

    state_names = ("i", "v")

    def __init__(
        self,
        size,
        surrogate,
        trainable=(),
        dt=1e-3,
        tau_mem=10e-3,
        tau_syn=5e-3,
        v_leak=0.0,
        threshold=1.0,
        v_reset=0.0,
        reset="subtract",
        detach_reset=True,
        tau_mem_bounds=(1e-3, 0.5),
        tau_syn_bounds=(1e-3, 0.5),
        tau_init=None,
    ):
        super().__init__(size, surrogate, trainable, dt, reset, detach_reset, tau_init)
        self.add_time_constant("tau_mem", tau_mem, tau_mem_bounds)
        self.add_time_constant("tau_syn", tau_syn, tau_syn_bounds)
        self.add_voltage("v_leak", v_leak)
        self.add_threshold(threshold)
        self.add_voltage("v_reset", v_reset)
        if type(self) is LIF:  # subclasses add their own parameters, then check
            self.check_trainable()

    def dynamics(self):
        return self.linear(**self.parts())

    def parts(self) -> dict:
        """The coefficients of the step, by group (:meth:`Neuron.linear`); ALIF adds its own."""
        a_syn, a_mem = self.decay("tau_syn"), self.decay("tau_mem")
        gain = 1 - a_mem
        parts = {"pre": {(0, 0): a_syn, (1, 0): gain * a_syn, (1, 1): a_mem},
                 "inputs": {0: 1.0, 1: gain}}  # fmt: skip
        if self.has_leak():
            v_leak = self.get("v_leak")
            parts.update(constants={1: gain * v_leak}, initial={1: v_leak})
        return parts
