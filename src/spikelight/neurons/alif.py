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

    def parts(self):
        """``b`` passes through the pre-spike update unchanged, is added to the threshold, and
        after the spike becomes ``a_adapt b + adapt_jump z``."""
        parts = super().parts()
        parts["pre"][(2, 2)] = 1.0
        parts.update(adaptive=2, post={(2, 2): self.decay("tau_adapt")},
                     post_spike={2: self.adapt_jump})  # fmt: skip
        return parts
