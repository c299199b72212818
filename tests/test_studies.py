"""The study presets of docs/results.md: they compose and run, and their building blocks
(true-gradient and smooth-forward surrogates, the adLIF neuron) do what the studies rely on."""

from __future__ import annotations

import functools
import importlib
import json
import math
import subprocess
import sys

import hydra
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from spikelight.data import mnist, shd
from spikelight.delays import DelayedLinear
from spikelight.module import SpikingClassifier
from spikelight.network import SpikingNetwork, selected_names
from spikelight.neurons import LIF, AdLIF
from spikelight.surrogates import Heaviside, Logistic, SuperSpike
from spikelight.train import train
from spikelight.validation import ConfigError, validate_config
from spikelight.weight_init import ScaledNormal, Uniform
from tests.conftest import REPO_ROOT, compose_config, flat
from tests.data_fixtures import MNIST_FILES, make_idx_files, make_shd_files, md5_of

SHORT_STEPS = 4
SHORT = [  # SHORT_STEPS steps on one batch, validation once, one test batch
    "trainer.accelerator=cpu",
    "+trainer.overfit_batches=1",
    f"trainer.max_epochs={SHORT_STEPS}",
    f"trainer.check_val_every_n_epoch={SHORT_STEPS}",
    "+trainer.num_sanity_val_steps=0",
    "+trainer.limit_test_batches=1",
    "data.num_workers=0",
    "callbacks=none",
    "logger=[]",
]
CONF = REPO_ROOT / "conf"
SMALL_RANDMAN = ["data.samples_per_class=8", "data.batch_size=16", "data.num_steps=50"]
WHY_CONDITIONS = ["", "_true_gradient", "_true_gradient_spiking_readout", "_reservoir", "_smooth"]


@pytest.fixture
def mnist_dir(tmp_path, monkeypatch):
    make_idx_files(tmp_path / "mnist", n_train=64, n_test=16)
    names = [name for pair in MNIST_FILES.values() for name in pair]
    monkeypatch.setitem(
        mnist.CHECKSUMS, "mnist", {n: md5_of(tmp_path / "mnist" / n) for n in names}
    )
    return tmp_path / "mnist"


@pytest.fixture
def shd_dir(tmp_path, monkeypatch):
    # SHD-like density (real samples: thousands of events), so that the presets' weights make
    # the networks spike and learn
    make_shd_files(tmp_path / "shd", n_train=24, n_test=8, max_events=6000)
    monkeypatch.setattr(shd, "CHECKSUMS", {})  # generated files are not the published ones
    return tmp_path / "shd"


