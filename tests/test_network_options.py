"""Network options a preset can select (SE-adLIF's SHD model uses them all), each against a
reference written here: dropout on the hidden spikes, the softmax-sum decoding, ignored readout
steps, a readout without synapse, projection biases, and the uniform/orthogonal initialisation."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from spikelight.checks import ArgumentError
from spikelight.module import cross_entropy
from spikelight.network import DECODINGS, LeakyReadout, SpikingNetwork, decode, hidden_name
from spikelight.neurons import LIF, AdLIF
from spikelight.surrogates import Exponential, SuperSpike
from spikelight.weight_init import ScaledNormal, Uniform

pytestmark = pytest.mark.usefixtures("float64")


def spikes_in(steps=40, batch=3, channels=10, density=0.3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, channels, generator=generator) < density).double()


def network(decoding="mean_membrane", hidden=(8, 6), **options):
    torch.manual_seed(0)
    return SpikingNetwork(
        num_inputs=10, num_classes=4, hidden=list(hidden), neuron=LIF, surrogate=SuperSpike(),
        recurrent=True, decoding=decoding, weight_init=ScaledNormal(8.0), **options,
    )  # fmt: skip


# -- the softmax-sum decoding and ignored steps --------------------------------------------
def test_softmax_sum_on_a_hand_computed_case():
    """SE-adLIF's loss_agg softmax: softmax over classes at each step, summed over the steps
    (``models/pl_module.py`` ``process_predictions_and_compute_losses``)."""
    readout = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 2.0]]])  # [T=3, B=1, K=2]
    e, e2 = math.e, math.e**2
    expected = [0.5 + e / (e + 1) + 1 / (1 + e2), 0.5 + 1 / (e + 1) + e2 / (1 + e2)]
    torch.testing.assert_close(decode(readout, "softmax_sum")[0], torch.tensor(expected))
    # their CrossEntropyLoss on that sum, class 1: -log softmax(sum)_1
    scores = torch.tensor(expected)
    loss = -(scores[1] - torch.log(scores.exp().sum()))
    torch.testing.assert_close(cross_entropy(decode(readout, "softmax_sum"), torch.tensor([1])),
                               loss)  # fmt: skip


@pytest.mark.parametrize("decoding", DECODINGS)
def test_ignored_steps_are_left_out_of_every_decoding(decoding):
    net = network(decoding, ignore_steps=5)
    net.eval()
    out = net(spikes_in())
    kept = out.readout[5:]  # the trace still has every step
    assert out.readout.shape[0] == 40
    by_hand = {
        "max_membrane": kept.max(0).values,
        "mean_membrane": kept.sum(0) / 35,
        "softmax_sum": (kept.exp() / kept.exp().sum(-1, keepdim=True)).sum(0),
        "spike_count": kept.sum(0),
        "spike_rate": kept.sum(0) / 35,
    }[decoding]
    torch.testing.assert_close(out.logits, by_hand)
    if decoding in ("max_membrane", "mean_membrane", "softmax_sum"):  # the early steps count
        assert not torch.allclose(out.logits, decode(out.readout, decoding))


def test_too_many_ignored_steps_name_the_key():
    net = network(ignore_steps=40)
    with pytest.raises(ArgumentError, match=r"^ignore_steps=40: expected fewer than the input's"):
        net(spikes_in())
    with pytest.raises(ArgumentError, match=r"^ignore_steps=-1: expected an integer >= 0"):
        network(ignore_steps=-1)


@pytest.mark.parametrize("decoding", ["softmax_sum", "mean_membrane", "max_membrane"])
def test_a_stream_leaves_out_the_same_steps(decoding):
    net = network(decoding, ignore_steps=7, bias=True)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.linspace(-0.3, 0.3, p.numel()))
    net.eval()
    x = spikes_in()
    whole = net(x).logits
    state = net.init_state(3)
    for chunk in torch.split(x, 3):  # the ignored steps end inside the third chunk
        out, state = net.stream(chunk, state)
    torch.testing.assert_close(out.logits, whole, rtol=1e-12, atol=1e-12)


# -- the readout without synapse ------------------------------------------------------------
@pytest.mark.parametrize("fused", [True, False])
def test_readout_without_synapse_is_se_adlif_li(fused):
    """``u_t = a u_{t-1} + (1 - a) x_t`` with ``a = exp(-dt / tau)`` (SE-adLIF's ``models/li.py``
    ``forward``, its ``W x + b`` being ``x`` here)."""
    readout = LeakyReadout(3, dt=4e-3, tau_mem=60e-3, tau_syn=None)
    assert float(readout.a_syn) == 0.0
    x = torch.randn(30, 2, 3, requires_grad=True)
    a = math.exp(-4e-3 / 60e-3)
    u, trace = torch.zeros(2, 3), []
    for x_t in x:
        u = a * u + (1 - a) * x_t
        trace.append(u)
    torch.testing.assert_close(readout(x, fused=fused), torch.stack(trace), rtol=1e-12, atol=1e-14)
    short = x[:6].detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: readout(x, fused=fused), (short,))


def test_readout_tau_syn_still_checked_when_given():
    expected = r"^readout_tau_syn=0.001: expected a time constant longer than dt=0.004 s, or null"
    with pytest.raises(ArgumentError, match=expected):
        LeakyReadout(3, dt=4e-3, tau_mem=60e-3, tau_syn=1e-3)


# -- biases ---------------------------------------------------------------------------------
def test_biases_start_at_zero_and_train_with_the_weights():
    net = network(bias=True)
    biases = {n: p for n, p in net.named_parameters() if n.endswith("bias")}
    assert set(biases) == {"layers.0.fc.bias", "layers.1.fc.bias", "readout_fc.bias"}
    assert all(torch.equal(p, torch.zeros_like(p)) for p in biases.values())
    assert all(p.requires_grad for p in biases.values())
    assert set(net.parameter_groups()) == {"weights"}
    assert len(net.parameter_groups()["weights"]) == 8  # 2 x (fc, rec, bias) + readout, bias
    readout_only = network(bias=True, trainable=["readout"])
    trained = {n for n, p in readout_only.named_parameters() if p.requires_grad}
    assert trained == {"readout_fc.weight", "readout_fc.bias"}
    assert not any(n.endswith("bias") for n, _ in network().named_parameters())


def test_a_bias_adds_a_constant_current():
    """With zero weights a hidden bias alone drives the layer: ``u_t = a u + (1 - a) b``."""
    torch.manual_seed(0)
    neuron = functools.partial(AdLIF, dt=1e-3, tau_mem=10e-3)
    net = SpikingNetwork(
        10, 4, [5], neuron, Exponential(), bias=True, readout_tau_syn=None, time_loop="autograd"
    )
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.layers[0].fc.bias.fill_(0.5)  # below threshold: no spikes, no adaptation by spikes
        net.readout_fc.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    out = net(spikes_in(channels=10))
    assert out.spikes["hidden0"].sum() == 0
    a = float(net.readout.a_mem)
    steps = torch.arange(1, 41, dtype=torch.float64)
    expected = (1 - a**steps)[:, None] * torch.tensor([1.0, 2.0, 3.0, 4.0])  # v -> bias
    torch.testing.assert_close(out.readout[:, 0], expected)


# -- dropout ------------------------------------------------------------------------------
class DropoutRecorder:
    """Wraps ``nn.functional.dropout``, recording what each call got and gave."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = torch.nn.functional.dropout

        def recording(x, p=0.5, training=True, inplace=False):
            y = original(x, p, training, inplace)
            self.calls.append((x.detach().clone(), p, training, y.detach().clone()))
            return y

        monkeypatch.setattr(torch.nn.functional, "dropout", recording)


