"""Train a spiking network: ``python train.py neuron=lif surrogate=superspike`` (see README)."""

from spikelight.train import main

if __name__ == "__main__":
    main()
