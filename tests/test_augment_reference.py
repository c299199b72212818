"""The event-list augmentations against the dense implementations they replaced, written out here
as the reference: on random count batches, every transform and whole pipelines give exactly the
same batch and targets from the same generator (the same draws, in the same order), so seeded
and resumed runs augment as they did before; only event drop draws differently (one uniform per
event instead of torch.binomial per entry: the same distribution, ~5x cheaper). And the event
form on its own: listing, writing, merging and splitting entries against dense truth."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from data_fixtures import make_shd_files
from torch.nn import functional as F

from spikelight.data import augment, shd
from spikelight.data.augment import (
    Augmentation,
    ChannelShift,
    CutMix,
    EventDrop,
    Mixup,
    TimeJitter,
    TimeShift,
    TimeStretch,
    _below,
    _beta,
    _chance,
    _integers,
    _partners,
)
from spikelight.data.events import Events
from spikelight.data.shd import SHDDataModule

TIME, INPUTS = 1, 2


# -- the dense implementations before the event form (reference) ----------------------------
def ref_shift(x, shifts, dim):
    size = x.shape[dim]
    source = torch.arange(size) - shifts[:, None]
    inside = (source >= 0) & (source < size)
    view = (x.shape[0], size, 1) if dim == TIME else (x.shape[0], 1, size)
    index = source.clamp(0, size - 1).view(view).expand_as(x)
    return torch.gather(x, dim, index) * inside.view(view).to(x.dtype)


def ref_events_of(x):
    entries = x.nonzero()
    counts = x[entries.unbind(1)].long()
    return entries.repeat_interleave(counts, dim=0).unbind(1)


def ref_place_events(like, sample, step, channel):
    inside = (step >= 0) & (step < like.shape[TIME])
    out = torch.zeros_like(like)
    ones = torch.ones(int(inside.sum()), dtype=like.dtype)
    out.index_put_((sample[inside], step[inside], channel[inside]), ones, accumulate=True)
    return out


def ref_stretch(x, factors):
    steps = x.shape[TIME]
    t = torch.arange(steps, dtype=factors.dtype)
    target = torch.floor(t * factors[:, None] + 0.5).long()
    inside = (target < steps).to(x.dtype)[:, :, None]
    index = target.clamp(max=steps - 1)[:, :, None].expand_as(x)
    return torch.zeros_like(x).scatter_add_(TIME, index, x * inside)


def ref_mask(x, starts, widths, dim):
    i = torch.arange(x.shape[dim])
    covered = (i >= starts[..., None]) & (i < (starts + widths)[..., None])
    keep = (~covered.any(dim=1)).to(x.dtype)
    return x * (keep[:, :, None] if dim == TIME else keep[:, None, :])


def ref_mix(x, y, partner, lam):
    lam = lam.to(x.dtype)
    mixed = lam[:, None, None] * x + (1 - lam)[:, None, None] * x[partner]
    return mixed, lam[:, None] * y + (1 - lam)[:, None] * y[partner]


def ref_paste(x, y, partner, starts, lengths, weight):
    steps = x.shape[TIME]
    t = torch.arange(steps)
    inside = ((t >= starts[:, None]) & (t < (starts + lengths)[:, None]))[:, :, None]
    out = torch.where(inside, x[partner], x)
    share = lengths.to(x.dtype) / steps
    if weight == "events":
        pasted = (x[partner] * inside).sum(dim=(1, 2))
        total = out.sum(dim=(1, 2))
        share = torch.where(total > 0, pasted / total.clamp_min(1e-30), share)
    return out, (1 - share)[:, None] * y + share[:, None] * y[partner]


def ref_transform(t, x, y, g):
    """What transform ``t`` did before: its draws, in order, then the dense function."""
    batch = x.shape[0]
    if isinstance(t, TimeShift | ChannelShift):
        amount = _integers(-t.max_shift, t.max_shift, (batch,), x, g)
        return ref_shift(x, amount * _chance(t.p, batch, x, g), t.dim), y
    if isinstance(t, TimeJitter):
        sample, step, channel = ref_events_of(x)
        offsets = _integers(-t.max_jitter, t.max_jitter, step.shape, x, g)
        offsets = offsets * _chance(t.p, batch, x, g)[sample]
        return ref_place_events(x, sample, step + offsets, channel), y
    if isinstance(t, TimeStretch):
        drawn = t.low + (t.high - t.low) * torch.rand(batch, generator=g)
        factors = torch.where(_chance(t.p, batch, x, g), drawn, torch.ones_like(drawn))
        return ref_stretch(x, factors), y
    if isinstance(t, EventDrop):  # the one change of draws: one uniform per event, in order
        occupied = x != 0  # (was torch.binomial per entry: the same distribution)
        counts = x[occupied].long()
        survived = (torch.rand(int(counts.sum()), generator=g) < 1 - t.p).to(x.dtype)
        entry = torch.repeat_interleave(counts)
        kept = torch.zeros(len(counts)).index_add_(0, entry, survived)
        return x.masked_scatter(occupied, kept), y
    if isinstance(t, Mixup):
        partner = _partners(x, g)
        lam = _beta(t.alpha, batch, x, g)
        lam = torch.where(_chance(t.p, batch, x, g), lam, torch.ones_like(lam))
        return ref_mix(x, y, partner, lam)
    if isinstance(t, CutMix):
        steps = x.shape[TIME]
        partner = _partners(x, g)
        lengths = torch.floor((1 - _beta(t.alpha, batch, x, g)) * steps + 0.5).long()
        lengths = lengths * _chance(t.p, batch, x, g)
        starts = _below(steps - lengths + 1, x, g)
        return ref_paste(x, y, partner, starts, lengths, t.weight)
    # the masks
    size, shape = x.shape[t.dim], (batch, t.max_masks)
    widths = _integers(0, t.max_width, shape, x, g)
    widths = widths * _chance(t.p, shape, x, g)
    starts = _below(size - widths + 1, x, g)
    return ref_mask(x, starts, widths, t.dim), y


def ref_pipeline(aug, x, y, num_classes, g):
    if aug.mixes:
        y = F.one_hot(y, num_classes).to(x.dtype)
    for t in aug.transforms:
        x, y = ref_transform(t, x, y, g)
    return x, y


# -- random SHD-like batches ------------------------------------------------------------------
def seeded(seed):
    return torch.Generator().manual_seed(seed)


def count_batch(seed, batch=16, steps=40, inputs=30, density=0.1):
    """Counts 1 mostly, some 2 and 3, at ``density`` of the bins."""
    g = seeded(seed)
    occupied = torch.rand(batch, steps, inputs, generator=g) < density
    extra = torch.randint(0, 3, (batch, steps, inputs), generator=g) * (
        torch.rand(batch, steps, inputs, generator=g) < 0.2
    )
    return occupied * (1.0 + extra), torch.randint(0, 5, (batch,), generator=g)


SETTINGS = {  # everything drawn often, the masks and shifts wide for the small batch
    "time_shift": {"max_shift": 6, "p": 0.7},
    "time_jitter": {"max_jitter": 2, "p": 0.5},
    "time_stretch": {"low": 0.6, "high": 1.4, "p": 0.8},
    "channel_shift": {"max_shift": 5, "p": 0.7},
    "event_drop": {"p": 0.3},
    "time_mask": {"max_masks": 2, "max_width": 8, "p": 0.65},
    "channel_mask": {"max_masks": 2, "max_width": 6, "p": 0.65},
    "mixup": {"alpha": 0.4, "p": 0.5},
    "cutmix": {"alpha": 1.0, "p": 0.7, "weight": "events"},
}
COUNTS = [name for name in SETTINGS if augment.TRANSFORMS[name].needs_counts]
OTHERS = [name for name in SETTINGS if name not in COUNTS and name != "mixup"]


def assert_same_as_before(order, x, y, seed, **settings):
    aug = Augmentation(order, **(SETTINGS | settings))
    got = aug(x, y, 5, seeded(seed))
    want = ref_pipeline(aug, x, y, 5, seeded(seed))
    assert torch.equal(got[0], want[0]), order
    assert torch.equal(got[1], want[1]), order


@pytest.mark.parametrize("name", list(SETTINGS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_transform_is_the_dense_one_draw_for_draw(name, seed):
    x, y = count_batch(seed)
    assert_same_as_before([name], x, y, seed)
    assert_same_as_before([name], x, y, seed, **{name: {}})  # the defaults


def test_the_shd_recipe_and_orders_of_all_transforms_are_the_dense_ones():
    x, y = count_batch(3, batch=32, steps=50, inputs=40, density=0.05)
    assert_same_as_before(["time_shift", "time_jitter", "channel_shift", "event_drop"], x, y, 0)
    for seed in range(6):  # random orders, the count transforms before the mixup
        g = seeded(100 + seed)
        others = [OTHERS[i] for i in torch.randperm(len(OTHERS), generator=g)]
        k = int(torch.randint(0, len(others) + 1, (1,), generator=g))
        before = COUNTS + others[:k]
        before = [before[i] for i in torch.randperm(len(before), generator=g)]
        assert_same_as_before(before + ["mixup"] + others[k:], x, y, seed)


def test_after_mixup_fractional_values_are_moved_and_added_exactly_as_before():
    """Stretching mixed (fractional) samples adds bins that meet: in the same order as the
    dense scatter, to the bit."""
    x, y = count_batch(4, batch=24, density=0.3)
    order = ["mixup", "time_stretch", "time_shift", "time_mask", "channel_shift"]
    for seed in range(4):
        assert_same_as_before(order + ["channel_mask", "cutmix"], x, y, seed)
        assert_same_as_before(["cutmix", "mixup", "time_stretch"], x, y, seed)


# -- the event form against dense truth -------------------------------------------------------
def scrambled_entries(seed, shape=(3, 6, 5), entries=60):
    """Entries at random places (many shared), random order, random values (some zero)."""
    g = seeded(seed)
    places = [torch.randint(0, size, (entries,), generator=g) for size in shape]
    value = torch.randint(0, 4, (entries,), generator=g).float() * torch.rand(entries, generator=g)
    return Events(shape, *places, value, ordered=False, unique=False)


def by_loop(events):
    """The dense batch by a plain loop over the entries, in their order."""
    out = torch.zeros(events.shape)
    for b, t, c, v in zip(events.sample, events.step, events.channel, events.value, strict=True):
        out[b, t, c] += v
    return out


@pytest.mark.parametrize("seed", range(5))
def test_dense_and_canonical_form_agree_with_a_loop(seed):
    events = scrambled_entries(seed)
    truth = by_loop(events)
    assert torch.equal(events.dense(), truth)
    canonical = events.canonical()
    assert canonical.ordered and canonical.unique
    listed = Events.of(truth)
    for field in ("sample", "step", "channel", "value"):
        assert torch.equal(getattr(canonical, field), getattr(listed, field)), field
    assert torch.equal(canonical.dense(), truth)


def test_of_lists_row_major_and_split_gives_one_entry_per_event():
    x = torch.zeros(2, 3, 2)
    x[0, 2, 1], x[1, 0, 0], x[0, 0, 1] = 2, 1, 3
    events = Events.of(x)
    assert events.places().tolist() == [1, 5, 6]
    assert events.value.tolist() == [3, 2, 1]
    units = events.split()
    assert units.places().tolist() == [1, 1, 1, 5, 5, 6]
    assert torch.equal(units.value, torch.ones(6)) and torch.equal(units.dense(), x)


def test_moves_drop_entries_outside_and_keep_the_form_stated():
    x = torch.zeros(1, 4, 3)
    x[0, 0, 0], x[0, 3, 2], x[0, 1, 1] = 1, 2, 3
    events = Events.of(x)
    later = events.moved(step=events.step + 1, ordered=True, unique=True)
    assert later.places().tolist() == [3 + 0, 2 * 3 + 1]  # (0, 0) -> (1, 0); (3, 2) is gone
    assert later.ordered and later.unique
    right = events.moved(channel=events.channel + 2)
    assert right.places().tolist() == [2] and not (right.ordered or right.unique)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_forms_round_trip_for_any_values(dtype):
    g = seeded(7)
    x = torch.randn(4, 5, 6, generator=g, dtype=dtype) * (torch.rand(4, 5, 6, generator=g) < 0.3)
    events = Events.of(x)
    assert events.dtype == dtype and torch.equal(events.dense(), x)
    for transposed in itertools.islice(itertools.permutations(range(3)), 1, 3):
        view = x.permute(*transposed).contiguous().permute(*map(transposed.index, range(3)))
        assert torch.equal(Events.of(view).dense(), x)  # any memory layout


def test_the_event_functions_give_events_for_events_and_dense_for_dense():
    x, _ = count_batch(5, batch=4, steps=12, inputs=6, density=0.3)
    batch = x.shape[0]
    cases = [
        (augment.shift, (torch.tensor([2, -1, 0, 5]), TIME)),
        (augment.shift, (torch.tensor([1, -3, 0, 2]), INPUTS)),
        (augment.stretch_time, (torch.tensor([0.5, 1.0, 1.3, 0.8]),)),
        (augment.mask_ranges, (torch.tensor([[1], [4], [0], [9]]), torch.full((batch, 1), 3), 1)),
        (augment.jitter_events, (torch.randint(-1, 2, (int(x.sum()),), generator=seeded(1)),)),
    ]
    for function, args in cases:
        dense, events = function(x, *args), function(Events.of(x), *args)
        assert isinstance(events, Events) and torch.equal(events.dense(), dense), function


# -- the data module hands its stored events to the augmentation ------------------------------
def test_shd_training_batches_are_augmented_from_their_events_as_from_the_dense_batch(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(shd, "CHECKSUMS", {})  # generated files are not the published ones
    make_shd_files(tmp_path, n_train=20, n_test=6)
    order = ["time_shift", "time_jitter", "channel_shift", "event_drop", "cutmix", "mixup"]
    module = SHDDataModule(
        tmp_path, batch_size=8, num_steps=20, download=False, augment=Augmentation(order)
    )
    module.setup()
    batch = next(iter(module.train_dataloader()))
    dense = shd.densify(batch[0], 20, 700)
    events = shd.batch_events(batch[0], 20, 700)
    assert events.ordered and events.unique and torch.equal(events.dense(), dense)
    listed = Events.of(dense)
    assert all(
        torch.equal(getattr(events, k), getattr(listed, k))
        for k in ("sample", "step", "channel", "value")
    )
    module.trainer = SimpleNamespace(training=True, global_rank=0)
    x, y = module.on_after_batch_transfer(batch, 0)
    module.reset_encoding_generators()
    generator = module.encoding_generator(dense.device, train=True)
    want = module.augment(dense, batch[1], module.num_classes, generator)
    assert torch.equal(x, want[0]) and torch.equal(y, want[1])


def test_event_drop_draws_one_uniform_per_event_in_row_major_order():
    x = torch.zeros(1, 3, 2)
    x[0, 2, 0], x[0, 0, 1] = 1, 3  # events: (0, 1) three times, then (2, 0)
    u = torch.rand(4, generator=seeded(3))
    kept = EventDrop(p=0.5).apply(x, seeded(3))
    assert kept[0, 0, 1] == (u[:3] < 0.5).sum() and kept[0, 2, 0] == (u[3] < 0.5).float()
    assert kept.sum() == (u < 0.5).sum() and kept[0, 1].sum() == 0


def test_a_batch_without_events_stays_empty_through_every_transform():
    x, y = torch.zeros(4, 12, 6), torch.tensor([0, 1, 2, 3])
    settings = SETTINGS | {"channel_shift": {"max_shift": 2}, "channel_mask": {"max_width": 2}}
    out, targets = Augmentation(list(SETTINGS), **settings)(x, y, 5, seeded(0))
    assert torch.equal(out, x) and torch.allclose(targets.sum(dim=1), torch.ones(4))


def test_a_batch_too_large_for_int32_coordinates_is_refused():
    empty = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match=r"too large for int32 coordinates"):
        Events((2**22, 1000, 700), empty, empty, empty, torch.zeros(0))
