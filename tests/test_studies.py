"""The study presets of docs/results.md: they compose and run, and their building blocks
(true-gradient and smooth-forward surrogates, the adLIF neuron) do what the studies rely on."""

from __future__ import annotations

import functools
import math
import subprocess
import sys

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from spikelight.data import mnist, shd
from spikelight.network import SpikingNetwork
from spikelight.neurons import LIF, AdLIF
from spikelight.surrogates import Heaviside, Logistic, SuperSpike
from spikelight.train import train
from spikelight.validation import ConfigError, validate_config
from spikelight.weight_init import ScaledNormal
from tests.conftest import REPO_ROOT, compose_config
from tests.data_fixtures import MNIST_FILES, make_idx_files, make_shd_files, md5_of

FAST = ["debug=fast_dev_run", "callbacks=none", "logger=[]"]
SMALL_RANDMAN = ["data.samples_per_class=8", "data.batch_size=16"]
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
    make_shd_files(tmp_path / "shd", n_train=24, n_test=8)
    monkeypatch.setattr(shd, "CHECKSUMS", {})  # generated files are not the published ones
    return tmp_path / "shd"


def run(make_config, overrides):
    metrics = train(make_config([*overrides, *FAST]))
    assert 0.0 <= metrics["test/acc"] <= 1.0
    return metrics


# -- presets run end to end ------------------------------------------------------------------
@pytest.mark.parametrize("condition", WHY_CONDITIONS)
def test_why_surrogate_randman_presets_run(make_config, condition):
    run(make_config, [f"experiment=why_surrogate_randman{condition}", *SMALL_RANDMAN])


@pytest.mark.parametrize("condition", ["", "_smooth"])
def test_why_surrogate_mnist_presets_run(make_config, mnist_dir, condition):
    run(
        make_config,
        [
            f"experiment=why_surrogate_mnist{condition}",
            f"data.data_dir={mnist_dir}",
            "data.download=false",
            "data.batch_size=16",
            "data.val_size=16",
        ],
    )


def test_if_mnist_preset_runs_and_its_if_layers_spike(make_config, mnist_dir):
    cfg = make_config(
        [
            "experiment=if_mnist",
            f"data.data_dir={mnist_dir}",
            "data.download=false",
            "data.batch_size=16",
            "data.val_size=16",
            *FAST,
        ]
    )
    assert cfg.neuron._target_.endswith(".IF") and cfg.model.network.decoding == "spike_rate"
    assert cfg.data.encoding._target_.endswith("IFEncoder") and cfg.surrogate.beta == 100
    metrics = train(cfg)
    assert metrics["train/rate/hidden0"] > 0


@pytest.mark.parametrize("experiment", ["surrogate_sweep", "heterogeneity_randman"])
def test_randman_study_presets_run(make_config, experiment):
    run(
        make_config,
        [
            f"experiment={experiment}",
            *SMALL_RANDMAN,
            "init=heterogeneous",
            "trainable=[weights,tau_mem,tau_syn]",
        ],
    )


@pytest.mark.parametrize(
    "experiment, overrides",
    [
        ("shd_spytorch", []),
        ("heterogeneity_shd", ["data.num_steps=40"]),
        ("shd_adlif", ["data.num_steps=40", "model.network.hidden=[16,16]"]),
    ],
)
def test_shd_study_presets_run_on_generated_files(make_config, shd_dir, experiment, overrides):
    metrics = run(
        make_config,
        [
            f"experiment={experiment}",
            f"data.data_dir={shd_dir}",
            "data.download=false",
            "data.batch_size=8",
            *overrides,
        ],
    )
    assert "train/rate/hidden0" in metrics


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


def test_smooth_forward_rates_and_regularisers_stay_finite(make_config):
    metrics = run(
        make_config,
        [
            "experiment=why_surrogate_randman_smooth",
            *SMALL_RANDMAN,
            "model.reg_l1=1e-3",
            "model.reg_l2=1e-3",
        ],
    )
    assert 0 < metrics["train/rate/hidden0"] <= 1000  # spikes/s with dt = 1 ms: <= 1 per step
    assert math.isfinite(metrics["train/loss_epoch"])


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
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "p.png").is_file() and "weights + tau_mem" in result.stdout
