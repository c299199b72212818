"""Fluctuation-driven weight initialisation against closed forms and simulated layers."""

import functools
import math
import re

import pytest
import torch

from spikelight.init import Gamma
from spikelight.network import SpikingNetwork
from spikelight.neurons import IF, LIF, AdLIF
from spikelight.surrogates import SuperSpike
from spikelight.weight_init import FluctuationDriven, ScaledNormal, psp_kernel

pytestmark = pytest.mark.usefixtures("float64")


def lif_membrane(current, a_syn, a_mem):
    """The LIF's sub-threshold loop, written out: the free membrane ``[T, B, N]``."""
    i = v = torch.zeros(current.shape[1:])
    trace = []
    for x in current.unbind(0):
        i = a_syn * i + x
        v = a_mem * v + (1 - a_mem) * i
        trace.append(v)
    return torch.stack(trace)


def network(neuron=LIF, inputs=200, hidden=400, weight_init=None, tau_init=None, **kwargs):
    return SpikingNetwork(
        inputs,
        3,
        [hidden],
        functools.partial(neuron, **kwargs),
        SuperSpike(),
        tau_init=tau_init,
        weight_init=weight_init,
    )


def bernoulli(p, steps, batch, channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, channels, generator=g) < p).double()


def test_lif_kernel_is_the_closed_form_psp():
    lif = LIF(3, SuperSpike())
    a_m, a_s = math.exp(-1 / 10), math.exp(-1 / 5)
    t = torch.arange(60.0)
    expected = (1 - a_m) * (a_m ** (t + 1) - a_s ** (t + 1)) / (a_m - a_s)
    kernel = psp_kernel(lif, 60)
    torch.testing.assert_close(kernel, expected[:, None].expand(60, 3), rtol=1e-12, atol=1e-15)
    # the total response is the DC gain of the synapse: sum eps = 1 / (1 - a_syn)
    assert psp_kernel(lif, 2000).sum(0)[0].item() == pytest.approx(1 / (1 - a_s), rel=1e-9)


def test_if_and_adlif_kernels():
    assert torch.equal(psp_kernel(IF(2, SuperSpike()), 30), torch.ones(30, 2))
    ad = AdLIF(1, SuperSpike(), tau_mem=10e-3, tau_adapt=100e-3, adapt_a=0.5, adapt_scale=120.0)
    a, aw = math.exp(-0.1), math.exp(-0.01)
    u = w = 0.0
    expected = []
    for t in range(50):  # the symplectic sub-threshold loop, written out
        u = a * u + (1 - a) * ((1.0 if t == 0 else 0.0) - w)
        w = aw * w + (1 - aw) * 120.0 * 0.5 * u
        expected.append(u)
    torch.testing.assert_close(psp_kernel(ad, 50)[:, 0], torch.tensor(expected))


@pytest.mark.parametrize("mu_u, xi", [(0.0, 1.0), (0.3, 2.0), (-0.5, 3.0)])
def test_closed_form_mean_and_std_match_a_simulated_layer(mu_u, xi):
    torch.manual_seed(0)
    p, steps = 0.03, 150
    init = FluctuationDriven(mu_u=mu_u, xi=xi, rate=p / 1e-3, num_steps=steps, calibrate="none")
    torch.manual_seed(1)
    # heterogeneous time constants and thresholds: each neuron gets its own weight scale
    net = network(weight_init=init, tau_init=Gamma(3.0), threshold=1.5)
    lif = net.layers[0].neuron
    x = bernoulli(p, steps, 400, 200)
    u = lif_membrane(x @ net.layers[0].fc.weight.T, lif.decay("tau_syn"), lif.decay("tau_mem"))
    final = u[-1]  # the closed form describes step T - 1: [B, N]
    target_std = (1 - mu_u) * 1.5 / xi
    # every neuron: mean at the target (up to the input's sampling error), std at the target
    standard_error = target_std / math.sqrt(final.shape[0])
    torch.testing.assert_close(
        final.mean(0), torch.full((400,), mu_u * 1.5), rtol=0, atol=5 * standard_error
    )
    assert final.std(0).mean().item() == pytest.approx(target_std, rel=0.005)
    # short and long membrane time constants reach the same fluctuation
    tau = lif.get("tau_mem")
    for group in (tau < tau.median(), tau >= tau.median()):
        assert final[:, group].std(0).mean().item() == pytest.approx(target_std, rel=0.01)


