"""The early warning about saturated or silent layers, on real short runs."""

from __future__ import annotations

import logging

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spikelight.callbacks import ActivityCheck
from spikelight.module import layer_activity
from spikelight.train import train
from tests.conftest import compose_config

QUICK = [
    "debug=limit",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "data.samples_per_class=20",
    "data.num_steps=40",
    "model.network.hidden=[32]",
    "callbacks.progress_bar.refresh_rate=0",
]


def test_layer_activity_is_the_hand_count():
    z = torch.zeros(10, 2, 4)  # T=10 steps of 2 ms, 2 samples, 4 neurons
    z[0, 0, 0] = z[3, 1, 0] = z[9, 1, 0] = 1  # neuron 0: 3 spikes
    z[5, 0, 2] = 1  # neuron 2: 1 spike; neurons 1 and 3 silent
    rate, silent = layer_activity(z, dt=2e-3)
    # 4 spikes / (4 neurons * 2 samples * 10 steps * 2 ms) = 25 spikes per neuron per second
    assert rate.item() == pytest.approx(25.0)
    assert silent.item() == pytest.approx(0.5)


def run(tmp_path, *overrides):
    cfg = compose_config([*QUICK, *overrides], output_dir=tmp_path / "run")
    train(cfg)
    return tmp_path / "run"


@pytest.mark.parametrize(
    "overrides, state, keys",
    [
        (["weight_init=scaled", "weight_init.scale=200"], "saturated", "weight_init.scale"),
        (["weight_init.xi=30"], "silent", "lower weight_init.xi"),
        (["weight_init=uniform", "weight_init.scale=0.01"], "silent", "raise weight_init.scale"),
    ],
)
def test_a_saturated_or_silent_layer_is_named_in_the_log_and_dashboard(
    tmp_path, caplog, overrides, state, keys
):
    with caplog.at_level(logging.WARNING, logger="spikelight.callbacks"):
        run_dir = run(tmp_path, *overrides)
    messages = [r.getMessage() for r in caplog.records if "first validation" in r.getMessage()]
    assert len(messages) == 1
    assert f"layer hidden0 is {state}" in messages[0] and keys in messages[0]
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("warnings/activity/text_summary")
    assert f"hidden0 is {state}" in text.tensor_proto.string_val[0].decode()


def test_a_healthy_layer_gets_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="spikelight.callbacks"):
        run(tmp_path)
    assert not [r for r in caplog.records if "first validation" in r.getMessage()]


@pytest.mark.parametrize("kwargs", [{"max_rate": 0}, {"max_silent": 1.5}, {"max_silent": 0}])
def test_bad_limits_name_the_key(kwargs):
    with pytest.raises(ValueError, match=f"callbacks.activity_check.{next(iter(kwargs))}"):
        ActivityCheck(**kwargs)
