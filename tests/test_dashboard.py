"""The TensorBoard dashboard of a real (short) run: scalars, histograms, images, HParams.

One training run (module fixture) is read back with TensorBoard's own event reader, and served by
a real ``tensorboard`` process whose HTTP data API must return the run's scalars.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import hydra
import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.data import DataLoader, TensorDataset

from spikelight.callbacks import GradNormMonitor
from spikelight.images import line_plot, spike_raster
from spikelight.train import train
from tests.conftest import compose_config

HIDDEN = [24, 16]
TAU_MEM_BOUNDS_MS = (2.0, 100.0)
TAU_SYN_BOUNDS_MS = (1.5, 50.0)
OVERRIDES = [
    "debug=limit",
    "trainer.accelerator=cpu",
    "data.samples_per_class=20",
    "data.num_steps=20",
    f"model.network.hidden=[{HIDDEN[0]},{HIDDEN[1]}]",
    "trainable=[weights,tau_mem,tau_syn]",
    "init=heterogeneous",
    "neuron.tau_mem_bounds=[2.0e-3,0.1]",
    "neuron.tau_syn_bounds=[1.5e-3,0.05]",
    "callbacks.spike_rasters.every_n_epochs=1",
    "callbacks.progress_bar.refresh_rate=0",
    "seed=3",
]
LAYERS = ["hidden0", "hidden1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Train once; return (run directory, final metrics, loaded EventAccumulator)."""
    run_dir = tmp_path_factory.mktemp("dashboard") / "run"
    metrics = train(compose_config(OVERRIDES, output_dir=run_dir))
    events = EventAccumulator(
        str(run_dir / "tensorboard"),
        size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0},
    )
    events.Reload()
    return run_dir, metrics, events


def _last(events, tag):
    return events.Scalars(tag)[-1].value


def test_scalars_rates_silent_fractions_grad_norms_and_learning_rates(run):
    _, metrics, events = run
    tags = set(events.Tags()["scalars"])
    expected = {"train/loss_epoch", "train/acc", "val/loss", "val/acc"}
    expected |= {"val/acc_best", "test/acc", "test/loss", "epoch"}
    expected |= {"lr-Adam/weights", "lr-Adam/tau_mem", "lr-Adam/tau_syn"}
    expected |= {f"grad_norm/{g}" for g in ("weights", "tau_mem", "tau_syn")}
    for stage in ("train", "val", "test"):
        expected |= {f"{stage}/{kind}/{layer}" for kind in ("rate", "silent") for layer in LAYERS}
    assert expected <= tags, sorted(expected - tags)

    for stage in ("train", "val", "test"):
        for layer in LAYERS:
            rates = [e.value for e in events.Scalars(f"{stage}/rate/{layer}")]
            silent = [e.value for e in events.Scalars(f"{stage}/silent/{layer}")]
            assert all(0 <= r <= 1000 for r in rates), rates  # dt = 1 ms: at most 1000 Hz
            assert all(0 <= s <= 1 for s in silent), silent
    # a layer with a positive rate cannot be entirely silent
    rate = _last(events, "val/rate/hidden0")
    assert rate > 0 and _last(events, "val/silent/hidden0") < 1
    for group in ("weights", "tau_mem", "tau_syn"):
        norms = [e.value for e in events.Scalars(f"grad_norm/{group}")]
        assert len(norms) == 2  # one mean per epoch (debug=limit: 2 epochs)
        assert all(math.isfinite(n) and n > 0 for n in norms), (group, norms)
    assert math.isclose(_last(events, "val/acc_best"), metrics["val/acc_best"], rel_tol=1e-6)
    assert math.isclose(_last(events, "lr-Adam/weights"), 5e-3, rel_tol=1e-6)  # model.optimizer.lr


def test_histograms_of_neuron_parameters_stay_in_bounds_in_ms(run):
    _, _, events = run
    tags = set(events.Tags()["histograms"])
    expected = {"params/readout/weight"}
    for layer in LAYERS:
        expected |= {f"params/{layer}/{n}" for n in ("tau_mem_ms", "tau_syn_ms", "weight")}
        expected |= {f"params/{layer}/{n}" for n in ("threshold", "v_leak", "v_reset")}
    assert expected <= tags, sorted(expected - tags)

    for name, (lo, hi) in (("tau_mem_ms", TAU_MEM_BOUNDS_MS), ("tau_syn_ms", TAU_SYN_BOUNDS_MS)):
        for layer, size in zip(LAYERS, HIDDEN, strict=True):
            hists = events.Histograms(f"params/{layer}/{name}")
            assert len(hists) == 3  # before training, after each of the 2 epochs
            for h in hists:
                v = h.histogram_value
                assert v.num == size
                assert lo - 1e-6 <= v.min <= v.max <= hi + 1e-6, (name, v.min, v.max)
                assert v.max > v.min  # heterogeneous initialisation: a real spread
            assert [h.step for h in hists][0] == 0
    threshold = events.Histograms("params/hidden0/threshold")[-1].histogram_value
    assert math.isclose(threshold.min, 1.0, rel_tol=1e-5)  # not trained: stays at 1
    assert math.isclose(threshold.max, 1.0, rel_tol=1e-5)


