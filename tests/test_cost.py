"""Cost metrics: neuron and synapse counts, synaptic operations and the energy estimate, against
hand counts (a tiny network whose spikes are worked out by hand; spikes x fan-out counted spike by
spike from a random network's recorded spikes), in the logged metrics and in metrics.json."""

from __future__ import annotations

import functools
import json
import logging

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from spikelight.cost import (
    E_AC_PJ,
    E_MAC_PJ,
    ann_energy_nj,
    ann_macs,
    is_analog,
    layer_sizes,
    snn_energy_nj,
    synops,
)
from spikelight.module import SpikingClassifier
from spikelight.network import SpikingNetwork
from spikelight.neurons import IF, LIF, native
from spikelight.surrogates import SuperSpike
from spikelight.train import train
from spikelight.weight_init import ScaledNormal, set_weight
from tests.conftest import compose_config


def tiny_network(recurrent: bool) -> SpikingNetwork:
    """2 inputs -> 2 IF neurons (threshold 1, subtractive reset) -> 3 readout units. In float64
    (the threshold read through its constraint is then exactly 1; in float32 it is 1 - 6e-8,
    which the hand-worked spikes below do not allow for)."""
    net = SpikingNetwork(
        num_inputs=2,
        num_classes=3,
        hidden=[2],
        neuron=functools.partial(IF, threshold=1.0, reset="subtract"),
        surrogate=SuperSpike(10.0),
        recurrent=recurrent,
        time_loop="autograd",
        weight_init=ScaledNormal(1.0),
    )
    set_weight(net.layers[0].fc, torch.tensor([[1.5, 0.0], [0.6, 0.6]]))
    if recurrent:  # the recurrent synapses exist (and count) but carry nothing
        set_weight(net.layers[0].rec, torch.zeros(2, 2))
    return net


def tiny_input(value: float = 1.0) -> torch.Tensor:
    """[T=4, B=2, C=2]: sample 0 has input 0 at steps 0 and 1 and input 1 at step 2; sample 1
    is silent."""
    x = torch.zeros(4, 2, 2)
    x[0, 0, 0] = x[1, 0, 0] = x[2, 0, 1] = value
    return x


@pytest.mark.parametrize("recurrent", [False, True], ids=["feedforward", "recurrent"])
def test_tiny_network_with_known_spikes(recurrent, float64):
    net = tiny_network(recurrent)
    x = tiny_input()
    out = net(x)
    # neuron 0 (weight 1.5 from input 0): v = 1.5 -> spike, 0.5; 2.0 -> spike, 1.0; 1.0; 1.0
    # neuron 1 (0.6 from each input): v = 0.6; 1.2 -> spike, 0.2; 0.8; 0.8
    expected = torch.zeros(4, 2, 2)
    expected[0, 0, 0] = expected[1, 0, 0] = expected[1, 0, 1] = 1
    assert torch.equal(out.spikes["hidden0"], expected)

    sizes = {s.name: (s.neurons, s.synapses, s.recurrent_synapses) for s in layer_sizes(net)}
    assert sizes == {
        "hidden0": (2, 8 if recurrent else 4, 4 if recurrent else 0),
        "readout": (3, 6, 0),
    }

    ops = {k: float(v) for k, v in synops(net, x, out.spikes).items()}
    # per sample (B = 2): 3 input events x fan-out 2, + 3 hidden spikes x recurrent fan-out 2;
    # readout: 3 hidden spikes x fan-out 3
    assert ops == {"hidden0": (6 + 6) / 2 if recurrent else 6 / 2, "readout": 9 / 2}
    energy = float(snn_energy_nj(synops(net, x, out.spikes)))
    assert energy == pytest.approx((10.5 if recurrent else 7.5) * 0.9e-3, rel=1e-12)
    # the dense ANN: (4 + 4 + 6 or 4 + 6) synapses x 4 steps, 4.6 pJ each
    assert ann_macs(net, 4) == (56 if recurrent else 40)
    assert ann_energy_nj(net, 4) == pytest.approx((56 if recurrent else 40) * 4.6e-3, rel=1e-12)
    assert (E_AC_PJ, E_MAC_PJ) == (0.9, 4.6)  # Horowitz 2014, 45 nm, 32-bit float add / mult+add


def test_count_and_analog_input(float64):
    net = tiny_network(recurrent=False)
    counts = tiny_input(2.0)  # a bin with 2 events (binned SHD)
    assert not is_analog(counts) and not is_analog(tiny_input())
    ops = synops(net, counts, net(counts).spikes)
    assert float(ops["hidden0"]) == 6 * 2 / 2  # 6 events x fan-out 2, per sample

    analog = tiny_input(0.5)  # an image as current: 3 non-zero values, each a MAC per synapse
    assert is_analog(analog) and is_analog(-tiny_input())
    ops = synops(net, analog, net(analog).spikes, analog=True)
    assert float(ops["hidden0"]) == 3 * 2 / 2
    expected_pj = float(ops["hidden0"]) * 4.6 + float(ops["readout"]) * 0.9
    assert float(snn_energy_nj(ops, analog=True)) == pytest.approx(expected_pj * 1e-3, rel=1e-12)


def random_network(**kwargs) -> SpikingNetwork:
    torch.manual_seed(0)
    return SpikingNetwork(
        num_inputs=20,
        num_classes=5,
        hidden=[16, 12],
        neuron=LIF,
        surrogate=SuperSpike(10.0),
        recurrent=True,
        weight_init=ScaledNormal(6.0),
        **kwargs,
    )


