"""The fused time loop and event projection against the plain autograd loop (float64)."""

from __future__ import annotations

import functools
import shutil

import pytest
import torch

from spikelight.module import SpikingClassifier
from spikelight.network import SpikingNetwork
from spikelight.neurons import ALIF, IF, LIF, RF, AdLIF, native
from spikelight.neurons.events import Events, project
from spikelight.neurons.fused import chunk_steps, run_fused
from spikelight.neurons.leaky_filter import leaky_integrate
from spikelight.surrogates import ATan, Exponential, Logistic, SuperSpike, Triangle
from spikelight.weight_init import ScaledNormal

ADLIF_PARAMETERS = ("tau_mem", "tau_adapt", "adapt_a", "adapt_b", "threshold", "v_reset")
NEURONS = {
    "if": (IF, {}, ("threshold", "v_reset")),
    "if_rectify": (IF, {"rectify": True}, ("threshold", "v_reset")),
    "lif": (LIF, {}, ("tau_mem", "tau_syn", "v_leak", "threshold", "v_reset")),
    "alif": (ALIF, {}, ("tau_mem", "tau_syn", "v_leak", "threshold", "v_reset", "tau_adapt")),
    "adlif": (AdLIF, {}, ADLIF_PARAMETERS),
    "adlif_euler": (AdLIF, {"discretization": "euler"}, ADLIF_PARAMETERS),
    "rf": (
        RF,
        {"tau_mem": 5e-3, "frequency": 50.0},
        ("tau_mem", "frequency", "threshold", "v_reset"),
    ),
}

#: weight scales at which every layer of every case spikes (adLIF integrates ~1/10 of its input)
WEIGHT_SCALE = {"adlif": 20.0, "adlif_euler": 20.0}

pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture(params=["native", "torch"], autouse=True)
def backend(request, monkeypatch):
    """Every test twice: with the fused layer's C loops and with its PyTorch loops."""
    if request.param == "native" and native.library() is None:
        pytest.skip("the C loops are not built here (no C compiler)")
    monkeypatch.setattr(native, "_enabled", request.param == "native")
    return request.param


def twin_networks(
    kind, reset, detach_reset, recurrent, decoding="max_membrane", weights_only=False,
    perturb=True, **extra,
):  # fmt: skip
    """The same network twice, fused and autograd, with identical parameters."""
    cls, kwargs, params = NEURONS[kind]
    scale = WEIGHT_SCALE.get(kind, 7.0)
    trainable = ["weights", *(p for p in params if p != "v_reset" or reset == "zero")]
    trainable = trainable[:1] if weights_only else trainable
    neuron = functools.partial(
        cls, reset=reset, detach_reset=detach_reset, **kwargs, **extra.pop("neuron", {})
    )
    surrogate = extra.pop("surrogate", SuperSpike(beta=5.0))
    nets = []
    for time_loop in ("fused", "autograd"):
        torch.manual_seed(0)
        nets.append(
            SpikingNetwork(
                num_inputs=12,
                num_classes=4,
                hidden=[9, 6],
                neuron=neuron,
                surrogate=surrogate,
                trainable=trainable,
                recurrent=recurrent,
                decoding=decoding,
                time_loop=time_loop,
                weight_init=ScaledNormal(scale),  # the operating point these cases were built at
                **extra,
            )
        )
    if perturb:  # move every neuron parameter away from its initial (homogeneous) value
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in nets[0].state_dict().items():
                if name.endswith("_raw"):
                    p.add_(0.3 * torch.randn(p.shape, generator=generator))
        nets[1].load_state_dict(nets[0].state_dict())
    return nets


def events(steps=40, batch=3, channels=12, density=0.3, seed=2):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(steps, batch, channels, generator=generator) < density).double()
    return x * torch.randint(1, 3, x.shape, generator=generator)  # counts, as binned SHD


def loss_and_grads(net, x, through_spikes=True):
    out = net(x)
    target = torch.arange(x.shape[1], device=x.device) % out.logits.shape[1]
    loss = torch.nn.functional.cross_entropy(out.logits, target)
    if through_spikes:  # gradients into every layer's spikes too, not only through the readout
        loss = loss + sum(z.mean() for z in out.spikes.values())
    grads = torch.autograd.grad(loss, [p for p in net.parameters() if p.requires_grad])
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    return out, dict(zip(names, grads, strict=True))