@pytest.mark.parametrize("time_loop", ["fused", "autograd"])
def test_dropout_acts_on_each_hidden_layers_spikes_per_step(monkeypatch, time_loop):
    """As SE-adLIF (``models/pl_module.py`` ``forward``): each hidden layer's output spikes go
    through dropout before the next projection, the readout's included; a fresh mask at each
    step, sample and neuron; the next layer and the readout see the dropped spikes."""
    net = network(dropout=0.4, time_loop=time_loop, hidden=(30, 20))
    recorder = DropoutRecorder(monkeypatch)
    torch.manual_seed(3)
    out = net(spikes_in(steps=60, density=0.5))
    assert len(recorder.calls) == 2  # one per hidden layer
    for index, (given, p, training, dropped) in enumerate(recorder.calls):
        spikes = out.spikes[hidden_name(index)]
        assert torch.equal(given, spikes.detach()) and p == 0.4 and training
        assert spikes.sum() > 100
        kept = dropped[spikes.detach() == 1]
        assert set(kept.unique().tolist()) <= {0.0, 1 / 0.6}
        assert abs((kept > 0).double().mean().item() - 0.6) < 0.1
        assert torch.all(dropped[spikes.detach() == 0] == 0)
        # a mask per step: a neuron that spikes at many steps is kept at some, dropped at others
        mask = (dropped > 0) & (spikes.detach() == 1)
        per_neuron = (spikes.detach() == 1).sum(0)
        b, n = divmod(int(per_neuron.argmax()), per_neuron.shape[1])
        assert 0 < mask[:, b, n].sum() < per_neuron[b, n]
    # the readout's input is the dropped last hidden layer, the second layer's the first's
    reference = LeakyReadout(4, net.dt, 10e-3, 5e-3)  # the network's readout (its defaults)
    current = recorder.calls[1][3] @ net.readout_fc.weight.detach().t()
    torch.testing.assert_close(out.readout.detach(), reference(current, fused=False))
    second = net.layers[1](recorder.calls[0][3], fused=False)
    assert torch.equal(second.detach(), out.spikes["hidden1"].detach())


