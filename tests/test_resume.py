"""An interrupted run resumed with ckpt_path=last ends exactly where an uninterrupted one does."""

from __future__ import annotations

import pytest
import torch

from spikelight.train import train
from spikelight.validation import ConfigError
from tests.conftest import compose_config

QUICK = [
    "debug=limit",  # 3 training batches an epoch
    "trainer.accelerator=cpu",
    "data.samples_per_class=20",
    "data.num_steps=20",
    "data.batch_size=16",
    "logger=csv",
    "callbacks.progress_bar.refresh_rate=0",
    "data.test_every_epoch=true",  # so the best-epoch test accuracy is resumed too
]
EPOCHS = 4
# metrics of the last epochs (the test metrics come from the best checkpoint, so they only show
# a difference if it came after the interruption; the final weights always do)
AFTER_RESUME = ("train/loss_epoch", "train/acc", "val/loss", "val/acc")


def last_checkpoint(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 4-epoch run, and one stopped after 2 epochs then resumed to 4."""
    whole_dir = tmp_path_factory.mktemp("whole")
    whole = train(compose_config([*QUICK, f"trainer.max_epochs={EPOCHS}"], output_dir=whole_dir))
    split_dir = tmp_path_factory.mktemp("split")
    first = compose_config([*QUICK, "trainer.max_epochs=2", "test=false"], output_dir=split_dir)
    train(first)
    assert last_checkpoint(split_dir)["global_step"] == 6
    again = compose_config(
        [*QUICK, f"trainer.max_epochs={EPOCHS}", "ckpt_path=last"], output_dir=split_dir
    )
    resumed = train(again)
    return whole, whole_dir, resumed, split_dir


def test_resumed_run_ends_with_the_same_weights_and_metrics(runs):
    whole, whole_dir, resumed, split_dir = runs
    a, b = last_checkpoint(whole_dir), last_checkpoint(split_dir)
    assert a["global_step"] == b["global_step"] == 3 * EPOCHS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    for name in (*AFTER_RESUME, "test/acc"):
        assert resumed[name] == whole[name], name


def test_resumed_run_keeps_the_best_validation_accuracy(runs):
    whole, _, resumed, _ = runs
    assert resumed["val/acc_best"] == whole["val/acc_best"]
    assert resumed["test_epoch/acc_best"] == whole["test_epoch/acc_best"]


def test_ckpt_path_last_without_a_checkpoint_starts_afresh(tmp_path):
    cfg = compose_config([*QUICK, "trainer.max_epochs=1", "test=false", "ckpt_path=last"])
    cfg.paths.output_dir = str(tmp_path / "new")
    train(cfg)
    assert last_checkpoint(tmp_path / "new")["global_step"] == 3


def test_ckpt_path_last_to_evaluate_needs_the_checkpoint(tmp_path):
    cfg = compose_config([*QUICK, "train=false", "ckpt_path=last"], output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="ckpt_path='.*last.ckpt': expected an existing"):
        train(cfg)
