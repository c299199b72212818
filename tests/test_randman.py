"""Randman: the reference algorithm, deterministic, timing-only, published defaults, disjoint
splits."""

import math

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


# -- the reference algorithm ------------------------------------------------------------------
class ReferenceRandman:
    """Zenke's ``TorchRandman`` (github.com/fzenke/randman, ``randman/torch_randman.py``) as
    ``make_spiking_dataset`` uses it (``use_bias=False``, ``beta=0``), loops as written there;
    ``params [embedding_dim, manifold_dim, 3, f_cutoff]`` are passed in instead of drawn from
    the global generator."""

    def __init__(self, embedding_dim, manifold_dim, alpha, params, prec=1e-3, max_f_cutoff=1000):
        self.dim_embedding, self.dim_manifold = embedding_dim, manifold_dim
        self.f_cutoff = int(min(math.ceil(prec ** (-1 / alpha)), max_f_cutoff))
        assert params.shape == (embedding_dim, manifold_dim, 3, self.f_cutoff)
        self.params = params.clone()
        self.params[:, :, 0, 0] = 0  # use_bias=False
        r = torch.arange(self.f_cutoff, dtype=torch.float64) + 1
        self.spect = 1.0 / (torch.abs(r - 0) ** alpha + 1.0)

    def eval_random_function_1d(self, x, theta):
        tmp = torch.zeros(len(x), dtype=torch.float64)
        s = self.spect
        for i in range(self.f_cutoff):
            tmp += theta[0, i] * s[i] * torch.sin(2 * math.pi * (i * x * theta[1, i] + theta[2, i]))
        return tmp

    def eval_random_function(self, x, params):
        tmp = torch.ones(len(x), dtype=torch.float64)
        for d in range(self.dim_manifold):
            tmp *= self.eval_random_function_1d(x[:, d], params[d])
        return tmp

    def eval_manifold(self, x):
        tmp = torch.zeros((x.shape[0], self.dim_embedding), dtype=torch.float64)
        for i in range(self.dim_embedding):
            tmp[:, i] = self.eval_random_function(x, self.params[i])
        return tmp


def reference_standardize(x, eps=1e-7):
    mi, _ = x.min(0)
    ma, _ = x.max(0)
    return (x - mi) / (ma - mi + eps)


def reference_spiking_dataset(
    nb_classes, nb_units, nb_steps, dim_manifold, nb_spikes, nb_samples, alpha, seed
):
    """``make_spiking_dataset`` of the randman repository (classification, shuffled), spike
    times floored to step indices. Its random numbers come from one seeded torch generator in
    the order spikelight documents (per class: the latent points, then per spike one manifold's
    amplitudes, frequencies and phases, each ``[units, dim, cutoff]``; finally the shuffle),
    where the reference seeds numpy and each manifold separately."""
    g = torch.Generator().manual_seed(seed)
    cutoff = int(min(math.ceil(1e-3 ** (-1 / alpha)), 1000))
    data, labels = [], []
    for k in range(nb_classes):
        x = torch.rand(nb_samples, dim_manifold, generator=g, dtype=torch.float64)
        times = []
        for _ in range(nb_spikes):
            draws = torch.rand(3, nb_units, dim_manifold, cutoff, generator=g, dtype=torch.float64)
            rm = ReferenceRandman(nb_units, dim_manifold, alpha, draws.permute(1, 2, 0, 3))
            times.append(reference_standardize(rm.eval_manifold(x)))
        data.append(torch.cat(times, dim=1))  # units repeat per spike: 0..U-1, 0..U-1, ...
        labels.append(torch.full((nb_samples,), k))
    data, labels = torch.cat(data), torch.cat(labels)
    idx = torch.randperm(len(labels), generator=g)
    return (data[idx] * nb_steps).floor().long(), labels[idx]


@pytest.mark.parametrize(
    "alpha, dim, spikes", [(2.0, 2, 1), (1.5, 1, 2), (3.0, 3, 1)], ids=["a2d2", "a1.5d1k2", "a3d3"]
)
def test_make_randman_reproduces_the_reference_algorithm(alpha, dim, spikes):
    kwargs = dict(
        classes=3,
        units=7,
        steps=50,
        dim=dim,
        spikes_per_unit=spikes,
        samples_per_class=25,
        alpha=alpha,
        seed=4,
    )
    times, labels = make_randman(**kwargs)
    ref_times, ref_labels = reference_spiking_dataset(3, 7, 50, dim, spikes, 25, alpha, seed=4)
    assert torch.equal(labels, ref_labels)
    assert torch.equal(times, ref_times)
    assert len(set(times.flatten().tolist())) > 25  # times spread over the window


def test_random_manifold_equals_the_reference_evaluation():
    g = torch.Generator().manual_seed(7)
    latent = torch.rand(40, 2, dtype=torch.float64, generator=g)
    state = g.get_state()
    y = random_manifold(latent, units=5, alpha=2.0, generator=g)
    g.set_state(state)
    draws = torch.rand(3, 5, 2, 32, generator=g, dtype=torch.float64)  # cutoff ceil(1e-3^-1/2)
    reference = ReferenceRandman(5, 2, 2.0, draws.permute(1, 2, 0, 3)).eval_manifold(latent)
    torch.testing.assert_close(y, reference, rtol=1e-12, atol=1e-14)
    assert y.std(0).min() > 1e-3  # not a constant
