"""Randman: deterministic, timing-only, published defaults, disjoint splits."""

import pytest
import torch
import yaml

from spikelight.data.randman import RandmanDataModule, make_randman, random_manifold, spike_raster
from tests.conftest import REPO_ROOT


def test_config_has_published_defaults():
    cfg = yaml.safe_load((REPO_ROOT / "conf/data/randman.yaml").read_text())
    published = dict(
        num_classes=10,
        num_inputs=100,
        num_steps=100,
        dim=2,
        spikes_per_unit=1,
        samples_per_class=1000,
        alpha=2.0,
    )
    assert {k: cfg[k] for k in published} == published


def test_same_seed_same_data_other_seed_other_data():
    a = make_randman(classes=3, units=20, steps=50, samples_per_class=30, seed=1)
    b = make_randman(classes=3, units=20, steps=50, samples_per_class=30, seed=1)
    c = make_randman(classes=3, units=20, steps=50, samples_per_class=30, seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("spikes_per_unit", [1, 3])
def test_every_unit_fires_exactly_the_configured_number_of_spikes(spikes_per_unit):
    times, labels = make_randman(
        classes=4, units=25, steps=60, spikes_per_unit=spikes_per_unit, samples_per_class=40, seed=0
    )
    assert times.shape == (160, 25 * spikes_per_unit)
    assert times.min() >= 0 and times.max() <= 59
    raster = spike_raster(times, 25, 60)
    assert raster.shape == (160, 60, 25)
    counts = raster.sum(1)  # spikes per unit per sample
    assert torch.all(counts == spikes_per_unit)
    assert torch.bincount(labels).tolist() == [40] * 4


def test_manifold_is_smooth_and_standardised_times_span_the_window():
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 1, 401, dtype=torch.float64)[:, None]
    y = random_manifold(x, units=5, alpha=2.0, generator=g)
    # nearby latent points map to nearby values (a smooth manifold, not noise)
    step = (y[1:] - y[:-1]).abs().max()
    assert step < 0.05 * (y.max() - y.min())
    times, _ = make_randman(classes=2, units=10, steps=100, samples_per_class=500, seed=3)
    assert times.min() == 0 and times.max() >= 98


def test_classes_differ_in_timing_only():
    times, labels = make_randman(classes=2, units=30, steps=100, samples_per_class=200, seed=0)
    mean_a, mean_b = (times[labels == k].double().mean(0) for k in (0, 1))
    assert (mean_a - mean_b).abs().max() > 10  # some unit fires at clearly different times


def test_datamodule_splits_are_disjoint_and_batches_have_the_interface_shape():
    dm = RandmanDataModule(
        batch_size=32,
        num_steps=40,
        num_inputs=12,
        num_classes=3,
        samples_per_class=50,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    dm.setup()
    sizes = len(dm.train_set), len(dm.val_set), len(dm.test_set)
    assert sizes == (90, 30, 30)
    indices = [set(s.indices) for s in (dm.train_set, dm.val_set, dm.test_set)]
    assert not (indices[0] & indices[1] or indices[0] & indices[2] or indices[1] & indices[2])
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (32, 40, 12) and x.dtype == torch.float32
    assert y.dtype == torch.long and y.shape == (32,)
    assert torch.all(x.sum(1) == 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"num_steps": -3}, "num_steps"),
        ({"alpha": 0.0}, "alpha"),
        ({"val_fraction": 0.5, "test_fraction": 0.6}, "val_fraction"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandmanDataModule(**kwargs)
