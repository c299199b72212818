"""Event augmentation: each transform against hand-written cases, the mixes with known lam, the
soft-label loss against its hand value, seeded streams, training-only use, config validation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from data_fixtures import make_shd_files

from spikelight import module as classifier
from spikelight.checks import ArgumentError
from spikelight.data import shd
from spikelight.data.augment import (
    Augmentation,
    ChannelMask,
    ChannelShift,
    CutMix,
    EventDrop,
    Mixup,
    TimeJitter,
    TimeMask,
    TimeShift,
    TimeStretch,
    jitter_events,
    mask_ranges,
    mix,
    paste_segment,
    shift,
    stretch_time,
)
from spikelight.data.shd import SHDDataModule
from spikelight.module import cross_entropy, hard_labels
from spikelight.train import train
from spikelight.validation import ConfigError, validate_config
from tests.conftest import compose_config

#: one sample, 5 bins x 4 inputs: entry (t, c) = 4 t + c + 1
X = torch.arange(1.0, 21.0).view(1, 5, 4)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def counts(batch: int = 6, steps: int = 12, inputs: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.poisson(torch.full((batch, steps, inputs), 1.5), generator=seeded(seed))


# -- the pure functions, by hand -----------------------------------------------------------
def test_shift_in_time_and_over_inputs_drops_what_leaves():
    x = torch.cat([X, X])
    late_early = shift(x, torch.tensor([2, -1]), dim=1)
    assert torch.equal(
        late_early[0],
        torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12.0]]),
    )
    assert torch.equal(
        late_early[1],
        torch.tensor(
            [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [17, 18, 19, 20], [0, 0, 0, 0.0]]
        ),
    )
    up = shift(X, torch.tensor([1]), dim=2)
    assert torch.equal(
        up[0],
        torch.tensor(
            [[0, 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11], [0, 13, 14, 15], [0, 17, 18, 19.0]]
        ),
    )
    assert torch.equal(shift(X, torch.tensor([0]), dim=1), X)


def test_jitter_moves_each_event_and_drops_those_leaving():
    x = torch.zeros(1, 5, 4)
    x[0, 1, 0], x[0, 2, 3], x[0, 4, 1] = 1, 2, 1
    # events in row-major order: (1, 0), (2, 3), (2, 3), (4, 1)
    out = jitter_events(x, torch.tensor([-1, 1, -2, 1]))
    expected = torch.zeros(1, 5, 4)
    expected[0, 0, 0], expected[0, 3, 3], expected[0, 0, 3] = 1, 1, 1  # (4, 1) + 1 left
    assert torch.equal(out, expected)


def test_stretch_rounds_each_bin_and_adds_bins_that_meet():
    rows = X[0]
    slow = stretch_time(X, torch.tensor([1.5]))[0]  # t -> floor(1.5 t + 0.5): 0, 2, 3, 5, 6
    assert torch.equal(slow, torch.stack([rows[0], 0 * rows[0], rows[1], rows[2], 0 * rows[0]]))
    fast = stretch_time(X, torch.tensor([0.5]))[0]  # t -> floor(0.5 t + 0.5): 0, 1, 1, 2, 2
    zero = torch.zeros(4)
    assert torch.equal(
        fast, torch.stack([rows[0], rows[1] + rows[2], rows[3] + rows[4], zero, zero])
    )
    assert torch.equal(stretch_time(X, torch.tensor([1.0])), X)


def test_masks_zero_their_ranges():
    in_time = mask_ranges(X, torch.tensor([[1, 4]]), torch.tensor([[2, 1]]), dim=1)[0]
    expected = X[0].clone()
    expected[[1, 2, 4]] = 0
    assert torch.equal(in_time, expected)
    over_inputs = mask_ranges(X, torch.tensor([[3, 0]]), torch.tensor([[1, 0]]), dim=2)[0]
    expected = X[0].clone()
    expected[:, 3] = 0  # the width-0 mask at 0 covers nothing
    assert torch.equal(over_inputs, expected)


def test_mix_with_known_lam():
    x = torch.stack([torch.ones(5, 4), torch.full((5, 4), 3.0)])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mixed, targets = mix(x, y, torch.tensor([1, 0]), torch.tensor([0.25, 1.0]))
    assert torch.equal(mixed[0], torch.full((5, 4), 0.25 * 1 + 0.75 * 3))
    assert torch.equal(mixed[1], x[1])
    assert torch.equal(targets, torch.tensor([[0.25, 0.75], [0.0, 1.0]]))


@pytest.mark.parametrize(("weight", "share"), [("time", 2 / 5), ("events", 24 / 36)])
def test_cutmix_pastes_a_segment_and_weighs_the_label(weight, share):
    x = torch.stack([torch.ones(5, 4), torch.full((5, 4), 3.0), torch.zeros(5, 4)])
    y = torch.eye(3)
    partner = torch.tensor([1, 0, 2])
    out, targets = paste_segment(
        x, y, partner, torch.tensor([1, 0, 0]), torch.tensor([2, 0, 5]), weight
    )
    expected = torch.ones(5, 4)
    expected[1:3] = 3  # 12 own events, 24 pasted
    assert torch.equal(out[0], expected) and torch.equal(out[1], x[1])
    assert torch.allclose(targets[0], torch.tensor([1 - share, share, 0.0]))
    assert torch.equal(targets[1], y[1])
    assert torch.equal(targets[2], y[2])  # no events: time share, of its own label


# -- the transforms' draws -----------------------------------------------------------------
def test_shift_draws_lie_in_range_and_p_zero_is_identity():
    x = torch.zeros(200, 30, 1)
    x[:, 15] = 1
    out = TimeShift(max_shift=3)(x, None, seeded())[0]
    moved = out.argmax(dim=1)[:, 0] - 15
    assert set(moved.tolist()) == {-3, -2, -1, 0, 1, 2, 3}
    assert torch.equal(TimeShift(max_shift=3, p=0.0).apply(x, seeded()), x)
    c = torch.zeros(200, 1, 30)
    c[:, :, 15] = 1
    moved = ChannelShift(max_shift=2).apply(c, seeded()).argmax(dim=2)[:, 0] - 15
    assert set(moved.tolist()) == {-2, -1, 0, 1, 2}


def test_jitter_keeps_events_inside_and_moves_them_at_most_max_jitter():
    x = torch.zeros(4, 30, 3)
    x[:, 10:20] = 2
    out = TimeJitter(max_jitter=2).apply(x, seeded())
    assert out.sum() == x.sum() and out[:, :8].sum() == 0 and out[:, 22:].sum() == 0
    assert not torch.equal(out, x)
    assert torch.equal(TimeJitter(max_jitter=2, p=0.0).apply(x, seeded()), x)


def test_stretch_factors_lie_in_bounds():
    x = torch.zeros(300, 101, 1)
    x[:, 100] = 1
    out = TimeStretch(low=0.5, high=0.9).apply(x, seeded())
    landed = out.argmax(dim=1)[:, 0].float()  # bin 100 -> round(100 f)
    assert landed.min() >= 50 and landed.max() <= 90 and len(landed.unique()) > 20


def test_event_drop_thins_counts_binomially():
    p, n = 0.3, 40
    x = torch.full((50, 40, 10), float(n))
    kept = EventDrop(p=p).apply(x, seeded())
    assert torch.equal(kept, kept.round()) and (kept <= x).all()
    mean, var = n * (1 - p), n * p * (1 - p)
    samples = kept.numel()
    assert abs(kept.mean().item() - mean) < 5 * math.sqrt(var / samples)
    assert abs(kept.var().item() / var - 1) < 5 * math.sqrt(2 / samples)
    assert torch.equal(EventDrop(p=0.0).apply(x, seeded()), x)
    assert EventDrop(p=1.0).apply(x, seeded()).sum() == 0


def test_masks_cover_at_most_max_masks_times_max_width():
    x = torch.ones(100, 20, 8)
    out = TimeMask(max_masks=2, max_width=3).apply(x, seeded())
    masked_bins = (out.sum(dim=2) == 0).sum(dim=1)
    assert masked_bins.max() <= 6 and masked_bins.sum() > 0
    out = ChannelMask(max_masks=1, max_width=8).apply(x, seeded())
    masked_inputs = (out.sum(dim=1) == 0).sum(dim=1)
    assert masked_inputs.max() <= 8 and (masked_inputs == 8).any()


@pytest.mark.parametrize("transform", [Mixup(alpha=0.4), CutMix(p=1.0, weight="time")])
def test_mixes_weigh_inputs_and_targets_alike(transform):
    """Sample b holds the value b + 1 under label b: each mixed sample's mean value must be
    its targets' mean of those values, so inputs and labels were mixed with the same weights."""
    values = torch.arange(1.0, 9.0)
    x = values[:, None, None].expand(8, 10, 3).clone()
    mixed, targets = transform(x, torch.eye(8), seeded())
    assert torch.allclose(targets.sum(dim=1), torch.ones(8))
    assert torch.allclose(mixed.mean(dim=(1, 2)), targets @ values)
    assert (targets.max(dim=1).values < 1).any()  # something was mixed


