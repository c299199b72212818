"""Trainable selection: exactly the chosen parameters learn; bounds hold under large steps."""

import functools
import itertools

import pytest
import torch

from spikelight.init import Homogeneous
from spikelight.module import SpikingClassifier
from spikelight.network import SpikingNetwork
from spikelight.neurons import ALIF, LIF
from spikelight.surrogates import SuperSpike
from spikelight.weight_init import ScaledNormal

NEURON_PARAMS = ["tau_mem", "tau_syn", "threshold", "v_leak", "v_reset"]
ALL = ["weights", "readout", *NEURON_PARAMS]
SUBSETS = [s for r in range(1, len(ALL) + 1) for s in itertools.combinations(ALL, r)]


def network(trainable, neuron=LIF, **neuron_kwargs):
    torch.manual_seed(0)
    # reset="zero" so that v_reset takes part in the dynamics and can receive a gradient
    factory = functools.partial(neuron, reset="zero", **neuron_kwargs)
    return SpikingNetwork(
        num_inputs=6,
        num_classes=3,
        hidden=[8, 5],
        neuron=factory,
        surrogate=SuperSpike(),
        trainable=trainable,
        tau_init=Homogeneous(),
        recurrent=True,
        weight_init=ScaledNormal(5.0),
    )


def expected_names(net, subset):
    names = set()
    for name, _ in net.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "weight" and (
            "weights" in subset or name == "readout_fc.weight" and "readout" in subset
        ):
            names.add(name)
        if leaf.removesuffix("_raw") in subset and leaf.endswith("_raw"):
            names.add(name)
    return names


def loss_of(net, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(40, 4, 6, generator=g) < 0.3).float()
    y = torch.tensor([0, 1, 2, 1])
    out = net(x)
    return torch.nn.functional.cross_entropy(out.logits, y) + out.readout.pow(2).mean()


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_exactly_the_selected_parameters_learn(subset):
    net = network(list(subset))
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == expected_names(net, subset)
    # neuron parameters that are not selected are buffers, not parameters
    for name in NEURON_PARAMS:
        kind = "parameter" if name in subset else "buffer"
        owner = dict(net.named_parameters()) if kind == "parameter" else dict(net.named_buffers())
        assert f"layers.0.neuron.{name}_raw" in owner, (name, kind)

    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss_of(net).backward()
    for name, p in net.named_parameters():
        if name in trainable:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"{name} received a zero gradient"
        else:
            assert p.grad is None, name
    torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1).step()
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == trainable


def test_alif_adaptation_time_constant_learns():
    net = network(["tau_adapt"], neuron=ALIF, adapt_jump=0.5)
    loss_of(net).backward()
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    assert names == ["layers.0.neuron.tau_adapt_raw", "layers.1.neuron.tau_adapt_raw"]
    assert all(dict(net.named_parameters())[n].grad.abs().sum() > 0 for n in names)


def test_unknown_or_missing_parameter_is_rejected():
    with pytest.raises(ValueError, match="tau_adapt"):
        network(["weights", "tau_adapt"])  # LIF has no adaptation
    with pytest.raises(ValueError, match=r"trainable=\[\]: expected at least one name"):
        network([])


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_bounds_hold_after_many_large_steps(direction):
    bounds = (2e-3, 80e-3)
    net = network(["tau_mem", "tau_syn", "threshold"], tau_mem_bounds=bounds, tau_syn_bounds=bounds)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e4)
    for step in range(200):
        opt.zero_grad()
        neurons = [layer.neuron for layer in net.layers]
        # push every time constant and threshold hard in one direction, plus the task loss
        push = sum(
            n.get("tau_mem").sum() + n.get("tau_syn").sum() + n.get("threshold").sum()
            for n in neurons
        )
        (direction * push + loss_of(net, seed=step)).backward()
        opt.step()
        for n in neurons:
            for tau in ("tau_mem", "tau_syn"):
                value = n.get(tau)
                assert torch.isfinite(value).all()
                assert (value >= bounds[0]).all() and (value <= bounds[1]).all(), (step, tau)
            assert (n.get("threshold") > 0).all()


def test_gradients_are_finite_and_nonzero_inside_bounds():
    net = network(["tau_mem", "tau_syn", "threshold"], tau_mem_bounds=(2e-3, 80e-3))
    neuron = net.layers[0].neuron
    for name in ("tau_mem", "tau_syn", "threshold"):
        raw = getattr(neuron, f"{name}_raw")
        (grad,) = torch.autograd.grad(neuron.get(name).sum(), raw)
        assert torch.isfinite(grad).all() and (grad > 0).all(), name


def test_neuron_parameters_get_their_own_optimizer_groups():
    net = network(["weights", "tau_mem", "threshold"])
    module = SpikingClassifier(
        net, optimizer=functools.partial(torch.optim.Adam, lr=1e-3), neuron_lr=0.05
    )
    opt = module.configure_optimizers()
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"weights", "tau_mem", "threshold"}
    assert groups["weights"]["lr"] == 1e-3
    assert groups["tau_mem"]["lr"] == groups["threshold"]["lr"] == 0.05
    assert len(groups["tau_mem"]["params"]) == 2  # one tensor per hidden layer
