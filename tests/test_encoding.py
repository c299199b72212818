"""Image encoders against their closed forms, and their Hydra configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from spikelight.data.encoding import DirectEncoder, IFEncoder, LatencyEncoder, RateEncoder

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- rate --------------------------------------------------------------------------------
def test_rate_mean_matches_probability_within_statistical_bound():
    probability = torch.tensor([[0.0, 0.05, 0.3, 0.5, 0.9, 1.0]])
    steps = 20000
    spikes = RateEncoder(gain=1.0)(probability, steps, generator=seeded(0))
    assert spikes.shape == (1, steps, 6)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    mean = spikes.mean(dim=1)[0]
    bound = 5 * torch.sqrt(probability[0] * (1 - probability[0]) / steps) + 1e-12
    assert ((mean - probability[0]).abs() <= bound).all(), (mean, probability)


def test_rate_gain_scales_and_clips_probability():
    images = torch.tensor([[0.2, 0.6]])
    spikes = RateEncoder(gain=2.0)(images, 20000, generator=seeded(1))
    mean = spikes.mean(dim=1)[0]
    assert abs(mean[0].item() - 0.4) < 5 * math.sqrt(0.24 / 20000)
    assert mean[1].item() == 1.0  # 2 * 0.6 clipped to probability 1


def test_rate_is_deterministic_under_a_seed():
    images = torch.rand(4, 30, generator=seeded(5))
    encoder = RateEncoder()
    assert torch.equal(encoder(images, 10, seeded(3)), encoder(images, 10, seeded(3)))
    assert not torch.equal(encoder(images, 10, seeded(3)), encoder(images, 10, seeded(4)))


def test_rate_rejects_negative_gain():
    with pytest.raises(ValueError, match="gain"):
        RateEncoder(gain=-1.0)


# -- latency -----------------------------------------------------------------------------
def expected_latency_step(x: float, tau: float, threshold: float, dt: float) -> int | None:
    if x <= threshold:
        return None
    return math.floor(tau * math.log(x / (x - threshold)) / dt)


def test_latency_spike_time_follows_closed_form():
    tau, threshold, dt, steps = 0.02, 0.2, 1e-3, 30
    values = [0.0, 0.1, 0.2, 0.2001, 0.21, 0.25, 0.3, 0.5, 0.75, 0.99, 1.0]
    images = torch.tensor([values], dtype=torch.float64)
    spikes = LatencyEncoder(tau, threshold, dt)(images, steps)
    assert spikes.shape == (1, steps, len(values))
    for channel, x in enumerate(values):
        step = expected_latency_step(x, tau, threshold, dt)
        train = spikes[0, :, channel]
        if step is None or step >= steps:
            assert train.sum() == 0, (x, train.nonzero())
        else:
            assert train.sum() == 1 and train[step] == 1, (x, step, train.nonzero())
    # a white pixel: 20 ms * ln(1.25) = 4.46 ms -> step 4
    assert spikes[0, 4, values.index(1.0)] == 1


def test_latency_brighter_spikes_earlier():
    images = torch.linspace(0.3, 1.0, 8)[None]
    steps = LatencyEncoder().spike_steps(images)[0]
    assert (steps[1:] <= steps[:-1]).all()


@pytest.mark.parametrize("kwargs", [{"tau": 0.0}, {"dt": -1e-3}, {"threshold": 1.0}])
def test_latency_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        LatencyEncoder(**kwargs)


# -- direct ------------------------------------------------------------------------------
def test_direct_repeats_scaled_image_every_step():
    images = torch.rand(3, 5, generator=seeded(0))
    out = DirectEncoder(gain=2.0)(images, 4)
    assert out.shape == (3, 4, 5)
    for step in range(4):
        assert torch.equal(out[:, step], 2.0 * images)


# -- integrate-and-fire ------------------------------------------------------------------
# Dyadic drives so that float32 accumulation is exact and the closed form is exact too.
@pytest.mark.parametrize(
    ("x", "gain", "bias", "threshold"),
    [
        (0.25, 1.0, 0.0, 1.0),
        (0.5, 1.0, 0.0, 1.0),
        (0.75, 1.0, 0.0, 1.0),
        (0.125, 1.0, 0.0, 1.0),
        (1.0, 1.0, 0.0, 1.0),  # T * I an integer: strict '>' gives one spike fewer
        (1.0, 1.5, 0.0, 1.0),  # drive above threshold: one spike every step
        (0.5, 0.5, 0.125, 1.0),
        (0.5, 1.0, 0.0, 2.0),
        (0.0, 1.0, 0.0, 1.0),
        (0.5, 1.0, -0.75, 1.0),  # negative drive never fires
    ],
)
def test_if_spike_count_matches_closed_form(x, gain, bias, threshold):
    steps = 25
    drive = gain * x + bias
    expected = min(steps, max(0, math.ceil(steps * drive / threshold) - 1))
    spikes = IFEncoder(gain, bias, threshold)(torch.tensor([[x]]), steps)
    assert spikes.sum().item() == expected
    if 0 < drive <= threshold:  # first crossing: (t + 1) * I > threshold
        first = math.floor(threshold / drive)
        assert spikes[0, :, 0].nonzero()[0].item() == first


def test_if_floor_formula_for_non_integer_products():
    images = torch.tensor([[0.25, 0.5, 0.75, 0.375]])
    counts = IFEncoder()(images, 25).sum(dim=1)[0]
    assert counts.tolist() == [math.floor(25 * x) for x in images[0].tolist()]


def test_encoders_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, C\]"):
        RateEncoder()(torch.rand(2, 3, 4), 5)
    with pytest.raises(ValueError, match="num_steps"):
        DirectEncoder()(torch.rand(2, 3), 0)


# -- configs -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("choice", "cls"),
    [("rate", RateEncoder), ("latency", LatencyEncoder), ("direct", DirectEncoder)]
    + [("if", IFEncoder)],
)
def test_encoding_configs_instantiate_into_mnist_module(tmp_path, choice, cls):
    overrides = ["+data=mnist", f"data/encoding={choice}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=None, overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    cfg = OmegaConf.merge(cfg, {"paths": {"data_dir": str(tmp_path)}, "seed": 7})
    module = instantiate(cfg.data)
    assert isinstance(module.encoding, cls)
    assert module.seed == 7 and module.data_dir == tmp_path / "mnist"
    for key in ("batch_size", "num_steps", "num_inputs", "num_classes", "seed", "num_workers"):
        assert key in cfg.data
