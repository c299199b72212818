"""Firing-rate regularisers (model.reg_l1, reg_l2, reg_l2_bound) against values worked out by
hand, and their place in the loss: added to the training loss only."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.nn import functional as F

from spikelight.module import SpikingClassifier, rate_regularizer
from spikelight.network import SpikingNetwork
from spikelight.neurons import LIF
from spikelight.surrogates import SuperSpike
from spikelight.weight_init import ScaledNormal


def spikes_from(rows):
    """``[T, B, N]`` spikes from ``rows[b][n]`` = the time steps where neuron n of sample b
    spikes, over T = 3 steps."""
    batch, neurons = len(rows), len(rows[0])
    z = torch.zeros(3, batch, neurons, dtype=torch.float64)
    for b, sample in enumerate(rows):
        for n, times in enumerate(sample):
            for t in times:
                z[t, b, n] = 1.0
    return z


# hidden0: sample 0: neuron 0 at t=0,2, neuron 1 at t=1 (3 spikes); sample 1: neuron 0 at t=1
#          (1 spike). Mean spikes per sample: (3 + 1) / 2 = 2. Per-neuron counts averaged over
#          the batch: c_0 = (2 + 1) / 2 = 1.5, c_1 = (1 + 0) / 2 = 0.5.
# hidden1: sample 0 spikes at t=0,1,2, sample 1 at t=0. Mean per sample 2; c_0 = 2.
SPIKES = {
    "hidden0": spikes_from([[[0, 2], [1]], [[1], []]]),
    "hidden1": spikes_from([[[0, 1, 2]], [[0]]]),
}


@pytest.mark.parametrize(
    "l1, l2, bound, expected",
    [
        (0.0, 0.0, 0.0, 0.0),
        # l1 * (mean spikes per sample, summed over layers) = 0.1 * (2 + 2)
        (0.1, 0.0, 0.0, 0.4),
        # l2 * mean_n c_n^2, summed over layers: 0.01 * ((1.5^2 + 0.5^2) / 2 + 2^2) = 0.01 * 5.25
        (0.0, 0.01, 0.0, 0.0525),
        # above a bound of 0.5: 0.01 * ((1^2 + 0^2) / 2 + 1.5^2) = 0.01 * 2.75
        (0.0, 0.01, 0.5, 0.0275),
        # a bound above every count: nothing
        (0.0, 0.01, 2.0, 0.0),
        (0.1, 0.01, 0.5, 0.4275),
    ],
)
def test_rate_regularizer_matches_the_hand_computed_value(l1, l2, bound, expected):
    value = rate_regularizer(SPIKES, l1, l2, bound)
    assert float(value) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_rate_regularizer_gradient_per_spike():
    """d/dz of l1 * mean_b sum z is l1 / B for every entry; of the l2 term with bound 0 it is
    l2 * 2 c_n / (N B) for the entries of neuron n."""
    z = SPIKES["hidden0"].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(rate_regularizer({"h": z}, 0.1, 0.0, 0.0), z)
    torch.testing.assert_close(grad, torch.full_like(z, 0.1 / 2))
    (grad,) = torch.autograd.grad(rate_regularizer({"h": z}, 0.0, 0.01, 0.0), z)
    per_neuron = torch.tensor([0.01 * 2 * 1.5 / (2 * 2), 0.01 * 2 * 0.5 / (2 * 2)])
    torch.testing.assert_close(grad, per_neuron.double().expand_as(z))


def classifier(**reg):
    torch.manual_seed(0)
    net = SpikingNetwork(
        num_inputs=10,
        num_classes=3,
        hidden=[12, 8],
        neuron=functools.partial(LIF),
        surrogate=SuperSpike(),
        weight_init=ScaledNormal(10.0),
    )
    return SpikingClassifier(net, functools.partial(torch.optim.Adam, lr=1e-3), **reg)


def hand_regularizer(spikes, l1, l2, bound):
    """The same regularisers counted with Python loops over every spike."""
    total = 0.0
    for z in spikes.values():
        steps, batch, neurons = z.shape
        per_sample = [
            sum(z[t, b, n].item() for t in range(steps) for n in range(neurons))
            for b in range(batch)
        ]
        counts = [
            sum(z[t, b, n].item() for t in range(steps) for b in range(batch)) / batch
            for n in range(neurons)
        ]
        total += l1 * sum(per_sample) / batch
        total += l2 * sum(max(c - bound, 0.0) ** 2 for c in counts) / neurons
    return total


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_training_loss_adds_the_configured_regularizers_and_evaluation_does_not():
    reg = {"reg_l1": 2e-3, "reg_l2": 5e-4, "reg_l2_bound": 1.5}
    model = classifier(**reg)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(6, 30, 10, generator=g) < 0.3).float()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    out = model.run_network(x)
    assert all(z.sum() > 0 for z in out.spikes.values())  # both layers spike
    cross_entropy = F.cross_entropy(out.logits, y).item()
    penalty = hand_regularizer(out.spikes, 2e-3, 5e-4, 1.5)
    assert penalty > 1e-3 * cross_entropy  # large enough to show
    counts = torch.cat([z.sum(0).mean(0) for z in out.spikes.values()])
    assert 0 < (counts > 1.5).sum() < len(counts)  # the bound spares some neurons, not all
    train_loss, _, _ = model._step((x, y), "train")
    assert train_loss.item() == pytest.approx(cross_entropy + penalty, rel=1e-6)
    for stage in ("val", "test"):
        loss, _, _ = model._step((x, y), stage)
        assert loss.item() == pytest.approx(cross_entropy, rel=1e-6), stage
    plain, _, _ = classifier()._step((x, y), "train")
    assert plain.item() == pytest.approx(cross_entropy, rel=1e-6)


@pytest.mark.parametrize("name", ["reg_l1", "reg_l2", "reg_l2_bound"])
def test_negative_regularizer_settings_are_rejected(name):
    with pytest.raises(ValueError, match=f"^{name}=-0.001: expected a finite number >= 0"):
        classifier(**{name: -1e-3})