def test_recurrent_layer_splits_the_variance_by_alpha():
    p, steps = 0.02, 120
    init = FluctuationDriven(alpha=0.7, rate=p / 1e-3, num_steps=steps, calibrate="none")
    torch.manual_seed(2)
    net = SpikingNetwork(
        150, 3, [300], functools.partial(LIF), SuperSpike(), recurrent=True, weight_init=init
    )
    layer, lif = net.layers[0], net.layers[0].neuron
    decays = lif.decay("tau_syn"), lif.decay("tau_mem")
    ff = lif_membrane(bernoulli(p, steps, 300, 150) @ layer.fc.weight.T, *decays)[-1]
    rec = lif_membrane(bernoulli(p, steps, 300, 300, seed=1) @ layer.rec.weight.T, *decays)[-1]
    assert ff.var().item() == pytest.approx(0.7, rel=0.08)
    assert rec.var().item() == pytest.approx(0.3, rel=0.08)


def test_calibration_measures_the_input_rate():
    p, steps = 0.08, 100  # the data fire 8x the assumed 10 Hz
    init = FluctuationDriven(xi=2.0, rate=10.0, num_steps=steps)
    torch.manual_seed(3)
    net = network(weight_init=init)
    x = bernoulli(p, steps, 300, 200)
    lif = net.layers[0].neuron
    decays = lif.decay("tau_syn"), lif.decay("tau_mem")
    before = lif_membrane(x @ net.layers[0].fc.weight.T, *decays)[-1].std().item()
    assert before > 1.0  # drawn for 10 Hz: at 80 Hz the membrane fluctuates far too much
    net.calibrate(x)
    after = lif_membrane(x @ net.layers[0].fc.weight.T, *decays)[-1].std().item()
    assert after == pytest.approx(0.5, rel=0.05)


def test_membrane_calibration_matches_correlated_input():
    """Inputs that are copies of a few sources: the independent-input closed form is off."""
    steps = 100
    init = FluctuationDriven(mu_u=0.2, xi=2.0, num_steps=steps, calibrate="membrane")
    torch.manual_seed(4)
    net = network(weight_init=init, hidden=100)
    sources = bernoulli(0.02, steps, 200, 10)
    x = sources.repeat_interleave(20, dim=2)  # 200 channels, 20 copies of each source
    net.calibrate(x)
    lif = net.layers[0].neuron
    u = lif_membrane(x @ net.layers[0].fc.weight.T, lif.decay("tau_syn"), lif.decay("tau_mem"))
    per_neuron = u.flatten(0, 1)  # pooled over time and batch, as the calibration measures
    torch.testing.assert_close(per_neuron.mean(0), torch.full((100,), 0.2), rtol=0, atol=1e-9)
    torch.testing.assert_close(per_neuron.std(0, correction=0), torch.full((100,), 0.4))


def test_calibration_is_deterministic_and_keeps_each_draw():
    init = FluctuationDriven(num_steps=50)
    torch.manual_seed(5)
    a = network(weight_init=init, hidden=30, inputs=40)
    b = network(weight_init=init, hidden=30, inputs=40)
    b.load_state_dict(a.state_dict())
    before = a.layers[0].fc.weight.clone()
    x = bernoulli(0.05, 50, 64, 40)
    state = torch.get_rng_state()
    a.calibrate(x)
    b.calibrate(x)
    assert torch.equal(torch.get_rng_state(), state)  # no random numbers drawn
    torch.testing.assert_close(a.layers[0].fc.weight, b.layers[0].fc.weight, rtol=0, atol=0)
    # an affine map per row: the calibrated row is perfectly correlated with its draw
    for row_before, row_after in zip(before, a.layers[0].fc.weight, strict=True):
        assert torch.corrcoef(torch.stack([row_before, row_after]))[0, 1] > 1 - 1e-9