def test_pipeline_makes_one_hot_targets_only_when_it_mixes():
    x, y = counts(batch=3), torch.tensor([0, 2, 1])
    _, plain = Augmentation(["time_shift"])(x, y, 4, seeded())
    assert plain is y
    _, soft = Augmentation(["mixup"], mixup={"p": 0.0})(x, y, 4, seeded())
    assert torch.equal(soft, torch.eye(4)[y])


def test_same_seed_same_batch_other_seed_other_batch():
    aug = Augmentation(
        ["time_shift", "time_jitter", "time_stretch", "channel_shift", "event_drop"]
        + ["time_mask", "channel_mask", "cutmix", "mixup"],
        channel_shift={"max_shift": 2},
        channel_mask={"max_width": 2},
    )
    x, y = counts(), torch.tensor([0, 1, 2, 3, 0, 1])
    first, again, other = (aug(x, y, 4, seeded(s)) for s in (1, 1, 2))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


# -- the loss --------------------------------------------------------------------------------
def test_soft_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    targets = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    # softmax of row 0 is (1/4, 3/4); of row 1 (1/2, 1/2)
    by_hand = ((0.25 * math.log(4) + 0.75 * math.log(4 / 3)) + math.log(2)) / 2
    assert cross_entropy(logits, targets).item() == pytest.approx(by_hand, rel=1e-6)
    assert cross_entropy(logits, torch.tensor([1, 0])).item() == pytest.approx(
        (math.log(4 / 3) + math.log(2)) / 2, rel=1e-6
    )
    assert torch.equal(hard_labels(torch.tensor([[0.4, 0.6], [0.7, 0.3]])), torch.tensor([1, 0]))
    assert torch.equal(hard_labels(torch.tensor([2, 0])), torch.tensor([2, 0]))


