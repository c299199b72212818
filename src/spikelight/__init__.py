"""spikelight: train spiking neural networks with surrogate gradients (Lightning + Hydra)."""

__version__ = "0.1.0"
