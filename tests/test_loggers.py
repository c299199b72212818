"""The dashboard in every logger: one short run logs to TensorBoard, CSV, W&B (offline) and MLflow.

Independent truth: each metric is logged to several loggers, so W&B's history and MLflow's metric
history must equal the CSV file row by row; the images must be the pixels TensorBoard got; the
histograms must have TensorBoard's count, minimum and maximum; the hparams are written out by
hand. The W&B run is read from its offline transaction log (``run-<id>.wandb``, LevelDB-style
records of ``wandb.proto`` messages) by a reader written here; MLflow from its SQLite store and
its artifact files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spikelight.loggers import (
    HISTOGRAM_BINS,
    LoggerSink,
    TensorBoardSink,
    finishing_runs,
    histogram_counts,
    image_uint8,
    sink_for,
)
from spikelight.train import train
from spikelight.validation import ConfigError, validate_config
from tests.conftest import REPO_ROOT, compose_config

HIDDEN = 16
OVERRIDES = [
    "debug=limit",  # 2 epochs
    "trainer.accelerator=cpu",
    "data.samples_per_class=20",
    "data.num_steps=20",
    f"model.network.hidden=[{HIDDEN}]",
    "trainable=[weights,tau_mem]",
    "init=heterogeneous",
    "callbacks.spike_rasters.every_n_epochs=1",
    "callbacks.progress_bar.refresh_rate=0",
    "callbacks.activity_check.max_rate=0.001",  # every firing layer gets a warning (text)
    "seed=3",
    "logger=[tensorboard,csv,wandb,mlflow]",
]
#: flat_hparams of OVERRIDES, by hand
HPARAMS = {
    "neuron": "LIF",
    "surrogate": "SuperSpike",
    "beta": 10.0,
    "learn_beta": False,
    "trainable": "tau_mem+weights",
    "init": "Gamma",
    "hidden": str(HIDDEN),
    "recurrent": False,
    "decoding": "max_membrane",
    "lr": 5e-3,
    "seed": 3,
    "data": "RandmanDataModule",
}
METRICS = ["val/acc", "val/acc_best", "val/loss", "train/loss_epoch", "grad_norm/weights"]
METRICS += ["grad_norm/tau_mem", "val/rate/hidden0", "test/acc", "test/loss", "epoch"]
IMAGES = ["raster/input", "raster/hidden0", "readout/membrane", "surrogate/derivative"]
HISTOGRAMS = ["params/hidden0/tau_mem_ms", "params/hidden0/weight", "params/readout/weight"]


def offline_env(mp: pytest.MonkeyPatch, home: Path) -> None:
    """No network and no files outside ``home``: W&B and MLflow state and telemetry off."""
    for name in ("config", "cache", "data", "artifact"):
        mp.setenv(f"WANDB_{name.upper()}_DIR", str(home / f"wandb_{name}"))
    mp.setenv("WANDB_MODE", "offline")  # restored afterwards (WandbLogger sets it globally)
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Train once with all four loggers; return (run directory, final metrics)."""
    for module in ("wandb", "mlflow"):
        pytest.importorskip(module, reason=f"pip install 'spikelight[{module}]'")
    root = tmp_path_factory.mktemp("loggers")
    with pytest.MonkeyPatch.context() as mp:
        offline_env(mp, root)
        metrics = train(compose_config(OVERRIDES, output_dir=root / "run"))
    return root / "run", metrics


@pytest.fixture(scope="module")
def csv_rows(run):
    with open(run[0] / "csv" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tensorboard(run):
    events = EventAccumulator(
        str(run[0] / "tensorboard"),
        size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0},
    )
    events.Reload()
    return events


def csv_history(rows, key):
    """``[(step, value)]`` of ``key`` in the CSV log, in logging order."""
    return [(int(row["step"]), float(row[key])) for row in rows if row.get(key)]


def tensorboard_images(events, tag):
    """``{step: [H, W, 3] uint8}`` of TensorBoard's PNGs for ``tag``."""
    return {
        e.step: np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB"))
        for e in events.Images(tag)
    }


def tensorboard_text(events, tag="warnings/activity"):
    (entry,) = events.Tensors(f"{tag}/text_summary")
    return entry.tensor_proto.string_val[0].decode()


