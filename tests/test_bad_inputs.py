"""Bad input fails fast, names the offending key, and leaves no run files behind.

One table of bad inputs runs twice: in-process through ``train()`` (fast, default suite) and
through the real CLI (``slow``: one subprocess each), where it must also exit non-zero with no
traceback on stderr. A few CLI cases run in the default suite too.
"""

from __future__ import annotations

import os
import time

import hydra
import pytest
import torch

from spikelight.train import train
from spikelight.validation import ConfigError, validate_checkpoint, validate_config
from tests.conftest import REPO_ROOT, compose_config, run_train_cli

QUICK = ["trainer.accelerator=cpu", "data.num_steps=20"]  # fit every data group
FAIL_WITHIN_S = 30

# (case id, overrides, text the error must contain: the offending key). "{tmp}" is a scratch
# directory holding the checkpoint files made by ``scratch`` below.
BAD_INPUTS = [
    ("tau_mem_negative", ["neuron.tau_mem=-0.01"], "neuron.tau_mem"),
    ("tau_syn_zero", ["neuron.tau_syn=0"], "neuron.tau_syn"),
    ("tau_mem_inf", ["neuron.tau_mem=inf"], "neuron.tau_mem"),
    ("tau_adapt_nan", ["neuron=alif", "neuron.tau_adapt=nan"], "neuron.tau_adapt"),
    ("tau_mem_string", ["neuron.tau_mem=fast"], "neuron.tau_mem"),
    ("bounds_reversed", ["neuron.tau_mem_bounds=[0.5,0.001]"], "neuron.tau_mem_bounds"),
    ("bounds_exclude_init", ["neuron.tau_mem_bounds=[0.02,0.5]"], "neuron.tau_mem_bounds"),
    ("dt_not_below_tau", ["neuron.dt=0.01"], "neuron.dt"),
    ("threshold_zero", ["neuron.threshold=0"], "neuron.threshold"),
    ("adapt_jump_negative", ["neuron=alif", "neuron.adapt_jump=-0.2"], "neuron.adapt_jump"),
    ("beta_negative", ["surrogate.beta=-1"], "surrogate.beta"),
    ("beta_zero_logistic", ["surrogate=logistic", "surrogate.beta=0"], "surrogate.beta"),
    ("trainable_tau_adapt_on_lif", ["trainable=[weights,tau_adapt]"], "tau_adapt"),
    ("trainable_tau_mem_on_if", ["neuron=if", "trainable=[weights,tau_mem]"], "tau_mem"),
    ("trainable_v_reset_needs_zero", ["trainable=[weights,v_reset]"], "neuron.reset"),
    ("hidden_empty", ["model.network.hidden=[]"], "model.network.hidden"),
    ("hidden_zero", ["model.network.hidden=[128,0]"], "model.network.hidden"),
    ("num_steps_zero", ["data.num_steps=0"], "data.num_steps"),
    ("batch_size_zero", ["data.batch_size=0"], "data.batch_size"),
    ("batch_size_uneven_ddp", ["trainer.devices=3", "data.batch_size=256"], "data.batch_size"),
    ("precision_unknown", ["trainer.precision=bf8-mixed"], "trainer.precision"),
    ("lr_zero", ["model.optimizer.lr=0"], "model.optimizer.lr"),
    ("lr_negative", ["model.optimizer.lr=-1e-3"], "model.optimizer.lr"),
    ("neuron_lr_negative", ["model.neuron_lr=-1"], "model.neuron_lr"),
    ("reset_unknown", ["neuron.reset=never"], "neuron.reset"),
    ("decoding_unknown", ["model.network.decoding=softmax"], "model.network.decoding"),
    ("time_loop_unknown", ["model.network.time_loop=python"], "model.network.time_loop"),
    ("readout_tau_negative", ["model.network.readout_tau_mem=-1"], "model.network.readout_tau_mem"),
    ("reg_l1_negative", ["model.reg_l1=-1"], "model.reg_l1"),
    ("delay_lr_zero", ["model.delay_lr=0"], "model.delay_lr"),
    (
        "delays_longer_than_a_sample",
        ["model.network.delays={max_delay:20,sigma_init:2.0,sigma_final:0.5}"],
        "model.network.delays.max_delay=20",
    ),
    (
        "delays_zero",
        ["model.network.delays={max_delay:0,sigma_init:2.0,sigma_final:0.5}"],
        "model.network.delays.max_delay=0",
    ),
    (
        "delays_sigma_grows",
        ["model.network.delays={max_delay:5,sigma_init:0.5,sigma_final:2.0}"],
        "model.network.delays.sigma_final=2.0",
    ),
    ("delays_trained_without_delays", ["trainable=[weights,delays]"], "trainable="),
    ("dropout_one", ["model.network.dropout=1.0"], "model.network.dropout"),
    ("dropout_negative", ["model.network.dropout=-0.1"], "model.network.dropout"),
    ("bias_not_bool", ["model.network.bias=maybe"], "model.network.bias"),
    (
        "bias_with_delays",
        [
            "model.network.bias=true",
            "model.network.delays={max_delay:5,sigma_init:2.0,sigma_final:0.5}",
        ],
        "model.network.bias",
    ),
    ("ignore_steps_negative", ["model.network.ignore_steps=-1"], "model.network.ignore_steps"),
    ("ignore_steps_all", ["model.network.ignore_steps=20"], "model.network.ignore_steps"),
    ("readout_tau_syn_zero", ["model.network.readout_tau_syn=0"], "model.network.readout_tau_syn"),
    ("surrogate_scale_zero", ["surrogate.scale=0"], "surrogate.scale"),
    (
        "surrogate_scale_smooth",
        ["surrogate.scale=0.4", "surrogate.smooth_forward=true"],
        "surrogate.scale",
    ),
    ("uniform_init_scale", ["weight_init=uniform", "weight_init.scale=0"], "weight_init.scale"),
    (
        "weight_init_recurrent_unknown",
        ["weight_init=uniform", "weight_init.recurrent=identity"],
        "weight_init.recurrent",
    ),
    (
        "mnist_dir_missing",
        ["data=mnist", "data.download=false", "data.data_dir={tmp}/absent"],
        "data.data_dir",
    ),
    (
        "shd_dir_missing",
        ["data=shd", "data.download=false", "data.data_dir={tmp}/absent"],
        "data.data_dir",
    ),
    (
        "shd_cache_dir_under_a_file",
        ["data=shd", "data.cache_dir={tmp}/corrupt.ckpt/cache"],
        "data.cache_dir",
    ),
    ("shd_verify_checksums_not_bool", ["data=shd", "data.verify_checksums=maybe"], "data.verify"),
    ("test_every_epoch_not_bool", ["data.test_every_epoch=maybe"], "data.test_every_epoch"),
    ("ckpt_missing", ["ckpt_path={tmp}/absent.ckpt"], "ckpt_path"),
    ("test_only_without_ckpt", ["train=false"], "ckpt_path"),
    ("nothing_to_do", ["train=false", "test=false"], "train"),
    ("ckpt_corrupt", ["ckpt_path={tmp}/corrupt.ckpt"], "ckpt_path"),
    ("ckpt_other_model", ["ckpt_path={tmp}/other.ckpt"], "mismatched"),
    ("ckpt_runs_code", ["ckpt_path={tmp}/unsafe.ckpt"], "weights_only"),
]
CASES = [pytest.param(overrides, key, id=name) for name, overrides, key in BAD_INPUTS]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """Checkpoints that are corrupt, of another architecture, or would run code on load."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    (tmp / "corrupt.ckpt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    torch.save(
        {
            "state_dict": {
                "network.layers.0.fc.parametrizations.weight.original": torch.zeros(7, 100)
            }
        },
        tmp / "other.ckpt",
    )
    torch.save({"state_dict": {}, "hook": os.system}, tmp / "unsafe.ckpt")  # a pickled callable
    return tmp


def _fill(overrides, tmp):
    return [o.replace("{tmp}", str(tmp)) for o in overrides]


def test_table_is_large_and_distinct():
    assert len(BAD_INPUTS) >= 25
    assert len({tuple(o) for _, o, _ in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize(("overrides", "key"), CASES)
def test_bad_input_fails_in_process_naming_the_key(overrides, key, scratch, tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_config([*QUICK, *_fill(overrides, scratch)], output_dir=run_dir)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as error:
        train(cfg)
    assert key in str(error.value)
    assert time.perf_counter() - start < FAIL_WITHIN_S
    assert not run_dir.exists()  # nothing written


def test_every_problem_is_reported_at_once():
    cfg = compose_config(["neuron.tau_mem=-1", "surrogate.beta=0", "data.batch_size=0"])
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert len(error.value.problems) == 3
    for key in ("neuron.tau_mem=-1", "surrogate.beta=0", "data.batch_size=0"):
        assert key in str(error.value)


EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize(
    "overrides",
    [[], ["neuron=alif", "trainable=[weights,tau_adapt]"], ["neuron=if", "trainable=[threshold]"]]
    + [[f"experiment={name}"] for name in EXPERIMENTS],
)
def test_shipped_configs_pass(overrides):
    validate_config(compose_config(overrides))


def test_checkpoint_mismatch_lists_missing_unexpected_and_shapes(tmp_path):

    from spikelight.module import SpikingClassifier  # noqa: F401  (built through hydra)

    model = hydra.utils.instantiate(compose_config(QUICK).model)
    state = dict(model.state_dict())
    first = next(iter(state))
    state[first] = torch.zeros(1)
    state.pop(list(state)[-1])
    state["network.extra"] = torch.zeros(2)
    torch.save({"state_dict": state}, tmp_path / "x.ckpt")
    with pytest.raises(ConfigError) as error:
        validate_checkpoint(tmp_path / "x.ckpt", model)
    message = str(error.value)
    assert "missing keys" in message and "unexpected keys [network.extra]" in message
    assert f"mismatched shapes [{first} (1,)" in message


def run_cli(args, timeout=120):
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = run_train_cli(*args, timeout=timeout, env=env)
    return result, time.perf_counter() - start


def _assert_clean_failure(result, elapsed, key):
    assert result.returncode != 0
    assert key in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert elapsed < FAIL_WITHIN_S


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "key"), CASES)
def test_bad_input_fails_through_cli(overrides, key, scratch, tmp_path):
    args = [*QUICK, *_fill(overrides, scratch), f"hydra.run.dir={tmp_path / 'run'}"]
    result, elapsed = run_cli(args)
    _assert_clean_failure(result, elapsed, key)
    assert result.returncode == 2
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["neuron.tau_mem=-0.01"], "neuron.tau_mem"),
        (["trainable=[weights,tau_adapt]"], "tau_adapt"),
    ],
    ids=["tau_mem_negative", "trainable_unknown"],
)
def test_cli_prints_one_message_and_exits_2(overrides, key, tmp_path):
    result, elapsed = run_cli([*QUICK, *overrides, f"hydra.run.dir={tmp_path}"])
    _assert_clean_failure(result, elapsed, key)
    assert result.returncode == 2
    assert result.stderr.lstrip().startswith("Error: invalid config:")


def test_cli_multirun_reports_each_failed_job(tmp_path):
    result, elapsed = run_cli(["-m", *QUICK, "surrogate.beta=-1,0", f"hydra.sweep.dir={tmp_path}"])
    _assert_clean_failure(result, elapsed, "surrogate.beta")
    assert "Error in job 0" in result.stderr and "Error in job 1" in result.stderr


@pytest.mark.slow
def test_hydra_full_error_shows_the_traceback(tmp_path):
    result = run_train_cli(
        *QUICK,
        "neuron.tau_mem=-1",
        f"hydra.run.dir={tmp_path}",
        timeout=120,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr
