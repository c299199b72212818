"""Augmentation of binned event batches (SHD, SSC) for training: shifts, jitter, stretch, event
drop, SpecAugment-style masks, and the batch mixes mixup and CutMix with their soft labels.

Every transform acts on an encoded batch ``x [B, T, C]`` of event counts per bin and input, on
the training device, after densifying and before the network; the data module applies an
:class:`Augmentation` to training batches only, drawing from its seeded, resumable training
stream (:mod:`spikelight.data.base`). Each transform is a pure function of drawn parameters
(:func:`shift`, :func:`jitter_events`, ...), which the tests check against hand-computed cases,
and a class that draws those parameters from a ``torch.Generator``.

All but the mixes work on the batch's non-zero entries (:class:`~spikelight.data.events.Events`;
SHD batches are ~2 % non-zero): an :class:`Augmentation` lists them once before the first such
transform and writes the dense batch once after the last, so that augmenting costs little next
to a training step (timings: README.md, section Augmentation).

Labels enter as class indices ``y [B]``. A pipeline with a mix turns them into one-hot rows
``[B, K]`` first, and each mix returns ``lam * target_i + (1 - lam) * target_j``; the classifier's
loss takes either form (:func:`spikelight.module.cross_entropy`).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from spikelight import checks
from spikelight.checks import ArgumentError
from spikelight.data.events import Events, as_dense, as_events, same_form

TIME, INPUTS = 1, 2  # dimensions of x [B, T, C]
SIZE_KEYS = {TIME: "data.num_steps", INPUTS: "data.num_inputs"}


# -- pure functions of the drawn parameters ----------------------------------------------
# Each takes a batch x [B, T, C] or its Events and returns the same form: the event functions
# work on the non-zero entries (spikelight.data.events), so that a chain of them in an
# Augmentation lists the entries once and writes the dense batch once.
Batch = Tensor | Events


def shift(x: Batch, shifts: Tensor, dim: int) -> Batch:
    """Sample ``b`` moved by ``shifts[b]`` places along ``dim`` (1: time, 2: inputs): entries
    moved past either end are dropped, and the places they leave are zero."""
    events = as_events(x)
    moved = (events.step if dim == TIME else events.channel) + events.per_entry(shifts)
    place = {"step" if dim == TIME else "channel": moved}
    # one offset per sample keeps each sample's entries apart and in order
    return same_form(x, events.moved(**place, ordered=events.ordered, unique=events.unique))


def jitter_events(x: Batch, offsets: Tensor) -> Batch:
    """Each event moved by its own number of bins ``offsets`` (one per event, in the order of
    :meth:`Events.split`: row-major, an entry of count ``n`` giving ``n`` events); events moved
    outside the sample are dropped."""
    return same_form(x, _jittered(as_events(x).split(), offsets))


def _jittered(units: Events, offsets: Tensor) -> Events:
    return units.moved(step=units.step + offsets)


def stretch_time(x: Batch, factors: Tensor) -> Batch:
    """Bin ``t`` of sample ``b`` moved to ``floor(t * factors[b] + 0.5)`` (``t * factor``
    rounded half up): a factor > 1 slows the sample down, < 1 speeds it up; bins that meet add
    up, bins landing at or after ``T`` are dropped."""
    events = as_events(x)
    steps = events.shape[TIME]
    t = torch.arange(steps, device=events.device, dtype=factors.dtype)
    target = torch.floor(t * factors[:, None] + 0.5).long()  # [B, T]
    # bins that meet interleave their inputs: neither order nor uniqueness is kept
    return same_form(x, events.moved(step=events.per_entry(target, events.step)))


def mask_ranges(x: Batch, starts: Tensor, widths: Tensor, dim: int) -> Batch:
    """``x`` with ``starts[b, m] <= i < starts[b, m] + widths[b, m]`` along ``dim`` set to zero,
    for every sample ``b`` and mask ``m`` (``starts``, ``widths``: ``[B, M]``)."""
    events = as_events(x)
    i = torch.arange(events.shape[dim], device=events.device)
    covered = (i >= starts[..., None]) & (i < (starts + widths)[..., None])  # [B, M, size]
    keep = ~covered.any(dim=1)  # [B, size]
    at = events.step if dim == TIME else events.channel
    return same_form(x, events.select(events.per_entry(keep, at)))


def thin_events(x: Batch, keep: float, generator: torch.Generator | None) -> Batch:
    """Each event kept with probability ``keep``, one uniform draw per event in the order of
    :meth:`Events.split`: a count ``n`` becomes ``Binomial(n, keep)``. (One draw per event, not
    ``torch.binomial`` per entry: as likely, and ~5x cheaper for SHD's counts of mostly 1.)"""
    events = as_events(x).canonical()
    entry = events.event_entries()
    draws = len(events.value) if entry is None else len(entry)
    kept = torch.rand(draws, generator=generator, device=events.device) < keep
    kept = kept.to(events.dtype)
    if entry is not None:  # events back to their entries
        kept = torch.zeros_like(events.value).index_add_(0, entry, kept)
    return same_form(x, dataclasses.replace(events, value=kept).select(kept != 0))


def mix(x: Tensor, y: Tensor, partner: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """Mixup: sample ``b`` becomes ``lam[b] * x[b] + (1 - lam[b]) * x[partner[b]]``, and its
    target ``[B, K]`` likewise."""
    lam = lam.to(x.dtype)
    own, other = lam[:, None, None], (1 - lam)[:, None, None]
    mixed = torch.empty_like(x, memory_format=torch.contiguous_format)
    block = max(1, 2**20 // max(1, math.prod(x.shape[1:])))  # ~2^20 values: small temporaries
    for start in range(0, len(x), block):
        part = slice(start, start + block)
        torch.mul(own[part], x[part], out=mixed[part])
        mixed[part].add_(x[partner[part]].mul_(other[part]))
    return mixed, lam[:, None] * y + (1 - lam)[:, None] * y[partner]


def paste_segment(
    x: Tensor, y: Tensor, partner: Tensor, starts: Tensor, lengths: Tensor, weight: str = "time"
) -> tuple[Tensor, Tensor]:
    """CutMix in time: bins ``starts[b] <= t < starts[b] + lengths[b]`` of sample ``b`` replaced
    by those of ``partner[b]``. The partner's share of the target is the pasted fraction of the
    time (``weight="time"``: ``lengths / T``) or of the new sample's events (``"events"``; the
    time fraction where the new sample has no event)."""
    batch, steps, inputs = x.shape
    t = torch.arange(steps, device=x.device)
    inside = (t >= starts[:, None]) & (t < (starts + lengths)[:, None])  # [B, T]
    sample, step = inside.nonzero().T
    out = x.clone(memory_format=torch.contiguous_format)  # then only the pasted bins: rows
    rows = out.view(batch * steps, inputs)
    rows[sample * steps + step] = x[partner[sample], step]
    share = lengths.to(x.dtype) / steps
    if weight == "events":
        pasted = (out * inside[:, :, None]).sum(dim=(1, 2))
        total = out.sum(dim=(1, 2))
        share = torch.where(total > 0, pasted / total.clamp_min(1e-30), share)
    return out, (1 - share)[:, None] * y + share[:, None] * y[partner]


# -- random draws --------------------------------------------------------------------------
def _chance(p: float, size, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Boolean ``size``: True with probability ``p`` each."""
    return torch.rand(size, generator=generator, device=x.device) < p


def _integers(low: int, high: int, size, x: Tensor, generator) -> Tensor:
    """Uniform integers in ``[low, high]`` (both included)."""
    return torch.randint(low, high + 1, size, generator=generator, device=x.device)


def _below(bounds: Tensor, x: Tensor, generator) -> Tensor:
    """Uniform integers in ``[0, bounds)``, elementwise (``bounds`` >= 1)."""
    drawn = torch.rand(bounds.shape, generator=generator, device=x.device) * bounds
    return torch.minimum(drawn.long(), bounds - 1)  # float rounding can reach the bound


def _beta(alpha: float, size: int, x: Tensor, generator) -> Tensor:
    """``Beta(alpha, alpha)`` draws; torch samples Beta without a generator only, so numpy does,
    seeded from ``generator`` (the draws stay reproducible and resumable)."""
    seed = int(torch.randint(2**62, (1,), generator=generator, device=x.device))
    draws = np.random.default_rng(seed).beta(alpha, alpha, size)
    return torch.as_tensor(draws, dtype=torch.float32, device=x.device)


def _partners(x: Tensor, generator) -> Tensor:
    return torch.randperm(x.shape[0], generator=generator, device=x.device)


# -- transforms ----------------------------------------------------------------------------
class Transform:
    """One step of an :class:`Augmentation`: ``(x [B, T, C], y, generator) -> (x, y)``.

    Label-preserving transforms implement :meth:`apply`; mixes override ``__call__`` and get
    targets ``[B, K]``. Transforms with ``on_events`` take and give the batch in either form,
    dense or :class:`~spikelight.data.events.Events`; an :class:`Augmentation` keeps it as
    events between them. Constructors raise :class:`~spikelight.checks.ArgumentError` naming
    their own argument; :meth:`check_fits` rejects settings a sample of the data is too small
    for.
    """

    needs_counts = False  # reads integer event counts: must come before a mixup
    mixes = False  # combines samples: needs targets [B, K]
    on_events = False  # works on the non-zero entries: applies to Events as well as dense x

    def __call__(self, x: Tensor, y: Tensor, generator=None) -> tuple[Tensor, Tensor]:
        return self.apply(x, generator), y

    def apply(self, x: Tensor, generator=None) -> Tensor:
        raise NotImplementedError

    def check_fits(self, num_steps: int, num_inputs: int) -> None:
        """Raise :class:`ArgumentError` if a sample ``[num_steps, num_inputs]`` is too small."""

    def __repr__(self) -> str:
        values = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({values})"


class _Shift(Transform):
    dim = TIME
    on_events = True

    def __init__(self, max_shift: int = 10, p: float = 1.0) -> None:
        self.max_shift = checks.non_negative_int("max_shift", max_shift)
        self.p = checks.probability("p", p)

    def apply(self, x, generator=None):
        batch = x.shape[0]
        amount = _integers(-self.max_shift, self.max_shift, (batch,), x, generator)
        return shift(x, amount * _chance(self.p, batch, x, generator), self.dim)

    def check_fits(self, num_steps, num_inputs):
        size = num_steps if self.dim == TIME else num_inputs
        if self.max_shift >= size:
            raise ArgumentError(
                "max_shift",
                self.max_shift,
                f"an integer < {SIZE_KEYS[self.dim]}={size} (shifting by all of it empties it)",
            )


class TimeShift(_Shift):
    """With probability ``p``, a sample moves by a random integer number of bins in
    ``[-max_shift, max_shift]``; events moved past either end are dropped."""


class ChannelShift(_Shift):
    """With probability ``p``, all inputs of a sample move by a random integer in
    ``[-max_shift, max_shift]`` (after ``channel_pool``); inputs moved off the range are
    dropped."""

    dim = INPUTS


class TimeJitter(Transform):
    """With probability ``p`` per sample, every event moves by its own random integer number of
    bins in ``[-max_jitter, max_jitter]``; events moved outside the sample are dropped."""

    needs_counts = True
    on_events = True

    def __init__(self, max_jitter: int = 1, p: float = 1.0) -> None:
        self.max_jitter = checks.non_negative_int("max_jitter", max_jitter)
        self.p = checks.probability("p", p)

    def apply(self, x, generator=None):
        units = as_events(x).split()
        offsets = _integers(-self.max_jitter, self.max_jitter, units.step.shape, x, generator)
        chosen = units.per_entry(_chance(self.p, x.shape[0], x, generator))
        offsets = offsets.to(units.step.dtype) * chosen
        return same_form(x, _jittered(units, offsets))

    def check_fits(self, num_steps, num_inputs):
        if self.max_jitter >= num_steps:
            raise ArgumentError(
                "max_jitter", self.max_jitter, f"an integer < data.num_steps={num_steps}"
            )


class TimeStretch(Transform):
    """With probability ``p``, a sample's time axis is scaled by a factor drawn uniformly from
    ``[low, high]``: bin ``t`` goes to ``round(t * factor)`` (see :func:`stretch_time`)."""

    on_events = True

    def __init__(self, low: float = 0.9, high: float = 1.1, p: float = 1.0) -> None:
        self.low = checks.positive("low", low)
        self.high = checks.positive("high", high)
        if self.low > self.high:
            raise ArgumentError("low", low, f"a factor <= high={high!r}")
        self.p = checks.probability("p", p)

    def apply(self, x, generator=None):
        batch = x.shape[0]
        drawn = self.low + (self.high - self.low) * torch.rand(
            batch, generator=generator, device=x.device
        )
        factors = torch.where(_chance(self.p, batch, x, generator), drawn, torch.ones_like(drawn))
        return stretch_time(x, factors)


class EventDrop(Transform):
    """Each event is dropped with probability ``p``: a count ``n`` becomes
    ``Binomial(n, 1 - p)``."""

    needs_counts = True
    on_events = True

    def __init__(self, p: float = 0.1) -> None:
        self.p = checks.probability("p", p)

    def apply(self, x, generator=None):
        return thin_events(x, 1 - self.p, generator)


class _Mask(Transform):
    dim = TIME
    on_events = True

    def __init__(self, max_masks: int = 1, max_width: int = 10, p: float = 1.0) -> None:
        self.max_masks = checks.non_negative_int("max_masks", max_masks)
        self.max_width = checks.non_negative_int("max_width", max_width)
        self.p = checks.probability("p", p)

    def apply(self, x, generator=None):
        size, shape = x.shape[self.dim], (x.shape[0], self.max_masks)
        widths = _integers(0, self.max_width, shape, x, generator)
        widths = widths * _chance(self.p, shape, x, generator)
        starts = _below(size - widths + 1, x, generator)
        return mask_ranges(x, starts, widths, self.dim)

    def check_fits(self, num_steps, num_inputs):
        size = num_steps if self.dim == TIME else num_inputs
        if self.max_width > size:
            key = SIZE_KEYS[self.dim]
            raise ArgumentError("max_width", self.max_width, f"an integer <= {key}={size}")


class TimeMask(_Mask):
    """SpecAugment time masks: ``max_masks`` masks per sample, each applied with probability
    ``p``, zero ``w`` consecutive bins at a random place, ``w`` uniform in ``[0, max_width]``."""


class ChannelMask(_Mask):
    """SpecAugment frequency masks on the inputs: like :class:`TimeMask`, over consecutive
    inputs."""

    dim = INPUTS


class Mixup(Transform):
    """With probability ``p``, a sample becomes ``lam x_i + (1 - lam) x_j`` with a random
    partner ``j`` of the batch and ``lam ~ Beta(alpha, alpha)``; its target likewise. Counts
    become fractional, so event transforms must come before it."""

    mixes = True

    def __init__(self, alpha: float = 0.2, p: float = 1.0) -> None:
        self.alpha = checks.positive("alpha", alpha)
        self.p = checks.probability("p", p)

    def __call__(self, x, y, generator=None):
        batch = x.shape[0]
        partner = _partners(x, generator)
        lam = _beta(self.alpha, batch, x, generator)
        lam = torch.where(_chance(self.p, batch, x, generator), lam, torch.ones_like(lam))
        return mix(x, y, partner, lam)


class CutMix(Transform):
    """With probability ``p``, a time segment of a sample is replaced by the same bins of a
    random partner in the batch (SNN-delays' spectrogram CutMix): its length is
    ``round((1 - lam) T)`` with ``lam ~ Beta(alpha, alpha)`` (``alpha=1``: uniform), its place
    uniform; the partner's label weight is the pasted fraction of ``weight``: ``time`` or
    ``events``."""

    mixes = True

    def __init__(self, alpha: float = 1.0, p: float = 0.5, weight: str = "time") -> None:
        self.alpha = checks.positive("alpha", alpha)
        self.p = checks.probability("p", p)
        self.weight = checks.choice("weight", weight, ("time", "events"))

    def __call__(self, x, y, generator=None):
        batch, steps = x.shape[0], x.shape[TIME]
        partner = _partners(x, generator)
        lengths = torch.floor((1 - _beta(self.alpha, batch, x, generator)) * steps + 0.5).long()
        lengths = lengths * _chance(self.p, batch, x, generator)
        starts = _below(steps - lengths + 1, x, generator)
        return paste_segment(x, y, partner, starts, lengths, self.weight)


#: Config name -> transform, as keys of ``data.augment``.
TRANSFORMS: dict[str, type[Transform]] = {
    "time_shift": TimeShift,
    "time_jitter": TimeJitter,
    "time_stretch": TimeStretch,
    "channel_shift": ChannelShift,
    "event_drop": EventDrop,
    "time_mask": TimeMask,
    "channel_mask": ChannelMask,
    "mixup": Mixup,
    "cutmix": CutMix,
}


class Augmentation:
    """The transforms named in ``order``, applied in that order to training batches.

    ``settings`` maps a name of :data:`TRANSFORMS` to its keyword arguments (or to a built
    :class:`Transform`); names in ``order`` without settings use the defaults. Every setting is
    checked, but only those in ``order`` run, so a preset can list settings to switch on with
    ``data.augment.order``. Errors name the key as the data module's ``augment`` argument:
    ``augment.time_mask.max_width``.
    """

    def __init__(self, order: Sequence[str] = (), **settings: Any) -> None:
        if isinstance(order, str) or not isinstance(order, Sequence):
            raise ArgumentError("augment.order", order, "a list of transform names")
        order = list(order)
        unknown = [name for name in order if name not in TRANSFORMS]
        if unknown:
            raise ArgumentError("augment.order", order, f"names among {list(TRANSFORMS)}")
        for name, value in settings.items():
            if name not in TRANSFORMS:
                raise ArgumentError(
                    f"augment.{name}", value, f"a transform among {list(TRANSFORMS)} or order"
                )
        if len(set(order)) != len(order):
            raise ArgumentError(
                "augment.order", order, "each name once (a mask takes max_masks for several)"
            )
        built = {name: _build(name, value) for name, value in settings.items()}
        self.order = order
        self.transforms = [built[name] if name in built else _build(name, None) for name in order]
        _check_order(order, self.transforms)
        self.mixes = any(transform.mixes for transform in self.transforms)

    def __bool__(self) -> bool:
        return bool(self.transforms)

    def check_fits(self, num_steps: int, num_inputs: int) -> None:
        """Raise :class:`ArgumentError` if a transform does not fit ``[num_steps, num_inputs]``."""
        for name, transform in zip(self.order, self.transforms, strict=True):
            try:
                transform.check_fits(num_steps, num_inputs)
            except ArgumentError as error:
                key = f"augment.{name}.{error.name}"
                raise ArgumentError(key, error.value, error.expected) from None

    def __call__(
        self, x: Tensor, y: Tensor, num_classes: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """The transformed batch; ``y`` becomes targets ``[B, K]`` if a transform mixes."""
        if self.mixes and not y.is_floating_point():
            y = F.one_hot(y, num_classes).to(x.dtype)
        batch = x  # dense, or Events between transforms on_events: listed and written once
        for transform in self.transforms:
            batch = as_events(batch) if transform.on_events else as_dense(batch)
            batch, y = transform(batch, y, generator)
        return as_dense(batch), y

    def __repr__(self) -> str:
        return f"Augmentation({' -> '.join(map(repr, self.transforms)) or 'none'})"


def _build(name: str, value: Any) -> Transform:
    """The transform ``name`` from its settings, errors named ``augment.<name>.<key>``."""
    kind = TRANSFORMS[name]
    if isinstance(value, Transform):
        if not isinstance(value, kind):
            raise ArgumentError(f"augment.{name}", value, f"a {kind.__name__}")
        return value
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ArgumentError(f"augment.{name}", value, f"a mapping of {kind.__name__}'s keys")
    keys = [key for key in inspect.signature(kind).parameters]
    for key in value:
        if key not in keys:
            raise ArgumentError(f"augment.{name}.{key}", value[key], f"a key among {keys}")
    try:
        return kind(**value)
    except ArgumentError as error:
        raise ArgumentError(f"augment.{name}.{error.name}", error.value, error.expected) from None


def _check_order(order: list[str], transforms: list[Transform]) -> None:
    """Event-count transforms cannot follow a mixup, whose counts are fractional."""
    mixed_at = next((i for i, t in enumerate(transforms) if isinstance(t, Mixup)), None)
    if mixed_at is None:
        return
    late = [name for name, t in zip(order, transforms, strict=True) if t.needs_counts]
    late = [name for name in late if order.index(name) > mixed_at]
    if late:
        raise ArgumentError(
            "augment.order",
            order,
            f"{', '.join(late)} before mixup (mixup makes fractional counts; "
            f"{late[0]} works on whole events)",
        )