def test_the_run_warns_and_the_csv_log_has_every_metric(run, csv_rows, tensorboard):
    _, metrics = run
    for key in METRICS:
        assert csv_history(csv_rows, key), key
    assert csv_history(csv_rows, "val/acc_best")[-1][1] == metrics["val/acc_best"]
    assert "layer hidden0 is saturated" in tensorboard_text(tensorboard)


# --- W&B: the offline run's transaction log ------------------------------------------------------

BLOCK, HEADER, FULL, LAST = 32768, 7, 1, 4


def wandb_records(path: Path):
    """The ``Record`` messages of a ``.wandb`` file: a 7-byte file header (``:W&B``, magic,
    version), then 32 KiB blocks of chunks ``crc32 (4) | length (2, little-endian) | type (1) |
    data``; a record is one FULL chunk or FIRST, MIDDLE..., LAST; a block's tail shorter than a
    chunk header is zero padding."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        pending += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            yield wandb_internal_pb2.Record.FromString(pending)
            pending = b""


def _items(items) -> dict:
    """``{key: value}`` of a record's items; a nested key (a media object's fields) nests."""
    out: dict = {}
    for item in items:
        *parents, last = item.nested_key or [item.key]
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = json.loads(item.value_json)
    return out


@pytest.fixture(scope="module")
def wandb_run(run):
    """(run directory, history rows, final summary, config, exit code) of the offline run."""
    (run_dir,) = (run[0] / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("run-*.wandb")
    history, summary, config, exit_code = [], {}, {}, None
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(_items(record.history.item))
        elif kind == "summary":
            summary.update(_items(record.summary.update))
        elif kind == "config":
            config.update(_items(record.config.update))
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return run_dir, history, summary, config, exit_code


def wandb_history(rows, key):
    return [(row["trainer/global_step"], row[key]) for row in rows if key in row]


def test_wandb_history_and_summary_equal_the_csv_log(run, csv_rows, wandb_run):
    _, metrics = run
    _, history, summary, _, exit_code = wandb_run
    assert exit_code == 0  # finished when train() returned
    for key in METRICS:
        assert wandb_history(history, key) == csv_history(csv_rows, key), key
    assert summary["val/acc_best"] == metrics["val/acc_best"]
    assert summary["test/acc"] == metrics["test/acc"]


def test_wandb_config_is_the_hparams(wandb_run):
    config = wandb_run[3]
    assert {k: config[k] for k in HPARAMS} == HPARAMS


def test_wandb_images_are_tensorboards_pixels(wandb_run, tensorboard):
    run_dir, history, *_ = wandb_run
    for tag in IMAGES:
        logged = {row["trainer/global_step"]: row[tag] for row in history if tag in row}
        expected = tensorboard_images(tensorboard, tag)
        assert sorted(logged) == sorted(expected), tag
        for step, entry in logged.items():
            assert entry["_type"] == "image-file"
            pixels = np.asarray(Image.open(run_dir / "files" / entry["path"]).convert("RGB"))
            assert np.array_equal(pixels, expected[step]), (tag, step)


def test_wandb_histograms_count_what_tensorboard_counts(wandb_run, tensorboard):
    history = wandb_run[1]
    for tag in HISTOGRAMS:
        logged = {row["trainer/global_step"]: row[tag] for row in history if tag in row}
        expected = {e.step: e.histogram_value for e in tensorboard.Histograms(tag)}
        assert sorted(logged) == sorted(expected) and len(logged) == 3, tag  # start, 2 epochs
        for step, entry in logged.items():
            assert entry["_type"] == "histogram"
            assert len(entry["values"]) == HISTOGRAM_BINS and len(entry["bins"]) == 65
            assert sum(entry["values"]) == expected[step].num, (tag, step)
            assert entry["bins"][0] == pytest.approx(expected[step].min, rel=1e-12)
            assert entry["bins"][-1] == pytest.approx(expected[step].max, rel=1e-12)


def test_wandb_text_is_the_activity_warning(wandb_run, tensorboard):
    run_dir, history, *_ = wandb_run
    (entry,) = [row["warnings/activity"] for row in history if "warnings/activity" in row]
    table = json.loads((run_dir / "files" / entry["path"]).read_text())
    assert table["columns"] == ["text"]
    assert table["data"] == [[tensorboard_text(tensorboard)]]


# --- MLflow: the SQLite store and the artifact files --------------------------------------------


@pytest.fixture(scope="module")
def mlflow_run(run):
    """(MlflowClient, the run, its artifact directory)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run[0] / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "train"]
    (found,) = client.search_runs([experiment.experiment_id])
    artifacts = run[0] / "mlflow" / found.info.run_id / "artifacts"
    assert found.info.artifact_uri.endswith(f"{found.info.run_id}/artifacts")
    return client, found, artifacts


