"""The shared data-module machinery: DDP batch division and per-worker seeding."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from spikelight.data.base import SpikeDataModule


class NumpyNoise(Dataset):
    """Each item draws from numpy's global RNG, as many augmentation pipelines do."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return torch.tensor(np.random.rand()), torch.tensor(index)


class NoiseModule(SpikeDataModule):
    num_inputs, num_classes, class_names = 1, 1, ["x"]

    def make_splits(self):
        return NumpyNoise(), NumpyNoise(), NumpyNoise()


@pytest.mark.parametrize("world, expected", [(1, 64), (2, 32), (4, 16)])
def test_global_batch_is_divided_by_world_size(world, expected):
    dm = NoiseModule(batch_size=64)
    dm.trainer = SimpleNamespace(world_size=world, training=True)
    assert dm.per_device_batch_size == expected
    assert dm.train_dataloader().batch_size == expected


def test_batch_not_divisible_by_world_size_is_an_error():
    dm = NoiseModule(batch_size=10)
    dm.trainer = SimpleNamespace(world_size=4, training=True)
    with pytest.raises(ValueError, match="batch_size=10"):
        _ = dm.per_device_batch_size


def draws(seed):
    dm = NoiseModule(batch_size=1, num_workers=2, seed=seed)
    return [x.item() for x, _ in dm.val_dataloader()]


def test_workers_get_distinct_reproducible_numpy_seeds():
    first, again = draws(0), draws(0)
    assert first == again  # reproducible
    assert len(set(first)) == len(first)  # workers do not repeat each other's numbers
    assert draws(1) != first
