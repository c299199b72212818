"""Model selection on validation; each epoch's test accuracy as a separate, labelled figure.

``data.test_every_epoch`` evaluates the test split after every epoch (``test_epoch/acc``) so the
"best epoch on test" that papers report can be set beside the validation-selected ``test/acc``;
selection must stay on ``val/acc``.
"""

from __future__ import annotations

import csv

import hydra
import pytest
import torch

from spikelight.train import train
from tests.conftest import compose_config

EPOCHS = 3
QUICK = [
    "debug=limit",  # 3 training batches, 2 validation and 2 test batches
    "trainer.accelerator=cpu",
    f"trainer.max_epochs={EPOCHS}",
    "data.samples_per_class=20",
    "data.num_steps=20",
    "data.batch_size=16",
    "data.test_every_epoch=true",
    "logger=csv",
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("protocol")
    cfg = compose_config(QUICK, output_dir=out)
    return cfg, train(cfg), out


def epoch_rows(out) -> list[dict[str, str]]:
    with open(out / "csv" / "metrics.csv") as f:
        return [row for row in csv.DictReader(f) if row.get("test_epoch/acc")]


def test_each_epoch_logs_test_accuracy_under_its_own_name(run):
    _, metrics, out = run
    rows = epoch_rows(out)
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    per_epoch = [float(r["test_epoch/acc"]) for r in rows]
    assert metrics["test_epoch/acc_best"] == pytest.approx(max(per_epoch))
    # validation keeps its names (no dataloader suffix), so selection still monitors val/acc
    assert "val/acc" in metrics and not any("dataloader_idx" in k for k in metrics)


def test_last_epochs_test_accuracy_is_the_final_weights_on_the_test_batches(run):
    cfg, _, out = run
    model = hydra.utils.instantiate(cfg.model)
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])
    model.eval()
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup()
    correct = total = 0
    with torch.no_grad():
        for index, (x, y) in enumerate(datamodule.test_dataloader()):
            if index == cfg.trainer.limit_val_batches:
                break
            x = datamodule.encode(x, train=False)
            correct += int((model(x).argmax(-1) == y).sum())
            total += len(y)
    last = float(epoch_rows(out)[-1]["test_epoch/acc"])
    assert last == pytest.approx(correct / total)


def test_the_selected_checkpoint_is_the_best_validation_epoch(run):
    _, metrics, out = run
    (best,) = [p for p in (out / "checkpoints").glob("epoch*.ckpt")]
    with open(out / "csv" / "metrics.csv") as f:
        val = [float(r["val/acc"]) for r in csv.DictReader(f) if r.get("val/acc")]
    epoch = int(best.name.removeprefix("epoch")[:3])
    assert val[epoch] == max(val) == pytest.approx(metrics["val/acc_best"])
