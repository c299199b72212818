"""LIF neuron with an adaptive threshold."""

from __future__ import annotations

from spikelight import checks
from spikelight.neurons.lif import LIF


class ALIF(LIF):
    """LIF whose threshold rises by ``adapt_jump`` per spike and relaxes with ``tau_adapt``.

    As the adaptive neurons of Bellec et al. 2018 (LSNN)::

        threshold_t = threshold + b_{t-1}
        z_t = H(v_t - threshold_t)        (reset subtracts threshold_t)
        b_t = a_adapt * b_{t-1} + adapt_jump * z_t      a_adapt = exp(-dt / tau_adapt)

    The adaptation ``b`` starts at zero. Spike-frequency adaptation gives the neuron a memory
    of its recent activity over ``tau_adapt`` (hundreds of ms), longer than ``tau_mem``.
    """

    state_names = ("i", "v", "b")

    def __init__(
        self,
        size,
        surrogate,
        trainable=(),
        tau_adapt=200e-3,
        adapt_jump=0.2,
        tau_adapt_bounds=(1e-3, 5.0),
        **lif_kwargs,
    ):
        """``lif_kwargs``: the :class:`LIF` parameters (dt, tau_mem, threshold, reset, ...)."""
        super().__init__(size, surrogate, trainable, **lif_kwargs)
        self.add_time_constant("tau_adapt", tau_adapt, tau_adapt_bounds)
        self.adapt_jump = checks.positive("adapt_jump", adapt_jump)
        self.check_trainable()

    def coefficients(self):
        coeffs = super().coefficients()
        coeffs["a_adapt"] = self.decay("tau_adapt")
        return coeffs

    def initial_state(self, batch, like):
        return (*super().initial_state(batch, like), like.new_zeros(batch, self.size))

    def fused_dynamics(self):
        if type(self).step is not ALIF.step:
            return None
        return self._dynamics(synapse=True, leaky=True, adaptive=True, adapt_jump=self.adapt_jump)

    def step(self, x, state, coeffs):
        i, v, b = state
        i, v = self.integrate(x, i, v, coeffs)
        z, v = self.spike_and_reset(v, coeffs["threshold"] + b, coeffs)
        b = coeffs["a_adapt"] * b + self.adapt_jump * z
        return z, (i, v, b)
