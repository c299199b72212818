"""Integrate-and-fire neuron without leak."""

from __future__ import annotations

from spikelight.neurons.base import Neuron


class IF(Neuron):
    """Integrate-and-fire: ``v <- v + I``; spike when ``v > threshold``; reset.

    With ``rectify`` the membrane is clipped at zero after each step, as in the classic
    IF-neuron MNIST tutorial, so strong inhibition cannot bury a neuron for the whole sample.
    Parameters: ``threshold``, ``v_reset`` (the target of ``reset="zero"``). ``dt`` only sets
    the time axis (for rates in spikes per second); the dynamics do not depend on it.
    """

    state_names = ("v",)

    def __init__(
        self,
        size,
        surrogate,
        trainable=(),
        dt=1e-3,
        threshold=1.0,
        v_reset=0.0,
        reset="subtract",
        detach_reset=True,
        rectify=False,
        tau_init=None,
    ):
        super().__init__(size, surrogate, trainable, dt, reset, detach_reset, tau_init)
        self.rectify = bool(rectify)
        self.add_threshold(threshold)
        self.add_voltage("v_reset", v_reset)
        self.check_trainable()

    def dynamics(self):
        return self.linear(pre={(0, 0): 1.0}, inputs={0: 1.0}, rectify=self.rectify)
