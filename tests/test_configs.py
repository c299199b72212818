"""Every option of every config group composes and instantiates; so does every experiment."""

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from spikelight.module import SpikingClassifier
from tests.conftest import REPO_ROOT, compose_config

CONF = REPO_ROOT / "conf"


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def build_and_run_model(cfg):
    model = hydra.utils.instantiate(cfg.model)
    assert isinstance(model, SpikingClassifier)
    x = (torch.rand(2, cfg.data.num_steps, cfg.data.num_inputs) < 0.2).float()
    scores = model(x)
    assert scores.shape == (2, cfg.data.num_classes)
    assert torch.isfinite(scores).all()
    return model


def test_groups_have_the_documented_options():
    assert {"randman", "shd", "mnist"} <= set(options("data"))
    assert set(options("neuron")) == {"if", "lif", "alif", "adlif"}
    assert {
        "superspike",
        "fast_sigmoid",
        "logistic",
        "sigmoid",
        "atan",
        "triangle",
        "exponential",
    } <= set(options("surrogate"))
    assert {
        "weights",
        "readout",
        "tau_mem",
        "tau_syn",
        "threshold",
        "tau_adapt",
        "v_leak",
        "v_reset",
    } <= set(options("trainable"))
    assert {"homogeneous", "heterogeneous", "lognormal", "uniform"} <= set(options("init"))
    assert {"default", "cpu", "gpu", "ddp"} <= set(options("trainer"))
    assert {"tensorboard", "csv"} <= set(options("logger"))


MODEL_GROUPS = ["data", "neuron", "surrogate", "init", "model"]


@pytest.mark.parametrize(
    "group, option", [(g, o) for g in MODEL_GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_model_group_option_composes_and_instantiates(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}", f"paths.data_dir={tmp_path}"])
    build_and_run_model(cfg)
    if group == "data":  # building the data module reads no files
        dm = hydra.utils.instantiate(cfg.data)
        assert (dm.num_inputs, dm.num_classes) == (cfg.data.num_inputs, cfg.data.num_classes)
        assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("option", options("trainable"))
def test_trainable_option_selects_that_parameter(option):
    neuron = {"tau_adapt": "alif", "adapt_a": "adlif", "adapt_b": "adlif"}.get(option, "lif")
    reset = "zero" if option == "v_reset" else "subtract"  # v_reset acts only on reset to it
    cfg = compose_config([f"trainable=[{option}]", f"neuron={neuron}", f"neuron.reset={reset}"])
    assert OmegaConf.to_container(cfg.trainable) == {option: True}
    model = build_and_run_model(cfg)
    kinds = set(model.network.parameter_groups())
    assert kinds == ({"weights"} if option in ("weights", "readout") else {option})


def test_trainable_is_multi_select():
    cfg = compose_config(["trainable=[weights,tau_mem,tau_syn,threshold]"])
    model = build_and_run_model(cfg)
    assert set(model.network.parameter_groups()) == {"weights", "tau_mem", "tau_syn", "threshold"}


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks"])
def test_run_groups_instantiate(group, tmp_path):
    for option in options(group):
        override = f"{group}=[{option}]" if group == "logger" else f"{group}={option}"
        cfg = compose_config([override], output_dir=tmp_path)
        node = cfg[group]
        if group == "trainer":
            if node.accelerator == "gpu" and not torch.cuda.is_available():
                node.accelerator = "cpu"  # the rest of the GPU preset still has to build
            hydra.utils.instantiate(node)
        else:
            for entry in (node or {}).values():
                hydra.utils.instantiate(entry)


@pytest.mark.parametrize("option", options("debug"))
def test_debug_option_composes(option):
    compose_config([f"debug={option}"])


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_composes_and_builds_its_model(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", f"paths.data_dir={tmp_path}"])
    OmegaConf.resolve(cfg.model)
    build_and_run_model(cfg)
    hydra.utils.instantiate(cfg.data)