def assert_same_training_signal(nets, x, through_spikes=True):
    (out_f, grads_f), (out_a, grads_a) = (loss_and_grads(net, x, through_spikes) for net in nets)
    for name in out_a.spikes:
        assert torch.equal(out_f.spikes[name], out_a.spikes[name]), name
        assert out_a.spikes[name].sum() > 0, f"{name} never spikes: the test would be vacuous"
    torch.testing.assert_close(out_f.logits, out_a.logits, rtol=1e-10, atol=1e-12)
    assert grads_f.keys() == grads_a.keys()
    for name, grad in grads_a.items():
        assert grad.abs().sum() > 0, f"{name} has no gradient: the test would be vacuous"
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("recurrent", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("detach_reset", [True, False], ids=["detach", "attach"])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("kind", NEURONS)
def test_fused_gradients_equal_autograd_loop(kind, reset, detach_reset, recurrent):
    nets = twin_networks(kind, reset, detach_reset, recurrent)
    assert_same_training_signal(nets, events())


@pytest.mark.parametrize("kind", NEURONS)
def test_fused_spiking_readout_and_learned_beta(kind):
    surrogate = Logistic(beta=3.0, learn_beta=True)
    nets = twin_networks(kind, "subtract", True, True, decoding="spike_count", surrogate=surrogate)
    assert "readout" in nets[0](events()).spikes
    assert_same_training_signal(nets, events())


@pytest.mark.parametrize("surrogate", [SuperSpike, Logistic, ATan, Triangle, Exponential])
@pytest.mark.parametrize("kind", NEURONS)
def test_fused_every_surrogate(kind, surrogate):
    """Each surrogate's derivative (the C loops have their own copy of every formula)."""
    nets = twin_networks(kind, "zero", False, True, surrogate=surrogate(beta=2.0))
    assert_same_training_signal(nets, events())


@pytest.mark.parametrize("kind", NEURONS)
def test_fused_surrogate_scale(kind):
    """The scale reaches the C and PyTorch loops' backward (SE-adLIF's SLAYER c = 0.4)."""
    nets = twin_networks(kind, "zero", False, True, surrogate=Exponential(beta=2.0, scale=0.4))
    assert_same_training_signal(nets, events())


def test_surrogate_scale_scales_the_gradient_before_a_spike():
    """One feed-forward layer with a detached reset: every path from the loss to its input
    weights crosses exactly one spike, so their gradient scales with the surrogate's scale
    and the readout's does not (a closed form the fused backward must meet)."""
    grads = []
    for scale in (1.0, 0.4):
        torch.manual_seed(0)
        net = SpikingNetwork(12, 4, [9], LIF, Exponential(beta=2.0, scale=scale),
                             weight_init=ScaledNormal(7.0))  # fmt: skip
        grads.append(loss_and_grads(net, events(), through_spikes=False)[1])
    fc, readout = "layers.0.fc.weight", "readout_fc.weight"
    assert grads[0][fc].abs().sum() > 0
    torch.testing.assert_close(grads[1][fc], 0.4 * grads[0][fc], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(grads[1][readout], grads[0][readout], rtol=0, atol=0)


SE_ADLIF_OPTIONS = dict(
    decoding="softmax_sum", ignore_steps=7, readout_tau_syn=None, bias=True,
    surrogate=Exponential(beta=5.0, scale=0.4),
)  # fmt: skip


@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["no_dropout", "dropout"])
@pytest.mark.parametrize("density", [0.03, 0.3], ids=["events", "dense"])
@pytest.mark.parametrize("kind", ["lif", "adlif"])
def test_fused_with_the_se_adlif_network_options(kind, density, dropout):
    """Bias (also inside the fused loop for event input), dropout, the softmax-sum decoding
    after ignored steps and the readout without synapse: fused == autograd loop."""
    nets = twin_networks(kind, "zero", True, True, dropout=dropout, **dict(SE_ADLIF_OPTIONS))
    x = events(steps=60, density=density)
    assert (Events.of(x) is not None) == (density < 0.05)  # the first layer gets events
    with torch.no_grad():  # biases that matter (they start at zero)
        for net in nets:
            for name, p in net.named_parameters():
                if name.endswith("bias"):
                    p.copy_(torch.linspace(-0.5, 0.5, p.numel()))
    results = []
    for net in nets:
        torch.manual_seed(5)  # the same dropout masks: both draw them in the same order
        results.append(loss_and_grads(net, x))
    (out_f, grads_f), (out_a, grads_a) = results
    for name in out_a.spikes:
        assert torch.equal(out_f.spikes[name], out_a.spikes[name]), name
        assert out_a.spikes[name].sum() > 0, name
    torch.testing.assert_close(out_f.logits, out_a.logits, rtol=1e-10, atol=1e-12)
    assert {n for n in grads_a if n.endswith("bias")} == {
        "layers.0.fc.bias", "layers.1.fc.bias", "readout_fc.bias"
    }  # fmt: skip
    for name, grad in grads_a.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("kind", NEURONS)
def test_fused_with_the_default_parameters(kind):
    """The neurons as built (v_leak = 0: the step without its leak terms), nothing perturbed."""
    nets = twin_networks(kind, "subtract", True, True, weights_only=True, perturb=False)
    assert_same_training_signal(nets, events())


@pytest.mark.parametrize("kind", ["lif", "alif", "adlif", "rf"])
def test_fused_float32_gives_the_same_spikes(kind):
    """In float32 too: the C and PyTorch loops repeat the autograd step's operations."""
    torch.set_default_dtype(torch.float32)  # the training dtype (the float64 fixture restores)
    nets = twin_networks(kind, "subtract", True, True)
    x = events().float()
    (out_f, grads_f), (out_a, grads_a) = (loss_and_grads(net, x) for net in nets)
    for name in out_a.spikes:
        assert out_a.spikes[name].dtype == torch.float32
        assert torch.equal(out_f.spikes[name], out_a.spikes[name]), name
    torch.testing.assert_close(out_f.logits, out_a.logits, rtol=1e-4, atol=1e-6)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("kind", NEURONS)
def test_fused_with_fixed_neuron_parameters(kind, reset):
    nets = twin_networks(kind, reset, True, True, weights_only=True)
    assert not any(n.endswith("_raw") for n, _ in nets[0].named_parameters())
    assert_same_training_signal(nets, events())


@pytest.mark.parametrize("decoding", ["max_membrane", "spike_count"])
@pytest.mark.parametrize("kind", NEURONS)
def test_fused_loss_through_the_readout_only(kind, decoding):
    """The usual training loss: the last layer's spikes get gradient only via the readout."""
    nets = twin_networks(kind, "subtract", True, True, decoding=decoding)
    assert_same_training_signal(nets, events(steps=60, density=0.03), through_spikes=False)


@pytest.mark.parametrize("steps", [2, 3, 5, 17])
def test_fused_short_sequences_and_chunk_edges(steps):
    assert chunk_steps(steps) ** 2 >= steps > (chunk_steps(steps) - 1) ** 2
    nets = twin_networks("alif", "subtract", False, True)
    x = events(steps=steps, density=0.9) * 3
    (out_f, grads_f), (out_a, grads_a) = (loss_and_grads(net, x) for net in nets)
    torch.testing.assert_close(out_f.logits, out_a.logits, rtol=1e-10, atol=1e-12)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_fused_layer_saves_spike_events_not_membranes():
    """Activation memory is the spikes plus O(sqrt(T)) states, not a [T, B, N] float."""
    steps, batch, size = 400, 4, 32
    neuron = LIF(size, SuperSpike(), trainable=["tau_mem"])
    x = torch.rand(steps, batch, 50, generator=torch.Generator().manual_seed(0)) < 0.05
    w_in = torch.randn(size, 50).requires_grad_()
    w_rec = (torch.randn(size, size) * 0.3).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        spikes = run_fused(neuron, Events.of(x.double()), w_rec, in_weight=w_in)
    own = [t for t in saved if t.numel() > size * size]  # leave out weights and coefficients
    saved_bytes = sum(t.numel() * t.element_size() for t in own)
    assert 0 < spikes.mean() < 0.2
    # spike events (4 B each), the input events and 2 x 20 states; a float64 membrane: 8 B/step
    assert saved_bytes < 0.3 * spikes.numel() * 8, saved_bytes
    spikes.sum().backward()
    assert w_in.grad.abs().sum() > 0 and w_rec.grad.abs().sum() > 0


def test_fused_matches_with_sparse_event_input():
    nets = twin_networks("lif", "subtract", True, True)
    assert_same_training_signal(nets, events(steps=60, density=0.03))


def graph_nodes(tensor):
    """Names of the autograd nodes ``tensor`` was computed through."""
    names, todo = [], [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None:
            names.append(type(node).__name__)
            todo.extend(next_node for next_node, _ in node.next_functions)
    return " ".join(names)


def test_event_projection_equals_dense_product_and_its_gradient():
    x = events(steps=20, batch=5, channels=30, density=0.02)
    weight = torch.randn(7, 30, requires_grad=True)
    out = project(x, weight)
    assert out.layout == torch.strided and out.shape == (20, 5, 7)
    assert "EventProjection" in graph_nodes(out)  # the event path
    dense = events(steps=20, batch=5, channels=30, density=0.5)
    assert "EventProjection" not in graph_nodes(project(dense, weight))
    torch.testing.assert_close(out, x @ weight.t())
    grad_out = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, weight, grad_out)
    torch.testing.assert_close(grad, torch.einsum("tbk,tbc->kc", grad_out, x))
    small = weight.detach()[:3, :2].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda w: project(x[:4, :, :2], w), (small,))