def hand_count(net: SpikingNetwork, x: torch.Tensor, spikes: dict) -> dict[str, float]:
    """Spike by spike: every presynaptic event adds the length of its weight column (the
    synapses it drives); input values count as that many events."""
    count = {}
    sources = [x] + [spikes[f"hidden{i}"] for i in range(len(net.layers))]
    for i, layer in enumerate(net.layers):
        projections = [(sources[i], layer.fc.weight)]
        if layer.rec is not None:
            projections.append((sources[i + 1], layer.rec.weight))
        count[f"hidden{i}"] = sum(
            float(z[t, b, j]) * weight[:, j].numel()
            for z, weight in projections
            for t, b, j in z.nonzero().tolist()
        )
    count["readout"] = sum(
        net.readout_fc.weight[:, j].numel() for _, _, j in sources[-1].nonzero().tolist()
    )
    return {name: value / x.shape[1] for name, value in count.items()}


def spike_batch(samples: int, steps: int = 30, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(samples, steps, 20, generator=generator) < 0.2).float()  # [B, T, C]


def test_synops_are_spikes_times_fan_out_from_recorded_spikes():
    net = random_network(decoding="spike_count")  # a spiking readout: its spikes go nowhere
    x = spike_batch(6).transpose(0, 1)
    x[3, 0, :4] = 3.0  # a few counts above one
    out = net(x)
    assert all(z.sum() > 0 for z in out.spikes.values())
    ops = {k: float(v) for k, v in synops(net, x, out.spikes).items()}
    assert ops == pytest.approx(hand_count(net, x, out.spikes), rel=1e-12)
    assert set(ops) == {"hidden0", "hidden1", "readout"}


def test_logged_synops_and_energy_are_per_sample_means_over_the_epoch(float64):
    """trainer.validate over batches of 4, 4 and 2 samples: the epoch's values are the hand
    count over all 10 samples divided by 10 (each batch weighted by its size)."""
    net = random_network()
    model = SpikingClassifier(net, optimizer=functools.partial(torch.optim.Adam))
    x, y = spike_batch(10).double(), torch.arange(10) % 5
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (metrics,) = trainer.validate(model, DataLoader(TensorDataset(x, y), batch_size=4))
    with torch.no_grad():
        out = net(x.transpose(0, 1))
    expected = hand_count(net, x.transpose(0, 1), out.spikes)
    for layer, value in expected.items():
        assert metrics[f"val/synops/{layer}"] == pytest.approx(value, rel=1e-9), layer
    assert metrics["val/synops/total"] == pytest.approx(sum(expected.values()), rel=1e-9)
    assert metrics["val/energy_nj/snn"] == pytest.approx(sum(expected.values()) * 0.9e-3, rel=1e-9)
    synapses = 20 * 16 + 16 * 16 + 16 * 12 + 12 * 12 + 12 * 5
    assert metrics["val/energy_nj/ann"] == pytest.approx(synapses * 30 * 4.6e-3, rel=1e-9)


def test_training_run_logs_the_sizes_and_records_them_in_metrics_json(tmp_path, caplog):
    overrides = [
        "debug=limit",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "data.samples_per_class=20",
        "data.num_steps=40",
        "model.network.hidden=[16]",
        "model.network.recurrent=true",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    cfg = compose_config(overrides, output_dir=tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="spikelight.callbacks"):
        metrics = train(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    layers = record["cost"]["layers"]
    assert layers == {
        "hidden0": {"neurons": 16, "synapses": 100 * 16 + 16 * 16, "recurrent_synapses": 256},
        "readout": {"neurons": 10, "synapses": 16 * 10, "recurrent_synapses": 0},
    }
    assert (record["cost"]["neurons"], record["cost"]["synapses"]) == (26, 2016)
    assert record["cost"]["energy_pj_per_op"] == {"accumulate": 0.9, "multiply_accumulate": 4.6}
    (summary,) = [r.getMessage() for r in caplog.records if "Spiking network" in r.getMessage()]
    rows = [line.split("|") for line in summary.splitlines() if "|" in line]
    c_loops = native.library() is not None
    loop, filter_loop = ("fused, C loops", "leaky filter, C loop") if c_loops else (
        "fused, PyTorch loops (not built: SPIKELIGHT_NATIVE=0, no C compiler, or a failed build "
        "(warned))", "leaky filter, PyTorch loop")  # fmt: skip
    assert [[c.strip() for c in row] for row in rows] == [
        ["Layer", "Neurons", "Synapses", "of which recurrent", "Time loop"],
        ["hidden0", "16", "1,856", "256", loop],
        ["readout", "10", "160", "0", filter_loop],
        ["Total", "26", "2,016", "256", ""],
    ]
    for stage in ("train", "val", "test"):
        for name in ("synops/hidden0", "synops/readout", "synops/total", "energy_nj/snn"):
            assert metrics[f"{stage}/{name}"] > 0, (stage, name)
        assert metrics[f"{stage}/energy_nj/ann"] == pytest.approx(2016 * 40 * 4.6e-3)
        assert record["metrics"][f"{stage}/synops/total"] == pytest.approx(
            metrics[f"{stage}/synops/total"]
        )