def test_dropout_is_off_in_eval_and_at_zero(monkeypatch):
    net, plain = network(dropout=0.4), network()
    plain.load_state_dict(net.state_dict())
    recorder = DropoutRecorder(monkeypatch)
    net.eval()
    plain.eval()
    torch.testing.assert_close(net(spikes_in()).logits, plain(spikes_in()).logits, rtol=0, atol=0)
    plain.train()
    plain(spikes_in())
    assert recorder.calls == []  # dropout 0: the fused path as before, no dropout call


@pytest.mark.parametrize("dropout", [-0.1, 1.0, "half", True])
def test_bad_dropout_names_the_key(dropout):
    with pytest.raises(ArgumentError, match=r"^dropout=.*: expected a probability in \[0, 1\)"):
        network(dropout=dropout)


# -- uniform / orthogonal initialisation --------------------------------------------------------
def test_uniform_init_is_se_adlifs():
    """SE-adLIF's ``reset_parameters`` (``models/alif.py``, ``models/li.py``): feed-forward
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, recurrent ``orthogonal_(gain=1)``."""
    torch.manual_seed(0)
    net = SpikingNetwork(300, 20, [200, 100], LIF, SuperSpike(), recurrent=True, bias=True,
                         weight_init=Uniform(recurrent="orthogonal"))  # fmt: skip
    feed_forward = [layer.fc for layer in net.layers] + [net.readout_fc]
    for linear in feed_forward:
        w, bound = linear.weight.detach(), 1 / math.sqrt(linear.in_features)
        assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
        n = w.numel()  # within 5 standard errors of the uniform's mean 0 and variance b^2/3
        assert abs(w.mean().item()) < 5 * bound / math.sqrt(3 * n)
        assert w.var().item() == pytest.approx(bound**2 / 3, rel=5 * math.sqrt(0.8 / n))
        assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
    for layer in net.layers:
        w = layer.rec.weight.detach()
        torch.testing.assert_close(w @ w.t(), torch.eye(w.shape[0]), rtol=0, atol=1e-12)
    uniform = SpikingNetwork(30, 4, [20], LIF, SuperSpike(), recurrent=True,
                             weight_init=Uniform(scale=2.0))  # fmt: skip
    rec = uniform.layers[0].rec.weight.detach()
    assert rec.abs().max() <= 2.0 / math.sqrt(20)
    assert not torch.allclose(rec @ rec.t(), torch.eye(20) * (rec @ rec.t()).diag().mean())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": 0.0}, r"weight_init.scale=0.0: expected a number in \(0.0, inf\)"),
        ({"recurrent": "identity"}, "weight_init.recurrent must be one of"),
    ],
)
def test_bad_uniform_init_names_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Uniform(**kwargs)