def test_scaled_normal_is_the_fixed_scale():
    torch.manual_seed(6)
    net = network(weight_init=ScaledNormal(7.0), inputs=400, hidden=500)
    assert net.layers[0].fc.weight.std().item() == pytest.approx(7 / 20, rel=0.01)
    assert net.readout_fc.weight.std().item() == pytest.approx(7 / math.sqrt(500), rel=0.1)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"xi": 0.0}, "weight_init.xi"),
        ({"xi": -1.0}, "weight_init.xi"),
        ({"mu_u": 1.0}, "weight_init.mu_u"),
        ({"mu_u": 2.0}, "weight_init.mu_u"),
        ({"alpha": 1.5}, "weight_init.alpha"),
        ({"alpha": 0.0}, "weight_init.alpha"),
        ({"rate": float("nan")}, "weight_init.rate"),
        ({"num_steps": 0}, "weight_init.num_steps"),
        ({"calibrate": "lsuv"}, "weight_init.calibrate"),
    ],
)
def test_bad_targets_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        FluctuationDriven(**kwargs)


def test_a_rate_of_a_spike_per_step_is_refused():
    with pytest.raises(ValueError, match=r"weight_init\.rate=1000 Hz"):
        network(weight_init=FluctuationDriven(rate=1000.0), hidden=5)


def test_relative_lr_stores_unit_rows_and_steps_relative_to_the_scale():
    torch.manual_seed(7)
    nets = {
        relative: network(
            neuron=AdLIF, weight_init=FluctuationDriven(relative_lr=relative), hidden=20
        )
        for relative in (True, False)
    }
    rel, plain = nets[True].layers[0].fc, nets[False].layers[0].fc
    stored = rel.parametrizations.weight.original
    torch.testing.assert_close(stored.pow(2).mean(1), torch.ones(20))  # unit RMS rows
    scale = rel.weight.detach().pow(2).mean(1).sqrt()
    assert scale.min() > 2.0  # adLIF's weights are large: a plain lr would be a small step
    # one Adam step on the same gradient moves the effective weights by about lr * scale
    for linear in (rel, plain):
        params = [p for p in linear.parameters()]
        before = linear.weight.detach().clone()
        opt = torch.optim.Adam(params, lr=1e-3)
        linear.weight.sum().backward()
        opt.step()
        step = (linear.weight.detach() - before).abs().mean(1)
        expected = 1e-3 * scale if linear is rel else torch.full((20,), 1e-3)
        torch.testing.assert_close(step, expected, rtol=1e-3, atol=0)
    names = {n for n, p in nets[True].named_parameters()}
    assert set(nets[True].parameter_groups()) == {"weights"}
    assert "layers.0.fc.parametrizations.weight.original" in names


@pytest.mark.parametrize(
    "override, key",
    [
        ("weight_init.xi=-1", "weight_init.xi=-1"),
        ("weight_init.mu_u=1.5", "weight_init.mu_u=1.5"),
        ("weight_init.rate=2000", "weight_init.rate=2000 Hz"),
        ("weight_init.calibrate=lsuv", "weight_init.calibrate must be one of"),
    ],
)
def test_the_config_check_names_a_bad_weight_init_before_anything_runs(override, key):
    from spikelight.validation import ConfigError, validate_config
    from tests.conftest import compose_config

    with pytest.raises(ConfigError, match=re.escape(key)):
        validate_config(compose_config([override]))


def test_a_preset_key_of_another_weight_init_option_is_named_with_its_fix():
    from spikelight.validation import ConfigError, validate_config
    from tests.conftest import compose_config

    cfg = compose_config(["experiment=heterogeneity_randman", "weight_init=fluctuation"])
    with pytest.raises(ConfigError, match=r"'scale'.*~weight_init\.<key>"):
        validate_config(cfg)
