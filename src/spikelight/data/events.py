"""The non-zero entries of a binned event batch ``[B, T, C]``, the form in which augmentations
move, drop and count events (:mod:`spikelight.data.augment`).

An SHD batch is ~2 % non-zero, so a transform of its entries costs ~50x less than one of the
dense batch, and a chain of such transforms lists the entries once and writes the dense batch
once. Every operation here gives exactly the batch (and the entry order) that the dense
operation it replaces gives: entries that meet at one place add up in their order, as a dense
scatter adds them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

#: Coordinates are int32 (places in the flat batch int64): half the bytes that every move and
#: selection of entries copies, ~2x faster on CPU.
INDEX = torch.int32


@dataclasses.dataclass(frozen=True)
class Events:
    """Entry ``i`` adds ``value[i]`` at ``(sample[i], step[i], channel[i])`` of a batch of
    ``shape`` ``(B, T, C)``; the coordinates are stored as :data:`INDEX`.

    ``ordered``: the entries run in row-major order of their places (places may repeat).
    ``unique``: no two entries share a place and none is zero. Both: the entries are exactly
    those :meth:`of` lists for :meth:`dense` (the canonical form, which event counts and the
    draws per event refer to).
    """

    shape: tuple[int, int, int]
    sample: Tensor
    step: Tensor
    channel: Tensor
    value: Tensor
    ordered: bool = True
    unique: bool = True

    def __post_init__(self) -> None:
        batch, steps, channels = self.shape
        if batch * max(steps, channels) >= 2**31:
            raise ValueError(f"a batch of shape {self.shape} is too large for int32 coordinates")
        for name in ("sample", "step", "channel"):
            if getattr(self, name).dtype != INDEX:
                object.__setattr__(self, name, getattr(self, name).to(INDEX))

    @classmethod
    def of(cls, x: Tensor) -> Events:
        """The non-zero entries of ``x [B, T, C]``, in row-major order."""
        flat = x.reshape(-1)
        places = flat.nonzero().squeeze(1)
        sample, step, channel = torch.unravel_index(places, x.shape)
        return cls(tuple(x.shape), sample, step, channel, flat.index_select(0, places))

    @classmethod
    def listed(cls, shape, sample: Tensor, step: Tensor, channel: Tensor, value: Tensor) -> Events:
        """Entries given in any order, the flags found from them (one pass over the entries)."""
        events = cls(tuple(shape), sample, step, channel, value, ordered=False, unique=False)
        places = events.places()
        ordered = bool((places[1:] >= places[:-1]).all())
        unique = ordered and bool((places[1:] > places[:-1]).all()) and bool((value != 0).all())
        return dataclasses.replace(events, ordered=ordered, unique=unique)

    @property
    def device(self) -> torch.device:
        return self.value.device

    @property
    def dtype(self) -> torch.dtype:
        return self.value.dtype

    def places(self) -> Tensor:
        """Each entry's index into the flattened batch (row-major)."""
        _, steps, channels = self.shape
        return (self.sample.long() * steps + self.step) * channels + self.channel

    def per_entry(self, table: Tensor, at: Tensor | None = None) -> Tensor:
        """``table[sample]`` (``table [B]``) or ``table[sample, at]`` (``[B, S]``) of every
        entry (by index_select: several times faster on CPU than advanced indexing)."""
        if not (table.is_floating_point() or table.dtype == torch.bool):
            table = table.to(INDEX)  # small; the entries' values then stay int32 too
        if at is None:
            return table.index_select(0, self.sample)
        return table.reshape(-1).index_select(0, self.sample * table.shape[1] + at)

    def dense(self) -> Tensor:
        """The batch ``[B, T, C]``: zero where no entry is, entries at one place added."""
        out = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        out.view(-1).index_put_((self.places(),), self.value, accumulate=not self.unique)
        return out

    def take(self, index: Tensor, **order: bool) -> Events:
        """Entries ``index`` (long), in that order; ``order`` updates ``ordered``/``unique``."""
        return dataclasses.replace(
            self,
            sample=self.sample.index_select(0, index),
            step=self.step.index_select(0, index),
            channel=self.channel.index_select(0, index),
            value=self.value.index_select(0, index),
            **order,
        )

    def select(self, keep: Tensor) -> Events:
        """The entries where ``keep`` (boolean, one per entry) holds, in their order."""
        index = keep.nonzero().squeeze(1)  # then index_select: faster than 4 boolean masks
        return self if len(index) == len(keep) else self.take(index)

    def moved(self, step: Tensor | None = None, channel: Tensor | None = None, **order) -> Events:
        """The entries at new steps or channels, those outside the batch dropped. ``order``
        (``ordered=``, ``unique=``) states what the move preserves; by default nothing."""
        _, steps, channels = self.shape
        inside, changes = None, {"ordered": False, "unique": False} | order
        for name, new, size in (("step", step, steps), ("channel", channel, channels)):
            if new is not None:
                within = (new >= 0) & (new < size)
                inside = within if inside is None else inside & within
                changes[name] = new
        moved = dataclasses.replace(self, **changes)
        return moved if inside is None else moved.select(inside)

    def canonical(self) -> Events:
        """The same batch listed as :meth:`of` lists it: entries at one place added (in their
        order), zero sums left out, row-major order."""
        if self.ordered and self.unique:
            return self
        places, value, order = self.places(), self.value, None
        if not self.ordered:
            places, order = torch.sort(places, stable=True)
            value = value.index_select(0, order)
        first = torch.ones_like(places, dtype=torch.bool)
        first[1:] = places[1:] != places[:-1]
        starts = first.nonzero().squeeze(1)  # of each run of entries at one place
        if len(starts) < len(places):
            value = torch.zeros(len(starts), dtype=self.dtype, device=self.device).index_add_(
                0, first.cumsum(0) - 1, value
            )
        index = starts if order is None else order.index_select(0, starts)
        merged = dataclasses.replace(self.take(index, ordered=True, unique=True), value=value)
        nonzero = value != 0
        return merged if bool(nonzero.all()) else merged.select(nonzero)  # all() < nonzero()

    def event_entries(self) -> Tensor | None:
        """The entry of each event of a canonical list: an entry of count ``n`` ``n`` times in
        a row (the counts are the values cut to whole numbers); ``None`` if every count is 1,
        so that the entries are the events."""
        counts = self.value.long()
        if bool((counts == 1).all()):
            return None
        return torch.repeat_interleave(counts, output_size=int(counts.sum()))

    def split(self) -> Events:
        """One entry of value 1 per event, in the canonical order (see :meth:`event_entries`)."""
        events = self.canonical()
        entry = events.event_entries()
        units = events if entry is None else events.take(entry, unique=False)
        return dataclasses.replace(units, value=torch.ones_like(units.value))


def as_events(x: Tensor | Events) -> Events:
    """``x`` as :class:`Events` (listed once if it is a dense batch)."""
    return x if isinstance(x, Events) else Events.of(x)


def as_dense(x: Tensor | Events) -> Tensor:
    """``x`` as a dense batch ``[B, T, C]``."""
    return x.dense() if isinstance(x, Events) else x


def same_form(like: Tensor | Events, events: Events) -> Tensor | Events:
    """``events`` in the form of ``like``: dense if ``like`` is a tensor."""
    return events.dense() if isinstance(like, Tensor) else events
