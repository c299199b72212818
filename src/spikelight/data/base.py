"""The interface every spikelight dataset shares.

A data module yields batches ``(x, y)`` with ``x`` a float tensor ``[B, T, C]`` (time steps
``T = num_steps``, input channels ``C = num_inputs``) and ``y`` a long tensor ``[B]``. Datasets
whose samples are stored compactly (images, event lists) may return something smaller from
their ``Dataset`` and expand it to ``[B, T, C]`` in :meth:`SpikeDataModule.encode`, which runs per
batch on the training device, so ``T`` copies of a dataset are never materialised. During
training only, ``augment`` (if set) then transforms the encoded batch and its labels (given as
:meth:`SpikeDataModule.augment_input` makes it: event datasets hand over their entries).

Random streams: stochastic encodings and augmentations draw from generators seeded from
``seed`` (and the DDP rank). Training uses one stream per device for the whole run, saved in
checkpoints so that a resumed run draws what an uninterrupted one would; every evaluation pass
(each validation run, the test run) restarts its own stream, so evaluating the same model twice
sees the same input.

Protocol: models are selected on the validation split (held out from the training file); the
test split is for reporting the selected model. ``test_every_epoch`` adds the test split as a
second validation loader so each epoch's test accuracy is logged too (``test_epoch/acc``): the
"best epoch on the test set" that many papers report, kept apart from the selected model's
``test/acc`` so that the two are never confused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from spikelight import checks


def check_positive_int(name: str, value: int) -> int:
    """Reject sizes such as ``batch_size=0`` with an error that names the argument."""
    return checks.positive_int(name, int(value) if isinstance(value, np.integer) else value)


class SpikeDataModule(L.LightningDataModule):
    """Base class: splits, seeded loaders, DDP batch division, per-batch encoding.

    Subclasses set ``num_inputs``, ``num_classes`` and ``class_names`` in ``__init__`` (before
    any file is read, so that a model can be built from the config alone) and implement
    :meth:`make_splits`.
    """

    num_inputs: int
    num_classes: int
    class_names: list[str]
    #: How samples become a batch; ``None`` is PyTorch's default. Datasets whose samples have
    #: varying size (event lists) assign a module-level function to ``self.collate_fn`` in
    #: ``__init__`` (an instance attribute, so it is not bound as a method; picklable for workers).
    collate_fn: Callable[[list], Any] | None = None
    #: Training-only transform ``augment(x, y, num_classes, generator) -> (x, y)`` of encoded
    #: batches, given as :meth:`augment_input` makes them
    #: (:class:`~spikelight.data.augment.Augmentation`); ``None``: none. Data modules that take
    #: an ``augment`` argument set it in ``__init__``.
    augment: Callable | None = None

    def __init__(
        self,
        batch_size: int = 128,
        num_steps: int = 100,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool | None = None,
        test_every_epoch: bool = False,
    ) -> None:
        super().__init__()
        self.test_every_epoch = checks.boolean("test_every_epoch", test_every_epoch)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.num_workers = checks.non_negative_int("num_workers", num_workers)
        self.seed = seed
        self.pin_memory = pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._shuffle_generator: torch.Generator | None = None
        self._resumed_shuffle_state: torch.Tensor | None = None
        self._generators: dict[tuple[str, bool], tuple[torch.Generator, object]] = {}
        self._resumed_encoding: dict[str, torch.Tensor] = {}  # device -> training stream state

    # -- to implement -------------------------------------------------------------------
    def make_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        """Return (train, val, test) datasets. Called once, lazily, by :meth:`setup`."""
        raise NotImplementedError

    def encode(
        self, x: torch.Tensor, train: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Turn a collated batch input into ``[B, T, C]`` floats. Identity by default.

        Stochastic encodings draw from ``generator``, or (None) from the module's own seeded,
        resumable stream for the phase.
        """
        return x

    # -- shared machinery ---------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = self.make_splits()

    def sample_batch(self, size: int | None = None) -> torch.Tensor:
        """The first ``size`` (default: ``batch_size``) training samples, encoded ``[B, T, C]``.

        For initialisations that measure the data before training: the same samples on every
        DDP rank, and drawn from no stream that training uses, so resumed runs are unaffected.
        """
        self.setup()
        count = min(size or self.batch_size, len(self.train_set))
        x, _ = (self.collate_fn or default_collate)([self.train_set[i] for i in range(count)])
        return self.encode(x, train=False, generator=torch.Generator().manual_seed(self.seed))

    @property
    def per_device_batch_size(self) -> int:
        """``batch_size`` is the global batch: under DDP each rank loads its share."""
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise ValueError(
                f"data.batch_size={self.batch_size} is not divisible by the world size {world}"
            )
        return self.batch_size // world

    # -- random streams of encodings and augmentations (see the module docstring) ----------
    def _pass_id(self, train: bool) -> object:
        """Identifies one evaluation pass, so each pass restarts its random stream."""
        trainer = self.trainer
        if train or trainer is None:
            return None
        return (str(trainer.state.stage), trainer.current_epoch, trainer.global_step)

    def encoding_generator(self, device: torch.device, train: bool) -> torch.Generator:
        """The seeded generator for this device and phase."""
        key, pass_id = (str(device), train), self._pass_id(train)
        generator, seen_pass = self._generators.get(key, (None, None))
        if generator is None or pass_id != seen_pass:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            seed = np.random.SeedSequence([self.seed, int(train), rank]).generate_state(1)[0]
            generator = torch.Generator(device=device)
            generator.manual_seed(int(seed))
            if train and str(device) in self._resumed_encoding:
                generator.set_state(self._resumed_encoding.pop(str(device)))
            self._generators[key] = (generator, pass_id)
        return generator

    def reset_encoding_generators(self) -> None:
        """Restart all random streams, e.g. to reproduce a run's spikes from the beginning."""
        self._generators.clear()

    # -- resuming: the training shuffle and streams continue where the checkpoint left them --
    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the state of the training loader's and streams' generators.

        Each epoch draws its shuffle order (and worker seeds) from the loader's generator, so a
        run resumed from a checkpoint loads the same batches as an uninterrupted one, and
        encodes and augments them the same way.
        """
        state = {}
        if self._shuffle_generator is not None:
            state["shuffle_generator"] = self._shuffle_generator.get_state()
        for (device, train), (generator, _) in self._generators.items():
            if train:
                state[f"encoding_generator:{device}"] = generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_shuffle_state = state_dict.get("shuffle_generator")
        prefix = "encoding_generator:"
        self._resumed_encoding = {
            key.removeprefix(prefix): value
            for key, value in state_dict.items()
            if key.startswith(prefix)
        }

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        pin = self.pin_memory if self.pin_memory is not None else torch.cuda.is_available()
        # Seeds the shuffle order and, through torch's per-worker seeding, each worker's
        # torch, numpy and random streams: runs with the same seed load the same batches.
        generator = torch.Generator().manual_seed(self.seed)
        if shuffle:
            if self._resumed_shuffle_state is not None:
                generator.set_state(self._resumed_shuffle_state)
                self._resumed_shuffle_state = None
            self._shuffle_generator = generator
        return DataLoader(
            dataset,
            batch_size=self.per_device_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=pin,
            persistent_workers=self.num_workers > 0,
            generator=generator,
            collate_fn=self.collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The validation loader; with ``test_every_epoch``, ``[validation, test]``."""
        self.setup()
        val = self._loader(self.val_set, shuffle=False)
        if self.test_every_epoch:
            return [val, self._loader(self.test_set, shuffle=False)]
        return val

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.test_set, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        training = self.trainer is not None and self.trainer.training
        if training and self.augment:
            x = self.augment_input(x)
            generator = self.encoding_generator(x.device, train=True)
            return self.augment(x, y, self.num_classes, generator)
        return self.encode(x, train=training), y

    def augment_input(self, x):
        """A training batch as ``augment`` takes it: encoded ``[B, T, C]`` by default. Datasets
        stored as events may give :class:`~spikelight.data.events.Events` instead, which the
        augmentation transforms without listing a dense batch's entries first."""
        return self.encode(x, train=True)
