"""Spiking neuron models: plain ``nn.Module``s mapping input current [T, B, N] to spikes."""

from spikelight.neurons.adlif import AdLIF
from spikelight.neurons.alif import ALIF
from spikelight.neurons.base import Neuron
from spikelight.neurons.integrate_and_fire import IF
from spikelight.neurons.lif import LIF
from spikelight.neurons.resonate import RF

__all__ = ["ALIF", "IF", "LIF", "RF", "AdLIF", "Neuron"]
