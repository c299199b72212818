"""Learnable synaptic delays against independent truth: a shift-and-weight loop written here,
a hand-computed Gaussian case, finite differences, and the network without delays."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from spikelight.checks import ArgumentError
from spikelight.delays import DelayedLinear, DelaySpec, delayed_projection, gaussian_kernel
from spikelight.module import SpikingClassifier
from spikelight.network import SpikingNetwork
from spikelight.neurons import LIF
from spikelight.surrogates import SuperSpike
from spikelight.weight_init import ScaledNormal

T, B, C, N = 17, 3, 5, 4


def shifted_sum(x, weight, delay):
    """``out[t, b, j] = sum_i w[j, i] x[t - d[j, i], b, i]`` (zero before the start), by loops."""
    steps, batch, inputs = x.shape
    out = torch.zeros(steps, batch, weight.shape[0], dtype=x.dtype)
    for j in range(weight.shape[0]):
        for i in range(inputs):
            d = int(delay[j, i])
            for t in range(d, steps):
                out[t, :, j] += weight[j, i] * x[t - d, :, i]
    return out


def layer(max_delay=6, sigma=1.0, seed=0):
    torch.manual_seed(seed)
    return DelayedLinear(C, N, DelaySpec(max_delay, sigma_init=sigma, sigma_final=sigma))


def test_integer_delays_with_a_tiny_sigma_shift_and_weight_each_input(float64):
    fc = layer(max_delay=6)
    with torch.no_grad():
        fc.delay.copy_(torch.randint(0, 7, (N, C)).double())
    fc.set_sigma(1e-3)
    x = torch.randn(T, B, C)
    expected = shifted_sum(x, fc.weight.detach(), fc.delay.detach())
    torch.testing.assert_close(fc(x), expected, rtol=0, atol=1e-12)


def test_eval_mode_rounds_each_delay_to_a_whole_step(float64):
    fc = layer(max_delay=6, sigma=3.0)
    with torch.no_grad():
        fc.delay.uniform_(0, 6)
    x = torch.randn(T, B, C)
    expected = shifted_sum(x, fc.weight.detach(), fc.delay.detach().round())
    fc.eval()
    torch.testing.assert_close(fc(x), expected, rtol=0, atol=1e-12)


def test_a_hand_computed_gaussian_kernel(float64):
    """One synapse, weight 2, delay 1 step, sigma 1, taps 0..2: g = [e^-1/2, 1, e^-1/2] / sum."""
    fc = DelayedLinear(1, 1, DelaySpec(2, sigma_init=1.0, sigma_final=1.0))
    with torch.no_grad():
        fc.weight.fill_(2.0)
        fc.delay.fill_(1.0)
    edge = math.exp(-0.5)
    g0, g1 = edge / (1 + 2 * edge), 1 / (1 + 2 * edge)  # 0.274068619, 0.451862762
    x = torch.tensor([1.0, 2.0, 0.0, 0.0]).reshape(4, 1, 1)
    expected = 2 * torch.tensor([g0 * 1, g0 * 2 + g1 * 1, g1 * 2 + g0 * 1, g0 * 2])
    torch.testing.assert_close(fc(x).flatten(), expected, rtol=0, atol=1e-14)
    assert g0 == pytest.approx(0.274068619) and g1 == pytest.approx(0.451862762)


def test_a_delay_between_taps_splits_symmetrically(float64):
    kernel = gaussian_kernel(torch.ones(1, 1), torch.tensor([[1.5]]), 0.5, 4)[0, 0]
    assert kernel[1] == pytest.approx(kernel[2]) and kernel[0] == pytest.approx(kernel[3])
    assert kernel.sum() == pytest.approx(1.0)  # normalised over the taps


def test_a_stream_of_chunks_equals_one_projection(float64):
    fc = layer(max_delay=6, sigma=0.8)
    x = torch.randn(T, B, C)
    past = torch.zeros(6, B, C)
    chunks = []
    for start in range(0, T, 5):
        current, past = fc.stream(x[start : start + 5], past)
        chunks.append(current)
    torch.testing.assert_close(torch.cat(chunks), fc(x), rtol=0, atol=1e-12)


def test_gradients_of_weights_delays_and_input_match_finite_differences(float64):
    fc = layer(max_delay=4, sigma=0.7)
    x = torch.randn(9, 2, C, requires_grad=True)
    weight = fc.weight.detach().clone().requires_grad_()
    delay = (fc.delay.detach() + 0.3).requires_grad_()  # off the taps: the general case

    def projection(x, weight, delay):
        return delayed_projection(x, gaussian_kernel(weight, delay, 0.7, 5))

    assert torch.autograd.gradcheck(projection, (x, weight, delay))
    fc.zero_grad()
    fc(x).pow(2).sum().backward()  # the module's parameters receive them
    assert fc.weight.grad.abs().sum() > 0 and fc.delay.grad.abs().sum() > 0


def test_sigma_schedule_decays_exponentially_then_holds():
    spec = DelaySpec(24, sigma_init=12.27, sigma_final=0.5, sigma_epochs=37)
    assert spec.sigma(0) == pytest.approx(12.27)
    assert spec.sigma(37) == spec.sigma(149) == 0.5
    assert spec.sigma(18.5) == pytest.approx(math.sqrt(12.27 * 0.5))
    ratios = [spec.sigma(e + 1) / spec.sigma(e) for e in range(36)]
    assert ratios == pytest.approx([(0.5 / 12.27) ** (1 / 37)] * 36)
    assert DelaySpec(3, 2.0, 1.0).sigma(0) == 1.0  # sigma_epochs 0: final width from the start


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"max_delay": 0, "sigma_init": 1.0, "sigma_final": 1.0}, "delays.max_delay=0"),
        ({"max_delay": 2.5, "sigma_init": 1.0, "sigma_final": 1.0}, "delays.max_delay=2.5"),
        ({"max_delay": 4, "sigma_init": -1.0, "sigma_final": 1.0}, "delays.sigma_init=-1.0"),
        ({"max_delay": 4, "sigma_init": 1.0, "sigma_final": 0}, "delays.sigma_final=0"),
        ({"max_delay": 4, "sigma_init": 1.0, "sigma_final": 2.0}, "delays.sigma_final=2.0"),
        (
            {"max_delay": 4, "sigma_init": 1.0, "sigma_final": 1.0, "sigma_epochs": -1},
            "delays.sigma_epochs=-1",
        ),
        ({"max_delay": 4, "sigma_init": 1.0}, "delays={"),
        ({"max_delay": 4, "sigma_init": 1.0, "sigma_final": 1.0, "width": 2}, "delays={"),
        (25, "delays=25"),
    ],
)
def test_bad_delay_settings_name_the_key_and_the_value(config, key):
    with pytest.raises(ArgumentError) as error:
        DelaySpec.of(config)
    assert str(error.value).startswith(key)
    assert "expected" in str(error.value)


def network(delays=None, trainable=("weights",), time_loop="fused", recurrent=False, seed=0):
    torch.manual_seed(seed)
    return SpikingNetwork(
        C,
        3,
        [N, 6],
        functools.partial(LIF, reset="zero"),
        SuperSpike(10.0),
        trainable=trainable,
        recurrent=recurrent,
        weight_init=ScaledNormal(10.0),  # every layer fires on spikes_in (float64)
        time_loop=time_loop,
        delays=delays,
    )


SPEC = {"max_delay": 5, "sigma_init": 2.0, "sigma_final": 0.5, "sigma_epochs": 4}


def spikes_in(seed=1, steps=T):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, B, C, generator=generator) < 0.3).double()


@pytest.mark.parametrize("readout", [False, True], ids=["hidden", "hidden+readout"])
@pytest.mark.parametrize("recurrent", [False, True], ids=["feedforward", "recurrent"])
def test_zero_delays_give_the_network_without_delays(float64, recurrent, readout):
    plain = network(recurrent=recurrent)
    delayed = network({**SPEC, "readout": readout}, recurrent=recurrent)
    delayed.load_state_dict(plain.state_dict(), strict=False)  # same weights
    for projection in delayed.delayed_projections():
        projection.delay.data.zero_()
        projection.set_sigma(1e-4)  # training mode: all of the kernel on tap 0
    x = spikes_in()
    for mode in ("train", "eval"):
        getattr(plain, mode)(), getattr(delayed, mode)()
        want, got = plain(x), delayed(x)
        assert all(z.mean() > 0.02 for z in want.spikes.values())
        for name in want.spikes:
            assert torch.equal(got.spikes[name], want.spikes[name]), (mode, name)
        torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=1e-12)


def test_fused_and_autograd_loops_agree_with_delays_in_values_and_gradients(float64):
    trainable = ["weights", "delays", "tau_mem"]
    x = spikes_in()
    outputs = {}
    for loop in ("fused", "autograd"):
        net = network({**SPEC, "readout": True}, trainable, time_loop=loop)
        out = net(x)
        out.logits.pow(2).sum().backward()
        grads = {n: p.grad for n, p in net.named_parameters() if p.requires_grad}
        outputs[loop] = out, grads
    (fused, fused_grads), (ref, ref_grads) = outputs["fused"], outputs["autograd"]
    for name in ref.spikes:
        assert 0.02 < ref.spikes[name].mean() < 0.5, name
        assert torch.equal(fused.spikes[name], ref.spikes[name]), name
    torch.testing.assert_close(fused.logits, ref.logits, rtol=1e-10, atol=1e-12)
    assert fused_grads.keys() == ref_grads.keys()
    assert {"layers.0.fc.delay", "layers.1.fc.delay", "readout_fc.delay"} <= set(ref_grads)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-8, atol=1e-10, msg=name)
    assert ref_grads["layers.0.fc.delay"].abs().sum() > 0


def test_trainable_selects_the_delays_and_they_get_their_own_group():
    fixed = network(SPEC, trainable=["weights"])
    assert not any(p.requires_grad for p in (fixed.layers[0].fc.delay, fixed.layers[1].fc.delay))
    assert set(fixed.parameter_groups()) == {"weights"}
    net = network(SPEC, trainable=["weights", "delays"])
    assert len(net.parameter_groups()["delays"]) == 2  # one per hidden layer
    module = SpikingClassifier(
        net, optimizer=functools.partial(torch.optim.Adam, lr=1e-3), delay_lr=0.1
    )
    groups = {g["name"]: g["lr"] for g in module.configure_optimizers().param_groups}
    assert groups == {"weights": 1e-3, "delays": 0.1}


def test_training_delays_without_delays_is_refused():
    with pytest.raises(ArgumentError, match=r"^trainable=\['delays', 'weights'\]: expected"):
        network(None, trainable=["weights", "delays"])


def test_module_anneals_sigma_each_epoch_and_clamps_the_delays_after_each_step(float64):
    import lightning as L

    net = network({**SPEC, "readout": True}, trainable=["weights", "delays"])
    module = SpikingClassifier(
        net, optimizer=functools.partial(torch.optim.SGD, lr=1e-3), delay_lr=1e6
    )  # a huge delay step: every delay leaves the range and is put back on its edge
    x = spikes_in(steps=T).transpose(0, 1)
    data = torch.utils.data.TensorDataset(x, torch.tensor([0, 1, 2]))
    sigmas = []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            sigmas.append(float(net.layers[0].fc.sigma))

    trainer = L.Trainer(
        max_epochs=6,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=3))
    spec = net.delay_spec
    assert sigmas == pytest.approx([spec.sigma(e) for e in range(6)])
    assert sigmas[-1] == 0.5 and sigmas[0] == 2.0
    delays = torch.cat([p.delay.detach().flatten() for p in net.delayed_projections()])
    assert delays.min() >= 0 and delays.max() <= SPEC["max_delay"]
    # synapses from neurons that never fired get no gradient and stay where they started
    on_edge = (delays == 0) | (delays == SPEC["max_delay"])
    assert on_edge.double().mean() > 0.3, delays


def test_network_with_delays_streams_like_the_whole_sequence(float64):
    net = network({**SPEC, "readout": True}, time_loop="autograd").eval()
    x = spikes_in()
    whole = net(x)
    state = net.init_state(B)
    readouts = []
    for start in range(0, T, 4):
        out, state = net.stream(x[start : start + 4], state)
        readouts.append(out.readout)
    torch.testing.assert_close(torch.cat(readouts), whole.readout, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.logits, whole.logits, rtol=0, atol=1e-12)


def test_nir_export_refuses_delays():
    pytest.importorskip("nir")
    from spikelight.nir.graph import export_network

    with pytest.raises(ValueError, match="synaptic delays"):
        export_network(network(SPEC))
