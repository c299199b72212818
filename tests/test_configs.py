"""Every option of every config group composes and instantiates; so does every experiment."""

import hydra
import pytest
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf

from spikelight.module import SpikingClassifier
from spikelight.train import train
from tests.conftest import REPO_ROOT, compose_config, flat

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
    assert set(options("neuron")) == {"if", "lif", "alif", "adlif", "rf"}
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
    neuron = {"tau_adapt": "alif", "adapt_a": "adlif", "adapt_b": "adlif", "frequency": "rf"}
    neuron = neuron.get(option, "lif")
    reset = "zero" if option == "v_reset" else "subtract"  # v_reset acts only on reset to it
    overrides = [f"trainable=[{option}]", f"neuron={neuron}", f"neuron.reset={reset}"]
    if option == "delays":  # delays to train need the network to have them
        overrides.append("model.network.delays={max_delay:3,sigma_init:1.0,sigma_final:0.5}")
    cfg = compose_config(overrides)
    assert OmegaConf.to_container(cfg.trainable) == {option: True}
    model = build_and_run_model(cfg)
    kinds = set(model.network.parameter_groups())
    assert kinds == ({"weights"} if option in ("weights", "readout") else {option})


def test_trainable_is_multi_select():
    cfg = compose_config(["trainable=[weights,tau_mem,tau_syn,threshold]"])
    model = build_and_run_model(cfg)
    assert set(model.network.parameter_groups()) == {"weights", "tau_mem", "tau_syn", "threshold"}


def preset_values(group, option):
    """An option's own yaml, merged over the options its ``defaults`` list names."""
    raw = OmegaConf.load(CONF / group / f"{option}.yaml")
    bases = [preset_values(group, base) for base in raw.pop("defaults", [])]
    return OmegaConf.to_container(OmegaConf.merge(*bases, raw))


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_preset_composes_to_its_own_values_and_instantiates(option, tmp_path):
    cfg = compose_config([f"trainer={option}"], output_dir=tmp_path)
    expected = preset_values("trainer", option)
    assert OmegaConf.to_container(cfg.trainer) == expected
    devices = {"gpu": ("gpu", 1), "cpu": ("cpu", 1), "ddp": ("auto", 2), "default": ("auto", 1)}
    assert (cfg.trainer.accelerator, cfg.trainer.devices) == devices[option]
    needs_gpu = cfg.trainer.accelerator == "gpu"
    if needs_gpu and not torch.cuda.is_available():  # the preset as composed asks for a GPU
        with pytest.raises(InstantiationException, match="No supported gpu backend"):
            hydra.utils.instantiate(cfg.trainer, logger=False)
        return
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    assert trainer.max_epochs == expected["max_epochs"]
    assert trainer.num_devices == cfg.trainer.devices
    if needs_gpu:
        assert isinstance(trainer.accelerator, CUDAAccelerator)
    if option == "ddp":
        assert isinstance(trainer.strategy, DDPStrategy)


@pytest.mark.parametrize("group", ["logger", "callbacks"])
def test_run_groups_instantiate(group, tmp_path):
    for option in options(group):
        override = f"{group}=[{option}]" if group == "logger" else f"{group}={option}"
        cfg = compose_config([override], output_dir=tmp_path)
        for entry in (cfg[group] or {}).values():
            hydra.utils.instantiate(entry)


@pytest.mark.parametrize("option", options("debug"))
def test_debug_option_sets_its_values_over_an_experiment(option):
    """Every value of the debug yaml is in the composed config, even where an experiment
    (experiment=shd: trainer.max_epochs=200) sets the same key: debug comes last."""
    own = flat(OmegaConf.to_container(OmegaConf.load(CONF / "debug" / f"{option}.yaml")))
    assert own
    for experiment in ([], ["experiment=shd"]):
        cfg = compose_config([*experiment, f"debug={option}"])
        composed = {key: OmegaConf.select(cfg, key) for key in own}
        assert composed == own, experiment
    assert compose_config(["experiment=shd"]).trainer.max_epochs == 200


def test_debug_overfit_trains_on_the_same_few_batches_and_the_loss_falls(tmp_path, monkeypatch):
    """debug=overfit, shortened to 6 epochs: every epoch sees the same 3 batches, in the same
    order (no shuffling), and their mean training loss falls every epoch (by a fifth in all)."""
    seen = []
    step = SpikingClassifier.training_step

    def recording_step(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        seen.append((self.current_epoch, hash(batch[0].numpy().tobytes()), loss.item()))
        return loss

    monkeypatch.setattr(SpikingClassifier, "training_step", recording_step)
    cfg = compose_config(
        [
            "debug=overfit",
            "trainer.max_epochs=6",
            "trainer.accelerator=cpu",
            "data.samples_per_class=20",
            "data.num_steps=20",
            "data.batch_size=16",
            "model.network.hidden=[32]",
            "model.optimizer.lr=1e-2",
            "callbacks=none",
            "logger=[]",
            "test=false",
        ],
        output_dir=tmp_path / "run",
    )
    assert cfg.trainer.overfit_batches == 3
    train(cfg)
    epochs = [[s for s in seen if s[0] == e] for e in range(6)]
    assert [len(e) for e in epochs] == [3] * 6
    first = [batch for _, batch, _ in epochs[0]]
    assert len(set(first)) == 3  # three different batches ...
    for epoch in epochs[1:]:
        assert [batch for _, batch, _ in epoch] == first  # ... the same ones every epoch
    mean_loss = [sum(loss for *_, loss in e) / 3 for e in epochs]
    assert all(b < a for a, b in zip(mean_loss, mean_loss[1:], strict=False)), mean_loss
    assert mean_loss[-1] < 0.8 * mean_loss[0], mean_loss


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_composes_and_builds_its_model(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", f"paths.data_dir={tmp_path}"])
    OmegaConf.resolve(cfg.model)
    build_and_run_model(cfg)
    hydra.utils.instantiate(cfg.data)