def test_mlflow_metrics_equal_the_csv_log(run, csv_rows, mlflow_run):
    _, metrics = run
    client, found, _ = mlflow_run
    assert found.info.status == "FINISHED"
    for key in METRICS:
        history = [(m.step, m.value) for m in client.get_metric_history(found.info.run_id, key)]
        history.sort(key=lambda point: point[0])  # MLflow orders by step; CSV is in step order
        assert history == csv_history(csv_rows, key), key
    assert found.data.metrics["val/acc_best"] == metrics["val/acc_best"]
    assert found.data.metrics["test/acc"] == metrics["test/acc"]


def test_mlflow_params_are_the_hparams(mlflow_run):
    params = mlflow_run[1].data.params
    assert params == {key: str(value) for key, value in HPARAMS.items()}


def test_mlflow_images_are_tensorboards_pixels(mlflow_run, tensorboard):
    artifacts = mlflow_run[2]
    for tag in IMAGES:
        # log_image(key=, step=) files: images/<key, "/" as "~">+step+<step>+timestamp+...png
        prefix = tag.replace("/", "~") + "+step+"
        files = sorted((artifacts / "images").glob(f"{prefix}*[0-9a-f].png"))
        logged = {int(f.name[len(prefix) :].split("+")[0]): f for f in files}
        expected = tensorboard_images(tensorboard, tag)
        assert sorted(logged) == sorted(expected) and len(files) == len(expected), tag
        for step, file in logged.items():
            pixels = np.asarray(Image.open(file).convert("RGB"))
            assert np.array_equal(pixels, expected[step]), (tag, step)


def test_mlflow_histograms_count_what_tensorboard_counts(mlflow_run, tensorboard):
    artifacts = mlflow_run[2]
    for tag in HISTOGRAMS:
        files = sorted((artifacts / tag).glob("step_*.json"))
        expected = {e.step: e.histogram_value for e in tensorboard.Histograms(tag)}
        records = [json.loads(f.read_text()) for f in files]
        assert sorted(r["step"] for r in records) == sorted(expected), tag
        for record in records:
            tb = expected[record["step"]]
            assert record["num"] == tb.num and sum(record["counts"]) == tb.num
            assert record["min"] == pytest.approx(tb.min, rel=1e-12)
            assert record["max"] == pytest.approx(tb.max, rel=1e-12)
            assert record["mean"] == pytest.approx(tb.sum / tb.num, rel=1e-9)
            assert math.sqrt(tb.sum_squares / tb.num - (tb.sum / tb.num) ** 2) == pytest.approx(
                record["std"], rel=1e-5, abs=1e-12
            )


def test_mlflow_text_is_the_activity_warning(mlflow_run, tensorboard):
    (file,) = (mlflow_run[2] / "warnings" / "activity").glob("step_*.txt")
    assert file.read_text() == tensorboard_text(tensorboard)


def test_csv_gets_the_hparams(run):
    import yaml

    assert yaml.safe_load((run[0] / "csv" / "hparams.yaml").read_text()) == HPARAMS


# --- the adapter's pieces -----------------------------------------------------------------------


