"""Mixed precision: the fused layers keep their state and surrogate in float32 under autocast."""

from __future__ import annotations

import math

import pytest
import torch

from spikelight.network import SpikingNetwork
from spikelight.neurons import LIF, AdLIF, native
from spikelight.neurons.fused import run_fused
from spikelight.surrogates import SuperSpike
from spikelight.train import train
from spikelight.weight_init import ScaledNormal
from tests.test_learning import SMALL_RANDMAN


@pytest.fixture(params=["native", "torch"], autouse=True)
def backend(request, monkeypatch):
    """The C loops and the PyTorch loops (the Triton kernels: tests/test_fused_triton.py)."""
    if request.param == "native" and native.library() is None:
        pytest.skip("the C loops are not built here (no C compiler)")
    monkeypatch.setattr(native, "_enabled", request.param == "native")


def neuron_and_current(cls):
    torch.manual_seed(0)
    neuron = cls(16, SuperSpike(), trainable=["tau_mem", "threshold"])
    current = (torch.randn(40, 3, 16) * (4.0 if cls is LIF else 40.0)).bfloat16()
    return neuron, current.requires_grad_()


@pytest.mark.parametrize("cls", [LIF, AdLIF])
def test_a_bfloat16_current_drives_a_float32_state(cls):
    """Under autocast a bf16 current gives exactly the spikes of the float32 layer on the same
    (rounded) values, and its gradients to within float32 rounding; a layer whose state were
    bf16 would not (checked: the bf16 autograd loop's spikes differ)."""
    neuron, current = neuron_and_current(cls)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spikes = run_fused(neuron, current)
    assert spikes.dtype == torch.float32 and 0 < spikes.mean() < 0.5
    reference_current = current.detach().float().requires_grad_()
    reference = run_fused(neuron, reference_current)
    assert torch.equal(spikes, reference)
    weights = torch.randn(spikes.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((spikes * weights).sum(), [current, *neuron.parameters()])
    expected = torch.autograd.grad((reference * weights).sum(),
                                   [reference_current, *neuron.parameters()])  # fmt: skip
    assert grads[0].dtype == torch.bfloat16  # the gradient goes back in the input's dtype
    torch.testing.assert_close(grads[0].float(), expected[0].bfloat16().float())
    for got, want in zip(grads[1:], expected[1:], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the sensitivity of the check: a bfloat16 state
        low = neuron.to(torch.bfloat16)(current.detach())
    assert not torch.equal(low.float(), reference)


def test_a_network_under_bfloat16_autocast_stays_close_to_float32():
    """Products in bfloat16 (8 bits of mantissa), the neurons in float32: the logits of a
    two-layer recurrent network stay within 5% of the float32 network's range (measured here:
    equal, no spike changes), and its weight gradient points the same way (cosine > 0.99;
    measured 0.99998, the backward's products being in bfloat16)."""
    torch.manual_seed(0)
    net = SpikingNetwork(12, 4, [32, 16], LIF, SuperSpike(), recurrent=True,
                         weight_init=ScaledNormal(7.0))  # fmt: skip
    x = (torch.rand(40, 3, 12, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    reference = net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.logits.dtype == torch.float32
    scale = reference.logits.abs().max()
    assert (out.logits - reference.logits).abs().max() < 0.05 * scale
    weight = net.layers[1].fc.weight
    (low,) = torch.autograd.grad(out.logits.sum(), weight)
    (high,) = torch.autograd.grad(reference.logits.sum(), weight)
    assert low.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(low.flatten(), high.flatten(), dim=0)
    assert cosine > 0.99, cosine


def test_training_with_bf16_mixed_precision_end_to_end(make_config):
    """``trainer.precision=bf16-mixed`` through the Trainer on the CPU: a short randman run
    with two layers (the second's input projection in bfloat16) gives finite metrics."""
    tiny = [o for o in SMALL_RANDMAN if not o.startswith(("data.samples", "trainer.max_epochs",
                                                          "model.network.hidden"))]  # fmt: skip
    metrics = train(make_config([*tiny, "data.samples_per_class=20", "trainer.max_epochs=1",
                                 "model.network.hidden=[32,16]",
                                 "trainer.precision=bf16-mixed"]))  # fmt: skip
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["train/rate/hidden1"] > 0