# -- in the data module and the training loop ------------------------------------------------
@pytest.fixture
def shd_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(shd, "CHECKSUMS", {})  # generated files are not the published ones
    make_shd_files(tmp_path, n_train=20, n_test=6)
    return tmp_path


def data_module(directory, seed=0, **settings):
    augment = Augmentation(["time_shift", "event_drop", "mixup"], **settings)
    module = SHDDataModule(
        directory, batch_size=5, num_steps=20, download=False, seed=seed, augment=augment
    )
    module.setup()
    return module


def phase(module, training: bool) -> None:
    stage = "train" if training else "validate"
    module.trainer = SimpleNamespace(
        training=training,
        state=SimpleNamespace(stage=stage),
        current_epoch=0,
        global_step=0,
        global_rank=0,
    )


def test_augmentation_runs_in_training_only_and_resumes(shd_dir):
    module = data_module(shd_dir)
    batch = next(iter(module.test_dataloader()))
    plain = shd.densify(batch[0], 20, 700), batch[1]
    phase(module, training=False)
    x, y = module.on_after_batch_transfer(batch, 0)
    assert torch.equal(x, plain[0]) and y is plain[1]
    phase(module, training=True)
    x, y = module.on_after_batch_transfer(batch, 0)
    assert not torch.equal(x, plain[0]) and y.shape == (5, 20)
    state = module.state_dict()  # as a checkpoint after one batch
    expected = module.on_after_batch_transfer(batch, 0)
    resumed = data_module(shd_dir)
    resumed.load_state_dict(state)
    phase(resumed, training=True)
    again = resumed.on_after_batch_transfer(batch, 0)
    assert torch.equal(again[0], expected[0]) and torch.equal(again[1], expected[1])
    other = data_module(shd_dir, seed=1)
    phase(other, training=True)
    assert not torch.equal(other.on_after_batch_transfer(batch, 0)[0], x)