def test_leaky_integrator_equals_loop_and_gradcheck():
    x = torch.randn(25, 2, 3, requires_grad=True)
    a_syn, a_mem = torch.tensor(0.8), torch.tensor(0.9)
    i = v = torch.zeros(2, 3)
    trace = []
    for x_t in x:
        i = a_syn * i + x_t
        v = a_mem * v + (1 - a_mem) * i
        trace.append(v)
    torch.testing.assert_close(leaky_integrate(x, a_syn, a_mem), torch.stack(trace))
    assert torch.autograd.gradcheck(lambda x: leaky_integrate(x, a_syn, a_mem), (x[:8],))


def test_neurons_without_a_kernel_run_the_autograd_loop():
    class Doubling(LIF):  # a new step the fused kernel does not know
        def step(self, x, state, coeffs):
            return super().step(2 * x, state, coeffs)

    assert "defines its own step" in Doubling(3, SuperSpike()).fused_reason()
    assert "smooth forward" in LIF(3, SuperSpike(smooth_forward=True)).fused_reason()
    assert ALIF(3, SuperSpike()).fused_reason() is None
    net = SpikingNetwork(12, 4, [5], functools.partial(Doubling), SuperSpike(), recurrent=True)
    reference = SpikingNetwork(
        12, 4, [5], functools.partial(Doubling), SuperSpike(), recurrent=True, time_loop="autograd"
    )
    reference.load_state_dict(net.state_dict())
    torch.testing.assert_close(net(events()).logits, reference(events()).logits)


def test_unknown_time_loop_is_rejected():
    with pytest.raises(ValueError, match="time_loop.*'python'"):
        SpikingNetwork(12, 4, [5], LIF, SuperSpike(), time_loop="python")


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile on CPU needs a C compiler")
@pytest.mark.parametrize("time_loop", ["fused", "autograd"])
def test_compiled_network_trains_like_the_eager_one(time_loop):
    torch.set_default_dtype(torch.float32)  # inductor's CPU path, as used in training
    eager, compiled = (
        SpikingClassifier(
            SpikingNetwork(12, 4, [6], LIF, SuperSpike(), recurrent=True, time_loop=time_loop),
            optimizer=torch.optim.SGD,
            compile=compile,
        )
        for compile in (False, True)
    )
    compiled.load_state_dict(eager.state_dict())
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints unchanged
    x = events(steps=8).float().transpose(0, 1)  # batch-major, as the datamodules give it
    grads = []
    for module in (eager, compiled):
        out = module.run_network(x)
        out.logits.sum().backward()
        grads.append(module.network.layers[0].fc.weight.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
