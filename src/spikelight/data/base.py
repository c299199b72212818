"""The interface every spikelight dataset shares.

A data module yields batches ``(x, y)`` with ``x`` a float tensor ``[B, T, C]`` (time steps
``T = num_steps``, input channels ``C = num_inputs``) and ``y`` a long tensor ``[B]``. Datasets
whose samples are stored compactly (images, event lists) may return something smaller from
their ``Dataset`` and expand it to ``[B, T, C]`` in :meth:`SpikeDataModule.encode`, which runs per
batch on the training device, so ``T`` copies of a dataset are never materialised.
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

    def __init__(
        self,
        batch_size: int = 128,
        num_steps: int = 100,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
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

    # -- resuming: the training shuffle continues where the checkpoint left it -------------
    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the state of the training loader's random generator.

        Each epoch draws its shuffle order (and worker seeds) from that generator, so a run
        resumed from a checkpoint loads the same batches as an uninterrupted one.
        """
        if self._shuffle_generator is None:
            return {}
        return {"shuffle_generator": self._shuffle_generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_shuffle_state = state_dict.get("shuffle_generator")

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

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.test_set, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        training = self.trainer is not None and self.trainer.training
        return self.encode(x, train=training), y