def test_image_and_histogram_conversions_by_hand():
    image = torch.zeros(3, 2, 4)
    image[0, 1, 3] = 1.0  # red pixel at row 1, column 3
    image[2, 0, 0] = 0.5  # half blue at the top left: 127.5 rounds to 128
    pixels = image_uint8(image)
    assert pixels.shape == (2, 4, 3) and pixels.dtype == np.uint8
    assert pixels[1, 3].tolist() == [255, 0, 0] and pixels[0, 0].tolist() == [0, 0, 128]
    assert int(pixels.sum()) == 255 + 128
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        image_uint8(torch.zeros(2, 4))

    counts = histogram_counts(torch.tensor([0.0, 1.0, 1.0, 3.0]))
    assert counts["edges"][0] == 0.0 and counts["edges"][-1] == 3.0
    assert len(counts["counts"]) == HISTOGRAM_BINS
    # bin width 3/64: 0 in bin 0, 1 in bin floor(64/3) = 21, 3 in the last (closed) bin
    assert {i: c for i, c in enumerate(counts["counts"]) if c} == {0: 1, 21: 2, 63: 1}
    assert (counts["num"], counts["mean"]) == (4, 1.25)
    assert counts["std"] == pytest.approx(math.sqrt((1.25**2 + 2 * 0.25**2 + 1.75**2) / 4))


def test_each_logger_kind_gets_its_sink(tmp_path):
    tensorboard = sink_for(TensorBoardLogger(tmp_path, name="tb"))
    csv_sink = sink_for(CSVLogger(tmp_path, name="csv"))
    assert isinstance(tensorboard, TensorBoardSink) and tensorboard.takes_media
    assert type(csv_sink) is LoggerSink and not csv_sink.takes_media


def test_a_failed_run_finishes_its_wandb_run_with_exit_code_1(tmp_path):
    wandb = pytest.importorskip("wandb", reason="pip install 'spikelight[wandb]'")
    from lightning.pytorch.loggers import WandbLogger

    with pytest.MonkeyPatch.context() as mp:
        offline_env(mp, tmp_path)
        logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="spikelight")
        logger.log_metrics({"val/acc": 0.5}, step=0)
        with pytest.raises(RuntimeError, match="boom"), finishing_runs([logger]):
            raise RuntimeError("boom")
        assert wandb.run is None
    (log,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    exits = [r.exit.exit_code for r in wandb_records(log) if r.WhichOneof("record_type") == "exit"]
    assert exits == [1]


# --- a missing optional package fails up front ---------------------------------------------------


@pytest.mark.parametrize(("logger", "module"), [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_logger_package_names_its_extra(logger, module, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # find_spec -> None, import fails
    cfg = compose_config([f"logger=[tensorboard,{logger}]"], output_dir=tmp_path / "run")
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert str(error.value) == (
        f"invalid config: logger={logger}: {cfg.logger[logger]._target_.rsplit('.', 1)[-1]} "
        f"needs the {module} package, which is not installed: pip install 'spikelight[{logger}]'"
    )
    with pytest.raises(ConfigError, match=rf"spikelight\[{logger}\]"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # nothing built, no data read, nothing written


def test_cli_without_wandb_fails_in_one_line(tmp_path):
    code = (
        "import runpy, sys; sys.modules['wandb'] = None; "
        f"sys.argv = ['train.py', 'logger=[wandb]', 'hydra.run.dir={tmp_path / 'run'}']; "
        "runpy.run_path('train.py', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: invalid config: logger=wandb: WandbLogger needs the wandb package, which is not "
        "installed: pip install 'spikelight[wandb]'"
    ]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_the_readme_logger_commands_compose(tmp_path):
    """Every ``python train.py`` line of README's Loggers section composes; the shared-store
    sweep resolves to one store under ``paths.log_dir``."""
    section = (REPO_ROOT / "README.md").read_text().split("## Loggers", 1)[1].split("\n## ", 1)[0]
    commands = [
        shlex.split(line, comments=True)[2:]
        for line in section.splitlines()
        if line.startswith("python train.py")
    ]
    assert len(commands) == 5, commands
    for args in commands:  # the sweep as one of its jobs
        overrides = [a for a in args if a not in ("-m", "seed=0,1")]
        assert compose_config(overrides).logger, args
    mlflow_cfg = compose_config([*overrides, f"paths.root_dir={tmp_path}"]).logger.mlflow
    assert mlflow_cfg.tracking_uri == f"sqlite:///{tmp_path}/outputs/mlflow.db"
    assert mlflow_cfg.artifact_location == f"{tmp_path}/outputs/mlflow"