def test_a_mixed_training_run_uses_soft_targets(shd_dir, tmp_path, monkeypatch):
    seen = []

    def recording(logits, targets):
        seen.append((targets.dtype, tuple(targets.shape)))
        return cross_entropy(logits, targets)

    monkeypatch.setattr(classifier, "cross_entropy", recording)
    cfg = compose_config(
        [
            "experiment=shd",
            "data/augment=shd",
            "data.augment.order=[time_shift,time_jitter,event_drop,cutmix,mixup]",
            f"data.data_dir={shd_dir}",
            "data.download=false",
            "data.batch_size=4",
            "data.num_steps=20",
            "data.channel_pool=10",
            "model.network.hidden=[8]",
            "debug=fast_dev_run",
            "logger=[]",
            "callbacks=none",
        ],
        output_dir=tmp_path / "run",
    )
    metrics = train(cfg)
    assert (torch.float32, (4, 20)) in seen  # the training batch: mixed, soft
    assert (torch.int64, (4,)) in seen  # validation and test: class indices
    assert math.isfinite(metrics["test/loss"])


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.augment.event_drop.p=1.5"],
            "data.augment.event_drop.p=1.5: expected a probability",
        ),
        (["data.augment.time_shift.p=-0.1"], "data.augment.time_shift.p=-0.1: expected a probab"),
        (
            ["data.augment.order=[time_mask]", "data.augment.time_mask.max_width=101"],
            "data.augment.time_mask.max_width=101: expected an integer <= data.num_steps=100",
        ),
        (
            ["data.augment.order=[channel_mask]", "data.augment.channel_mask.max_width=701"],
            "data.augment.channel_mask.max_width=701: expected an integer <= data.num_inputs=700",
        ),
        (
            ["data.augment.time_shift.max_shift=100"],
            "data.augment.time_shift.max_shift=100: expected an integer < data.num_steps=100",
        ),
        (
            ["data.augment.time_stretch.low=1.2"],
            "data.augment.time_stretch.low=1.2: expected a factor <= high=1.1",
        ),
        (["data.augment.time_stretch.low=0"], "data.augment.time_stretch.low=0: expected a finite"),
        (["data.augment.order=[mixup,event_drop]"], "expected event_drop before mixup"),
        (["data.augment.order=[shuffle]"], "data.augment.order=['shuffle']: expected names among"),
        (["+data.augment.mixup.beta=1"], "data.augment.mixup.beta=1: expected a key among"),
        (["data.augment.cutmix.weight=area"], "data.augment.cutmix.weight='area': expected one of"),
    ],
)
def test_bad_settings_name_key_value_and_expectation(overrides, message):
    cfg = compose_config(["experiment=shd", "data/augment=shd", *overrides])
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        validate_config(cfg)


def test_none_is_the_default_and_the_recipe_composes():
    assert not compose_config(["experiment=shd"]).data.augment.order
    validate_config(compose_config(["experiment=shd", "data/augment=shd"]))


def test_plain_python_errors_name_the_key():
    with pytest.raises(ArgumentError, match=r"augment.time_mask.max_width=-1: expected an int"):
        Augmentation(["time_mask"], time_mask={"max_width": -1})
    with pytest.raises(ArgumentError, match=r"augment.order=\['time_mask', 'time_mask'\]"):
        Augmentation(["time_mask", "time_mask"])