def run(make_config, overrides, monkeypatch):
    """Train a few steps on one batch (``trainer.overfit_batches=1``): the final metrics and
    the training loss of each step, in order."""
    losses = []
    step = SpikingClassifier.training_step

    def recording_step(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        losses.append(loss.item())
        return loss

    monkeypatch.setattr(SpikingClassifier, "training_step", recording_step)
    metrics = train(make_config([*overrides, *SHORT]))
    assert len(losses) == SHORT_STEPS
    assert 0.0 <= metrics["test/acc"] <= 1.0
    return metrics, losses


def learns(losses):
    return losses[-1] < losses[0] and all(math.isfinite(v) for v in losses)


# -- what a preset's yaml says, checked on what it builds ----------------------------------------
def preset(experiment):
    """``(group choices, values)`` that an experiment's yaml sets, its parents' included."""
    raw = yaml.safe_load((CONF / "experiment" / f"{experiment}.yaml").read_text())
    groups, values = {}, {}
    for entry in raw.pop("defaults", []):
        if isinstance(entry, str):  # another experiment, extended by this one
            parent_groups, parent_values = preset(entry)
            groups.update(parent_groups)
            values.update(parent_values)
        else:
            ((key, option),) = entry.items()
            groups[key.removeprefix("override /")] = option
    raw.pop("hydra", None)  # sweeps: test_multirun_presets_define_their_sweep
    values.update(flat(raw))
    return groups, values


def target_class(group, option):
    target = yaml.safe_load((CONF / group / f"{option}.yaml").read_text())["_target_"]
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def check_preset(cfg, experiment, changed=()):
    """The model and data module built from ``cfg`` have every setting the experiment's yaml
    names, read off the built objects; ``changed``: keys (or groups) the test overrides."""
    groups, values = preset(experiment)
    model = hydra.utils.instantiate(cfg.model)
    data = hydra.utils.instantiate(cfg.data)
    net = model.network
    neurons = [layer.neuron for layer in net.layers]
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    lr = {group["name"]: group["lr"] for group in optimizer.param_groups}

    trained = selected_names(groups.get("trainable", ["weights"]))
    trained |= {k.split(".", 1)[1] for k, v in values.items() if k.startswith("trainable.") and v}
    for group, option in groups.items():
        if group in changed:
            continue
        if group == "data":
            assert type(data) is target_class("data", option)
        elif group == "data/encoding":
            assert type(data.encoding) is target_class("data/encoding", option)
        elif group == "data/augment":
            assert type(data.augment) is target_class("data/augment", option)
        elif group == "neuron":
            assert all(type(n) is target_class("neuron", option) for n in neurons)
        elif group == "surrogate":
            assert type(net.surrogate) is target_class("surrogate", option)
        elif group == "init":
            assert type(neurons[0].tau_init) is target_class("init", option)
        elif group == "weight_init":
            assert type(net.weight_init) is target_class("weight_init", option)
        elif group == "trainable":
            kinds = {"weights" if t in ("weights", "readout") else t for t in trained}
            assert set(net.parameter_groups()) == kinds
            learning = {n for n, p in net.named_parameters() if p.requires_grad}
            weights = {n for n in learning if n.endswith(("weight", "weight.original"))}
            hidden = {n for n in weights if n.startswith("layers.0.fc.")}
            assert bool(hidden) == ("weights" in trained)
            readout = {n for n in weights if n.startswith("readout_fc.")}
            assert bool(readout) == bool({"weights", "readout"} & trained)
        elif group == "logger":
            assert sorted(cfg.logger) == sorted(option)
        else:
            raise AssertionError(f"{experiment}: no check for group {group!r}")

    homogeneous = groups.get("init", "homogeneous") == "homogeneous" and "init" not in changed
    for key, value in values.items():
        if key in changed or key.startswith("trainable."):
            continue
        if key == "seed":
            assert cfg.seed == value
            continue
        section, name = key.split(".", 1)
        if key == "data.augment.order":
            assert data.augment.order == value, key
        elif key.startswith("data.augment."):  # data.augment.<transform>.<setting>
            transform, setting = key.removeprefix("data.augment.").split(".")
            if transform in data.augment.order:
                built = data.augment.transforms[data.augment.order.index(transform)]
                assert getattr(built, setting) == pytest.approx(value), key
        elif section == "data":
            assert getattr(data, name) == pytest.approx(value), key
        elif section == "neuron" and name.endswith("_bounds"):  # tau_*, adapt_a, adapt_b
            for n in neurons:
                bounds = n._constraints[name.removesuffix("_bounds")]
                assert (bounds.lo, bounds.hi) == pytest.approx(value), key
        elif section == "neuron" and name.startswith("tau_"):
            for n in neurons:
                tau = n.get(name)
                bounds = n._constraints[name]
                assert bounds.lo <= tau.min() <= tau.max() <= bounds.hi, key
                if homogeneous:
                    assert torch.allclose(tau, torch.full_like(tau, value), rtol=1e-5), key
                elif groups.get("init") == "uniform" and "init" not in changed:
                    spread = cfg.init.spread
                    assert value * (1 - spread) <= tau.min() <= tau.max() <= value * (1 + spread)
        elif section == "neuron" and name in neurons[0].parameter_names:
            for n in neurons:
                got = n.get(name)
                assert torch.allclose(got, torch.full_like(got, value), rtol=1e-5), key
        elif section == "neuron":
            assert all(getattr(n, name) == pytest.approx(value) for n in neurons), key
        elif section == "surrogate":
            got = net.surrogate.beta.item() if name == "beta" else getattr(net.surrogate, name)
            assert got == pytest.approx(value), key
        elif section == "init":
            assert getattr(neurons[0].tau_init, name) == pytest.approx(value), key
        elif key == "model.network.hidden":
            assert [n.size for n in neurons] == value
        elif key == "model.network.recurrent":
            assert [layer.rec is not None for layer in net.layers] == [value] * len(neurons)
        elif key == "model.network.decoding":
            assert net.decoding == value
        elif key in ("model.network.readout_tau_mem", "model.network.readout_tau_syn"):
            decay = getattr(net.readout, "a_" + key.rsplit("_", 1)[1])
            no_filter = value is None  # readout_tau_syn: null, no synaptic filter
            expected = 0.0 if no_filter else math.exp(-net.dt / value)
            assert decay.item() == pytest.approx(expected, rel=1e-6), key
        elif key in ("model.network.dropout", "model.network.ignore_steps"):
            assert getattr(net, name.rsplit(".", 1)[1]) == value, key
        elif key == "model.network.bias":
            projections = [layer.fc for layer in net.layers] + [net.readout_fc]
            assert all((linear.bias is not None) == value for linear in projections), key
        elif key.startswith("model.network.delays."):
            name = key.removeprefix("model.network.delays.")
            expected = OmegaConf.select(cfg, key) if "${" in str(value) else value
            assert getattr(net.delay_spec, name) == expected, key
            if name == "readout":
                assert isinstance(net.readout_fc, DelayedLinear) == value, key
        elif key == "model.scheduler":
            assert (model.scheduler_factory is None) == (value is None), key
        elif key.startswith("model.scheduler."):
            scheduler = model.scheduler_factory(optimizer)
            name = key.removeprefix("model.scheduler.")
            if name == "_target_":
                module, cls = value.rsplit(".", 1)
                assert type(scheduler) is getattr(importlib.import_module(module), cls), key
            elif name != "_partial_":
                expected = cfg.trainer.max_epochs if value == "${trainer.max_epochs}" else value
                assert getattr(scheduler, name) == expected, key
        elif key == "weight_init.scale" and isinstance(net.weight_init, Uniform):
            # w ~ U(-scale / sqrt(fan_in), scale / sqrt(fan_in)): its bound and std (5 s.e.)
            for w in [layer.fc.weight for layer in net.layers] + [net.readout_fc.weight]:
                bound = value / math.sqrt(w.shape[1])
                assert w.abs().max() <= bound, key
                ratio = w.std().item() * math.sqrt(3) / bound
                assert abs(ratio - 1) < 5 / math.sqrt(w.numel()), (key, ratio)
        elif key == "weight_init.relative_lr":
            assert net.weight_init.relative_lr == value, key
            relative = {n for n, _ in net.named_parameters() if n.endswith("weight.original")}
            assert bool(relative) == value, key
        elif key == "weight_init.recurrent":
            assert net.weight_init.recurrent == value
            for layer in net.layers:
                w = layer.rec.weight.detach()
                gram = torch.eye(w.shape[0]) * net.weight_init.scale**2
                assert torch.allclose(w @ w.t(), gram, atol=1e-5) == (value == "orthogonal")
        elif key == "weight_init.scale":
            # weights ~ N(0, (scale / sqrt(fan_in))^2): the sample std, to 5 standard errors
            for w in [layer.fc.weight for layer in net.layers] + [net.readout_fc.weight]:
                ratio = w.std().item() * math.sqrt(w.shape[1]) / value
                assert abs(ratio - 1) < 5 / math.sqrt(2 * w.numel()), (key, ratio)
        elif key == "model.optimizer._target_":
            module, cls = value.rsplit(".", 1)
            assert type(optimizer) is getattr(importlib.import_module(module), cls), key
        elif key == "model.optimizer.lr":
            assert lr["weights"] == pytest.approx(value)
        elif key == "model.optimizer.betas":
            assert list(optimizer.param_groups[0]["betas"]) == pytest.approx(value)
        elif key == "model.delay_lr":
            assert lr["delays"] == pytest.approx(value), key
        elif key == "model.neuron_lr":
            assert model.neuron_lr == pytest.approx(value)
            assert all(v == pytest.approx(value) for g, v in lr.items() if g != "weights")
        elif key in ("model.reg_l1", "model.reg_l2", "model.reg_l2_bound"):
            assert model.reg[key.removeprefix("model.reg_")] == pytest.approx(value), key
        elif section == "trainer":
            assert cfg.trainer[name] == value, key
        else:
            raise AssertionError(f"{experiment}: no check for {key!r}")
    return model


def overridden(overrides):
    """Keys and groups that test overrides change (so the preset's own value is not there)."""
    return {o.split("=", 1)[0] for o in overrides}


# -- presets build what they say, and a few steps on one batch lower the loss ----------------
@pytest.mark.parametrize("condition", WHY_CONDITIONS)
def test_why_surrogate_randman_presets(make_config, monkeypatch, condition):
    experiment = f"why_surrogate_randman{condition}"
    overrides = [f"experiment={experiment}", *SMALL_RANDMAN]
    check_preset(make_config(overrides), experiment, overridden(overrides))
    _, losses = run(make_config, overrides, monkeypatch)
    if condition == "_true_gradient_spiking_readout":
        assert len(set(losses)) == 1, losses  # every gradient is zero: nothing learns
    else:
        assert learns(losses), losses


@pytest.mark.parametrize("condition", ["", "_smooth"])
def test_why_surrogate_mnist_presets(make_config, mnist_dir, monkeypatch, condition):
    experiment = f"why_surrogate_mnist{condition}"
    overrides = [
        f"experiment={experiment}",
        f"data.data_dir={mnist_dir}",
        "data.download=false",
        "data.batch_size=16",
        "data.val_size=16",
    ]
    check_preset(make_config(overrides), experiment, overridden(overrides))
    _, losses = run(make_config, overrides, monkeypatch)
    assert learns(losses), losses


def test_if_mnist_preset_builds_its_settings_and_its_if_layers_spike(
    make_config, mnist_dir, monkeypatch
):
    overrides = [
        "experiment=if_mnist",
        f"data.data_dir={mnist_dir}",
        "data.download=false",
        "data.batch_size=16",
        "data.val_size=16",
    ]
    check_preset(make_config(overrides), "if_mnist", overridden(overrides))
    metrics, losses = run(make_config, overrides, monkeypatch)
    assert metrics["train/rate/hidden0"] > 0
    assert learns(losses), losses


@pytest.mark.parametrize("experiment", ["surrogate_sweep", "heterogeneity_randman"])
def test_randman_study_presets(make_config, monkeypatch, experiment):
    overrides = [
        f"experiment={experiment}",
        *SMALL_RANDMAN,
        "init=heterogeneous",
        "trainable=[weights,tau_mem,tau_syn]",
    ]
    model = check_preset(make_config(overrides), experiment, overridden(overrides))
    assert set(model.network.parameter_groups()) == {"weights", "tau_mem", "tau_syn"}
    _, losses = run(make_config, overrides, monkeypatch)
    assert learns(losses), losses


@pytest.mark.parametrize(
    "experiment, overrides",
    [
        ("shd_spytorch", []),
        ("heterogeneity_shd", ["data.num_steps=40"]),
        ("shd_se_adlif", ["data.num_steps=40", "model.network.hidden=[16,16]"]),
        ("shd_adlif", ["data.num_steps=40", "model.network.hidden=[16,16]"]),  # the alias
        ("shd_best", ["data.num_steps=40", "model.network.hidden=[16,16]"]),
        # dropout 0.4 makes 4 steps on one batch too noisy to show learning
        (
            "shd_delays",
            ["data.num_steps=40", "model.network.hidden=[16,16]", "model.network.dropout=0"],
        ),
    ],
)
def test_shd_study_presets_on_generated_files(
    make_config, shd_dir, monkeypatch, experiment, overrides
):
    overrides = [
        f"experiment={experiment}",
        f"data.data_dir={shd_dir}",
        f"data.cache_dir={shd_dir.parent / 'cache'}",
        "data.download=false",
        "data.batch_size=8",
        *overrides,
    ]
    check_preset(make_config(overrides), experiment, overridden(overrides))
    metrics, losses = run(make_config, overrides, monkeypatch)
    assert "train/rate/hidden0" in metrics
    assert learns(losses), losses


def test_shd_spytorch_has_the_tutorial_settings():
    cfg = compose_config(["experiment=shd_spytorch"])
    assert cfg.model.network.hidden == [200] and cfg.model.network.recurrent
    assert (cfg.data.num_steps, cfg.data.max_time, cfg.data.batch_size) == (100, 1.4, 256)
    assert (cfg.neuron.tau_mem, cfg.neuron.tau_syn, cfg.surrogate.beta) == (10e-3, 5e-3, 100.0)
    assert cfg.model.optimizer._target_ == "torch.optim.Adamax" and cfg.model.optimizer.lr == 2e-4
    # SPyTorch's 2e-6 on batch sums, in the per-sample convention at batch 256
    assert cfg.model.reg_l1 == pytest.approx(2e-6 * 256)
    assert cfg.model.reg_l2 == pytest.approx(2e-6 * 256**2)


@pytest.mark.parametrize(
    "experiment, expected",
    [
        ("surrogate_sweep", {"seed": 3, "surrogate": 5, "surrogate.beta": 4}),
        ("heterogeneity_randman", {"init": 2, "trainable": 2, "seed": 3}),
        ("heterogeneity_shd", {"init": 2, "trainable": 2, "seed": 3}),
    ],
)
def test_multirun_presets_define_their_sweep(experiment, expected):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from spikelight.train import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    parser = OverridesParser.create()
    sizes = {
        key: len(list(parser.parse_override(f"{key}={value}").sweep_string_iterator()))
        for key, value in params.items()
    }
    assert sizes == expected


@pytest.mark.slow
def test_why_surrogate_glob_multirun_runs_all_conditions(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "experiment=glob(why_surrogate_randman*)",
            *SMALL_RANDMAN,
            "trainer.max_epochs=1",
            "callbacks=none",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len([p for p in sweep.iterdir() if p.is_dir()]) == len(WHY_CONDITIONS)
    out = subprocess.run(
        [
            sys.executable,
            "scripts/plot_why_surrogate.py",
            str(sweep),
            "--out",
            str(tmp_path / "w.png"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "w.png").is_file() and "(d) surrogate gradient" in out.stdout


# -- the true gradient and the smooth forward ------------------------------------------------
def small_network(surrogate, decoding="max_membrane", trainable=("weights",)):
    torch.manual_seed(0)
    return SpikingNetwork(
        num_inputs=20,
        num_classes=4,
        hidden=[16, 16],
        neuron=functools.partial(LIF),
        surrogate=surrogate,
        trainable=trainable,
        decoding=decoding,
        weight_init=ScaledNormal(10.0),
    )


def spikes_in(seed=1):
    return (torch.rand(50, 8, 20, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


@pytest.mark.parametrize("decoding", ["max_membrane", "spike_count"])
def test_true_gradient_gives_exactly_zero_gradients_through_spikes(decoding):
    net = small_network(Heaviside(), decoding=decoding)
    out = net(spikes_in())
    assert out.spikes["hidden0"].sum() > 0  # the network does spike
    torch.nn.functional.cross_entropy(out.logits, torch.arange(8) % 4).backward()
    for layer in net.layers:
        assert torch.equal(layer.fc.weight.grad, torch.zeros_like(layer.fc.weight))
    readout = net.readout_fc.weight.grad
    if decoding == "spike_count":  # every path crosses a spike: nothing learns at all
        assert torch.equal(readout, torch.zeros_like(readout))
    else:  # the non-spiking readout still learns (the network is a reservoir)
        assert readout.abs().sum() > 0


def test_heaviside_rejects_a_smooth_forward_and_learn_beta():
    with pytest.raises(ValueError, match="heaviside"):
        Heaviside(smooth_forward=True)
    with pytest.raises(ValueError, match="heaviside"):
        Heaviside(learn_beta=True)
    cfg = compose_config(["surrogate=heaviside", "+surrogate.smooth_forward=true"])
    with pytest.raises(ConfigError, match="smooth_forward"):
        validate_config(cfg)


@pytest.mark.parametrize(
    "surrogate", [Logistic(5.0, smooth_forward=True), SuperSpike(5.0, smooth_forward=True)]
)
def test_smooth_forward_is_a_smooth_step_in_0_1(surrogate):
    x = torch.linspace(-3, 3, 101, dtype=torch.float64)
    y = surrogate(x)
    assert surrogate.smooth_forward is True
    assert ((y > 0) & (y < 1)).all() and torch.all(y[1:] > y[:-1])
    assert y[50] == pytest.approx(0.5)
    assert not ((y == 0) | (y == 1)).all()  # not spikes


def test_smooth_forward_network_gradient_matches_finite_differences():
    torch.manual_seed(0)
    neuron = LIF(6, Logistic(4.0, smooth_forward=True), detach_reset=False).double()
    x = (torch.rand(30, 2, 6, dtype=torch.float64) * 1.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda inp: neuron(inp).sum(0), (x,), eps=1e-6, atol=1e-6)
    z = neuron(x.detach())
    assert not ((z == 0) | (z == 1)).all() and (z >= 0).all() and (z <= 1).all()


def test_smooth_forward_rates_and_regularisers_stay_finite(make_config, monkeypatch):
    metrics, losses = run(
        make_config,
        [
            "experiment=why_surrogate_randman_smooth",
            *SMALL_RANDMAN,
            "model.reg_l1=1e-3",
            "model.reg_l2=1e-3",
        ],
        monkeypatch,
    )
    assert 0 < metrics["train/rate/hidden0"] <= 1000  # spikes/s with dt = 1 ms: <= 1 per step
    assert math.isfinite(metrics["train/loss_epoch"])
    assert learns(losses), losses


# -- the adLIF neuron ------------------------------------------------------------------------
def reference_adlif(x, tau_mem, tau_adapt, a, b, q, threshold, dt, reset, symplectic):
    """The adLIF recurrence written out with plain floats, one neuron, one sample."""
    a_mem, a_w = math.exp(-dt / tau_mem), math.exp(-dt / tau_adapt)
    u = w = z = 0.0
    spikes, us, ws = [], [], []
    for x_t in x:
        u_prev, z_prev = u, z
        u = a_mem * u + (1 - a_mem) * (x_t - w)
        z = 1.0 if u > threshold else 0.0
        if z:
            u = u - threshold if reset == "subtract" else 0.0
        u_d, z_d = (u, z) if symplectic else (u_prev, z_prev)
        w = a_w * w + (1 - a_w) * q * (a * u_d + b * z_d)
        spikes.append(z), us.append(u), ws.append(w)
    return spikes, us, ws


@pytest.mark.parametrize("discretization", ["symplectic", "euler"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_adlif_matches_the_reference_recurrence(discretization, reset):
    params = dict(tau_mem=12e-3, tau_adapt=150e-3, adapt_a=0.3, adapt_b=1.5, adapt_scale=40.0)
    neuron = AdLIF(
        1,
        SuperSpike(),
        dt=1e-3,
        reset=reset,
        discretization=discretization,
        tau_mem_bounds=(5e-3, 25e-3),
        **params,
    ).double()
    drive = [3.0] * 60 + [0.0] * 20 + [-1.0] * 10 + [2.5] * 60
    x = torch.tensor(drive, dtype=torch.float64).view(-1, 1, 1)
    spikes, traces = neuron(x, return_traces=True)
    # the parameters as stored (float32 at construction), so that only the recurrence is compared
    tau_mem, tau_adapt, a, b = (
        neuron.get(n).item() for n in ("tau_mem", "tau_adapt", "adapt_a", "adapt_b")
    )
    assert (tau_mem, a) == (pytest.approx(12e-3, rel=1e-6), pytest.approx(0.3, rel=1e-6))
    ref_z, ref_u, ref_w = reference_adlif(
        drive, tau_mem, tau_adapt, a, b, 40.0, 1.0, 1e-3, reset, discretization == "symplectic"
    )
    assert sum(ref_z) >= 3  # the drive makes it spike (and adapt)
    assert spikes.flatten().tolist() == ref_z
    torch.testing.assert_close(traces["u"].flatten(), torch.tensor(ref_u, dtype=torch.float64))
    torch.testing.assert_close(traces["w"].flatten(), torch.tensor(ref_w, dtype=torch.float64))


@pytest.mark.parametrize("discretization", ["symplectic", "euler"])
def test_adlif_gradient_matches_finite_differences(discretization):
    """With a smooth forward (so that the function has a true gradient) and the reset not
    detached, autograd equals central finite differences for the input and every parameter."""
    torch.manual_seed(0)
    trainable = ["tau_mem", "tau_adapt", "adapt_a", "adapt_b", "threshold"]
    neuron = AdLIF(
        3,
        Logistic(3.0, smooth_forward=True),
        trainable=trainable,
        detach_reset=False,
        reset="subtract",
        discretization=discretization,
        adapt_scale=20.0,
    ).double()
    x = torch.rand(40, 2, 3, dtype=torch.float64) * 3.0
    params = [getattr(neuron, f"{name}_raw") for name in trainable]

    def loss(inp):
        return (neuron(inp) * torch.linspace(0.5, 1.5, 3, dtype=torch.float64)).sum()

    x.requires_grad_(True)
    analytic = torch.autograd.grad(loss(x), [x, *params])
    for tensor, grad in zip([x, *params], analytic, strict=True):
        flat = tensor.detach().view(-1)
        for i in torch.randperm(flat.numel())[:6].tolist():
            with torch.no_grad():
                old = flat[i].item()
                tensor.data.view(-1)[i] = old + 1e-6
                up = loss(x.detach()).item()
                tensor.data.view(-1)[i] = old - 1e-6
                down = loss(x.detach()).item()
                tensor.data.view(-1)[i] = old
            assert grad.view(-1)[i].item() == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-6)


def test_adlif_keeps_its_trained_parameters_in_bounds_and_rejects_bad_values():
    neuron = AdLIF(4, SuperSpike(), trainable=["adapt_a", "adapt_b"])
    with torch.no_grad():
        neuron.adapt_a_raw.fill_(50.0)
        neuron.adapt_b_raw.fill_(-50.0)
    assert torch.all(neuron.get("adapt_a") <= 1.0) and torch.all(neuron.get("adapt_b") >= 0.0)
    with pytest.raises(ValueError, match="adapt_a"):
        AdLIF(4, SuperSpike(), adapt_a=2.0)
    with pytest.raises(ValueError, match="discretization"):
        AdLIF(4, SuperSpike(), discretization="rk4")
    cfg = compose_config(["neuron=adlif", "neuron.adapt_b=3.0"])
    with pytest.raises(ConfigError, match="neuron.adapt_b"):
        validate_config(cfg)


def test_adlif_neuron_config_builds_a_trainable_network():
    cfg = compose_config(
        ["neuron=adlif", "trainable=[weights,tau_mem,tau_adapt]", "+trainable.adapt_a=true"]
    )
    validate_config(cfg)
    model = hydra.utils.instantiate(cfg.model)
    assert set(model.network.parameter_groups()) == {"weights", "tau_mem", "tau_adapt", "adapt_a"}


def test_parameter_learning_script_writes_its_figure(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "scripts/parameter_learning.py",
            "--steps",
            "3",
            "--seeds",
            "0",
            "--out",
            str(tmp_path / "p.png"),
            "--evidence",
            str(tmp_path / "evidence"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "p.png").is_file() and "weights + tau_mem" in result.stdout
    records = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "evidence").glob("*.json")}
    assert set(records) == {"weights_only", "weights_tau_mem"}
    for record in records.values():  # the table's mean is the mean of the seeds' final losses
        metrics = record["metrics"]
        assert metrics["final_loss_mean"] == pytest.approx(metrics["final_loss_seed_0"])
        assert str(tmp_path / "evidence") in record["command"]