def test_images_rasters_readout_and_surrogate(run):
    _, _, events = run
    tags = set(events.Tags()["images"])
    expected = {"raster/input", "raster/hidden0", "raster/hidden1"}
    expected |= {"readout/membrane", "surrogate/derivative"}
    assert expected <= tags, sorted(expected - tags)
    assert len(events.Images("raster/hidden0")) == 2  # every epoch here (every_n_epochs=1)
    assert len(events.Images("surrogate/derivative")) == 1
    # raster geometry: time (20 steps) on x, neurons on y, pixel-repeated to >= 128 x 400
    for tag, neurons in (("raster/input", 100), ("raster/hidden0", 24), ("raster/hidden1", 16)):
        image = events.Images(tag)[-1]
        assert image.width == 20 * (400 // 20), tag
        assert image.height == neurons * max(1, 128 // neurons), tag
    assert events.Images("readout/membrane")[-1].height == 160


def test_hparams_summary_lists_choices_and_final_metrics(run):
    run_dir, _, events = run
    content = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in content
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    hparams = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    assert hparams["neuron"] == "LIF"
    assert hparams["surrogate"] == "SuperSpike"
    assert hparams["beta"] == 10.0
    assert hparams["trainable"] == "tau_mem+tau_syn+weights"
    assert hparams["init"] == "Gamma"
    assert hparams["hidden"] == "24-16"
    assert hparams["seed"] == 3.0
    assert hparams["data"] == "RandmanDataModule"
    assert hparams["decoding"] == "max_membrane"
    assert math.isclose(hparams["lr"], 5e-3)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"val/acc_best", "test/acc"}
    assert (run_dir / "tensorboard" / "hparams.yaml").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def tensorboard_server(run):
    """A real ``tensorboard`` serving the run on loopback; always stopped afterwards."""
    run_dir = run[0]
    port = _free_port()
    exe = shutil.which("tensorboard")
    cmd = [exe] if exe else [sys.executable, "-m", "tensorboard.main"]
    cmd += ["--logdir", str(run_dir), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--reload_interval", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"tensorboard exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                tags = _get_json(f"{base}/data/plugin/scalars/tags")
                if tags.get("tensorboard", {}).get("val/acc"):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("tensorboard did not serve the run's scalars within 60 s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_tensorboard_serves_the_runs_scalars(run, tensorboard_server):
    _, metrics, events = run
    base = tensorboard_server
    tags = _get_json(f"{base}/data/plugin/scalars/tags")["tensorboard"]
    assert {"val/acc", "val/acc_best", "grad_norm/tau_mem", "val/silent/hidden1"} <= set(tags)
    query = urllib.parse.urlencode({"run": "tensorboard", "tag": "val/acc_best"})
    points = _get_json(f"{base}/data/plugin/scalars/scalars?{query}")
    # [[wall_time, step, value], ...]: one per epoch, the last one is the run's final metric
    assert len(points) == 2
    assert math.isclose(points[-1][2], metrics["val/acc_best"], rel_tol=1e-6)
    steps = [e.step for e in events.Scalars("val/acc_best")]
    assert [p[1] for p in points] == steps


def test_images_render_rasters_and_lines_exactly():
    z = torch.zeros(4, 3)
    z[1, 2] = 1.0
    image = spike_raster(z, min_size=(3, 4))  # no upscaling: [3, N=3, T=4]
    assert image.shape == (3, 3, 4)
    assert image[:, 2, 1].tolist() == [1.0, 1.0, 1.0]  # neuron 2 spiked at t=1
    assert image.sum() == 3.0
    plot = line_plot(torch.tensor([[0.0], [1.0]]), height=11, min_width=2)
    assert plot.shape == (3, 11, 2)
    assert (plot[:, :, 0] != 1).any(dim=0).nonzero().flatten().tolist()[-1] == 10  # low on left
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        spike_raster(torch.zeros(2, 3, 4))


def test_alif_recurrent_spiking_readout_run_logs_its_own_parameters(tmp_path):
    overrides = [
        *OVERRIDES[:4],
        "model.network.hidden=[12]",
        "neuron=alif",
        "model.network.recurrent=true",
        "model.network.decoding=spike_count",
        "trainable=[weights,tau_adapt]",
        "surrogate.learn_beta=true",
        "trainer.max_epochs=1",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    train(compose_config(overrides, output_dir=tmp_path / "run"))
    events = EventAccumulator(
        str(tmp_path / "run" / "tensorboard"),
        size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0},
    )
    events.Reload()
    tags = events.Tags()
    assert {"grad_norm/weights", "grad_norm/tau_adapt", "grad_norm/surrogate_beta"} <= set(
        tags["scalars"]
    )
    assert {"val/silent/readout", "val/rate/readout"} <= set(tags["scalars"])
    expected = {"params/hidden0/tau_adapt_ms", "params/hidden0/rec_weight"}
    expected |= {"params/readout/tau_adapt_ms", "params/readout/weight"}
    assert expected <= set(tags["histograms"]), sorted(expected - set(tags["histograms"]))
    assert {"raster/hidden0", "raster/readout"} <= set(tags["images"])
    assert "readout/membrane" not in tags["images"]  # the spiking readout has its raster
    assert all(e.value > 0 for e in events.Scalars("grad_norm/tau_adapt"))


class OneBatch(L.LightningDataModule):
    """The same fixed batch ``(x [B, T, C], y)`` for training and validation."""

    def __init__(self, x, y):
        super().__init__()
        self.data = TensorDataset(x, y)

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=len(self.data))

    val_dataloader = train_dataloader


def hand_count(spikes, dt):
    """Spikes per neuron per second and the fraction of neurons that never spiked, counted
    neuron by neuron over all samples and time steps of ``spikes [T, B, N]``."""
    steps, samples, neurons = spikes.shape
    per_neuron = [int(spikes[:, :, n].sum().item()) for n in range(neurons)]
    rate = sum(per_neuron) / (neurons * samples * steps * dt)
    silent = sum(count == 0 for count in per_neuron) / neurons
    return rate, silent


def test_logged_rates_silent_fractions_and_grad_norms_match_a_hand_count(tmp_path):
    """One training step and one validation pass on one batch: the dashboard's scalars equal
    the spikes counted by hand (before the step for train/, after it for val/) and the norm
    of the gradient of the loss on that batch."""
    cfg = compose_config(
        [
            "data.num_steps=20",
            "data.num_inputs=30",
            f"model.network.hidden=[{HIDDEN[0]},{HIDDEN[1]}]",
            "weight_init=scaled",
            "weight_init.scale=3.0",
            "trainable=[weights,tau_mem]",
            "init=heterogeneous",
        ]
    )
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model)
    before = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(8, 20, 30, generator=g) < 0.1).float()
    y = torch.randint(0, cfg.data.num_classes, (8,), generator=g)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[GradNormMonitor()],
        logger=TensorBoardLogger(tmp_path, name="tb", version=""),
    )
    trainer.fit(model, datamodule=OneBatch(x, y))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()

    dt = cfg.neuron.dt
    counted = {"train": before.network(x.transpose(0, 1)), "val": model.network(x.transpose(0, 1))}
    counts = []
    for stage, out in counted.items():
        for layer in LAYERS:
            rate, silent = hand_count(out.spikes[layer], dt)
            counts.append((stage, layer, rate, silent))
            assert [e.value for e in events.Scalars(f"{stage}/rate/{layer}")] == [
                pytest.approx(rate, rel=1e-6)
            ], (stage, layer)
            assert [e.value for e in events.Scalars(f"{stage}/silent/{layer}")] == [
                pytest.approx(silent, abs=1e-7)
            ], (stage, layer)
    assert all(rate > 0 for *_, rate, _ in counts), counts
    assert any(0 < silent < 1 for *_, silent in counts), counts  # some neurons silent, not all

    loss = torch.nn.functional.cross_entropy(counted["train"].logits, y)
    loss.backward()
    for group, params in before.network.parameter_groups().items():
        norm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params))
        assert norm > 0, group
        logged = [e.value for e in events.Scalars(f"grad_norm/{group}")]
        assert logged == [pytest.approx(norm, rel=1e-5)], group
