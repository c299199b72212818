"""The fused layer's Triton kernels against the plain autograd loop.

On a machine with a CUDA device the kernels run there; elsewhere Triton's interpreter
(``TRITON_INTERPRET=1``) runs them on CPU tensors, on small sizes. Skipped where triton is not
installed. The whole matrix of neurons and resets is marked slow; the default run covers every
neuron, reset, surrogate and the recurrent, event, readout and float32 cases.
"""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("triton")

from spikelight.neurons import LIF, fused_triton, native  # noqa: E402
from spikelight.neurons.events import Events  # noqa: E402
from spikelight.neurons.fused import run_fused  # noqa: E402
from spikelight.surrogates import ATan, Exponential, Logistic, SuperSpike, Triangle  # noqa: E402
from tests.test_fused import (  # noqa: E402
    NEURONS,
    assert_same_training_signal,
    events,
    loss_and_grads,
    twin_networks,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def triton_kernels(monkeypatch):
    """The Triton kernels for every fused layer: on the GPU, or in the interpreter on CPU
    tensors (the C loops off, so that nothing else takes the layer)."""
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setattr(fused_triton, "_forced", True)
        monkeypatch.setattr(native, "_enabled", False)
    monkeypatch.delenv("SPIKELIGHT_TRITON", raising=False)


@pytest.fixture
def launches(monkeypatch):
    """Counts of the forward and backward kernel launches."""
    count = {"run": 0, "back": 0}
    for name in count:
        original = getattr(fused_triton.Kernel, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            count[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(fused_triton.Kernel, name, counted)
    return count


def on_device(nets, x):
    return [net.to(DEVICE) for net in nets], x.to(DEVICE)


CASES = [  # (neuron, reset, detach_reset, recurrent): every neuron, reset and both reset modes
    ("if", "subtract", True, True), ("if_rectify", "zero", False, False),
    ("lif", "zero", False, True), ("lif", "none", True, False),
    ("alif", "subtract", False, True), ("adlif", "zero", True, True),
    ("adlif_euler", "subtract", False, True), ("rf", "zero", False, True),
]  # fmt: skip


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(("kind", "reset", "detach_reset", "recurrent"), CASES)
def test_triton_gradients_equal_autograd_loop(kind, reset, detach_reset, recurrent, launches):
    nets, x = on_device(twin_networks(kind, reset, detach_reset, recurrent), events(steps=10))
    assert set(nets[0].time_loops().values()) >= {"fused, Triton kernels"}
    assert_same_training_signal(nets, x)
    assert launches["run"] > 0 and launches["back"] > 0


@pytest.mark.slow
@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("recurrent", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("detach_reset", [True, False], ids=["detach", "attach"])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("kind", NEURONS)
def test_triton_whole_matrix(kind, reset, detach_reset, recurrent):
    nets, x = on_device(twin_networks(kind, reset, detach_reset, recurrent), events(steps=20))
    assert_same_training_signal(nets, x)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("surrogate", [SuperSpike, Logistic, ATan, Triangle, Exponential])
def test_triton_every_surrogate(surrogate):
    nets = twin_networks("alif", "zero", False, True, surrogate=surrogate(beta=2.0))
    assert_same_training_signal(*on_device(nets, events(steps=8)))


@pytest.mark.usefixtures("float64")
def test_triton_surrogate_scale_learned_beta_and_spiking_readout():
    """The scale (SE-adLIF's SLAYER c), dL/dbeta from the kernel's dL/dz, a spiking readout."""
    scaled = twin_networks("adlif", "zero", False, True, surrogate=Exponential(2.0, scale=0.4))
    assert_same_training_signal(*on_device(scaled, events(steps=8)))
    learned = Logistic(beta=3.0, learn_beta=True)
    nets = twin_networks("lif", "subtract", True, True, decoding="spike_count",
                         surrogate=learned)  # fmt: skip
    nets, x = on_device(nets, events(steps=8))
    assert "readout" in nets[0](x).spikes
    assert_same_training_signal(nets, x)


@pytest.mark.usefixtures("float64")
def test_triton_sparse_events_and_loss_through_the_readout_only():
    """Event input projected in the layer, and the last layer's gradient via W_out only."""
    nets, x = on_device(twin_networks("lif", "subtract", True, True),
                        events(steps=12, density=0.03))  # fmt: skip
    assert Events.of(x) is not None
    assert_same_training_signal(nets, x, through_spikes=False)


@pytest.mark.parametrize("kind", ["lif", "adlif"])
def test_triton_float32_same_spikes(kind):
    """In float32 the spikes are the autograd loop's exactly (no fused multiply-adds), the
    gradients equal within float32 rounding."""
    torch.set_default_dtype(torch.float32)
    nets, x = on_device(twin_networks(kind, "subtract", True, True), events(steps=10).float())
    (out_f, grads_f), (out_a, grads_a) = (loss_and_grads(net, x) for net in nets)
    for name in out_a.spikes:
        assert out_a.spikes[name].sum() > 0
        assert torch.equal(out_f.spikes[name], out_a.spikes[name]), name
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("recurrent", [False, True], ids=["ff", "rec"])
def test_one_launch_per_chunk(launches, recurrent):
    """The forward, the recompute and the backward each take one launch per chunk of
    ceil(sqrt(T)) steps, whatever T (T = 16: 4 chunks), with a recurrence too (inside)."""
    neuron = LIF(5, SuperSpike(), trainable=["tau_mem"]).to(DEVICE)
    current = torch.randn(16, 2, 5, device=DEVICE, requires_grad=True)
    w = torch.randn(5, 5, device=DEVICE) if recurrent else None
    w = None if w is None else w.requires_grad_()
    run_fused(neuron, 3 * current, w).sum().backward()
    assert launches == {"run": 8, "back": 4}
    assert neuron.tau_mem_raw.grad.abs().sum() > 0


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("kind", ["lif", "adlif_euler"])
def test_triton_one_step_per_launch_above_recurrent_max(kind, monkeypatch, launches):
    """Layers wider than RECURRENT_MAX: one launch per step after a cuBLAS product."""
    monkeypatch.setattr(fused_triton, "RECURRENT_MAX", 4)  # the layers have 9 and 6 neurons
    nets, x = on_device(twin_networks(kind, "subtract", False, True), events(steps=9))
    assert_same_training_signal(nets, x)
    assert launches["back"] == 2 * 9  # one per step, in both layers


def test_a_triton_formula_that_differs_is_left_out(monkeypatch):
    """The load-time check: a wrong formula is refused with a warning, and the layer says why
    it runs the PyTorch loops."""
    wrong = dict(fused_triton.FORMULAS)
    wrong[Triangle] = ("return beta * tl.maximum(1.0 - tl.abs(x), 0.0)",)  # beta missing
    monkeypatch.setattr(fused_triton, "FORMULAS", wrong)
    fused_triton.checked_surrogates.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="Triangle"):
            checked = fused_triton.checked_surrogates(DEVICE)
        assert Triangle not in checked and SuperSpike in checked
        like = torch.zeros(1, device=DEVICE)
        assert "no checked Triton formula" in fused_triton.unavailable(Triangle(), like)
    finally:
        fused_triton.checked_surrogates.cache_clear()


def test_the_kernels_run_where_triton_is_switched_off_only_by_choice(monkeypatch):
    monkeypatch.setenv("SPIKELIGHT_TRITON", "0")
    like = torch.zeros(1, device=DEVICE)
    assert "SPIKELIGHT_TRITON=0" in fused_triton.unavailable(SuperSpike(), like)
    monkeypatch.delenv("SPIKELIGHT_TRITON")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fused_triton.unavailable(SuperSpike(), like) is None
    assert "no Triton kernels for torch.bfloat16" in fused_triton.unavailable(
        SuperSpike(), like.bfloat16()
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_state_stays_float32_under_autocast(dtype):
    """A half-precision current (autocast) runs the kernels in float32: the spikes of the
    float32 layer on the same values, exactly; the gradients to float32 rounding."""
    neuron = LIF(6, SuperSpike(), trainable=["tau_mem"]).to(DEVICE)
    generator = torch.Generator().manual_seed(3)
    low = (4 * torch.randn(12, 2, 6, generator=generator)).to(DEVICE, dtype).requires_grad_()
    with torch.autocast(DEVICE, dtype=dtype, enabled=DEVICE == "cuda" or dtype == torch.bfloat16):
        spikes = run_fused(neuron, low)
    high = low.detach().float().requires_grad_()
    reference = run_fused(neuron, high)
    assert spikes.dtype == torch.float32 and spikes.sum() > 0
    assert torch.equal(spikes, reference)
    (g_low, t_low), (g_high, t_high) = (
        torch.autograd.grad(z.sum(), [x, neuron.tau_mem_raw])
        for z, x in ((spikes, low), (reference, high))
    )
    assert g_low.dtype == dtype
    torch.testing.assert_close(g_low.float(), g_high.to(dtype).float())
    torch.testing.assert_close(t_low, t_high, rtol=1e-5, atol=1e-6)


def test_cpu_tensors_take_the_kernels_only_when_forced(monkeypatch):
    monkeypatch.setattr(fused_triton, "_forced", False)
    assert fused_triton.unavailable(SuperSpike(), torch.zeros(1)) == "on cpu"
