"""GPU claiming for parallel sweeps, tested on CPU with a faked device count."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time

import pytest
import torch

from spikelight import train as train_module
from spikelight.devices import claim_device, claims_gpu
from spikelight.validation import ConfigError, validate_config
from tests.conftest import compose_config


def test_held_devices_are_not_given_out_again(tmp_path):
    with claim_device(2, tmp_path) as first, claim_device(2, tmp_path) as second:
        assert {first, second} == {0, 1}
        third: list[int] = []
        waiter = threading.Thread(target=lambda: _claim_into(third, tmp_path), daemon=True)
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and third == []  # both devices held: it waits
    waiter.join(5)
    assert third == [0]  # and takes the first device released


def _claim_into(out: list, lock_dir, n_devices: int = 2) -> None:
    with claim_device(n_devices, lock_dir, poll_s=0.05) as index:
        out.append(index)


def _hold(lock_dir: str, result_file: str, hold_s: float) -> None:
    """In a child process: claim one of 2 devices, hold it, record (device, start, end)."""
    with claim_device(2, lock_dir, poll_s=0.02) as index:
        start = time.monotonic()
        time.sleep(hold_s)
        end = time.monotonic()
    with open(result_file, "w") as handle:
        json.dump([index, start, end], handle)


def test_concurrent_processes_never_share_a_device(tmp_path):
    """Six processes, two devices: each device has at most one holder at any time."""
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_hold, args=(str(tmp_path), str(tmp_path / f"r{i}.json"), 0.2))
        for i in range(6)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    holds = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(6)]
    assert {device for device, _, _ in holds} == {0, 1}
    for device in (0, 1):
        spans = sorted((start, end) for d, start, end in holds if d == device)
        for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
            assert next_start >= end  # the next holder started after the previous one ended


def test_a_killed_holder_releases_its_device(tmp_path):
    context = multiprocessing.get_context("fork")
    holder = context.Process(target=_hold, args=(str(tmp_path), str(tmp_path / "r.json"), 60))
    holder.start()
    lock = tmp_path / "gpu0.lock"
    deadline = time.monotonic() + 10
    while not (lock.exists() and f"pid {holder.pid}" in lock.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: _claim_into(got, tmp_path, 1), daemon=True)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and got == []  # held by the child
    os.kill(holder.pid, signal.SIGKILL)  # no clean-up code runs: the OS drops the lock
    holder.join(10)
    waiter.join(5)
    assert got == [0]


def test_no_devices_means_the_cpu(tmp_path):
    with claim_device(0, tmp_path) as index:
        assert index is None
    assert not any(tmp_path.iterdir())  # no lock files for nothing


def test_claiming_is_automatic_only_under_a_parallel_launcher():
    assert not claims_gpu(compose_config([]))  # claim_gpu=auto, no launcher: a single run
    assert claims_gpu(compose_config(["claim_gpu=true"]))
    assert not claims_gpu(compose_config(["claim_gpu=true", "trainer=cpu"]))


def test_a_claimed_fake_gpu_becomes_the_trainers_device(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKELIGHT_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cfg = compose_config(["claim_gpu=true"])
    with claim_device(2, tmp_path) as taken, train_module._claimed_device(cfg) as settings:
        assert taken == 0
        assert settings == {"accelerator": "gpu", "devices": [1]}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with train_module._claimed_device(cfg) as settings:
        assert settings == {"accelerator": "cpu", "devices": 1}


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["claim_gpu=true", "trainer.devices=2"], "trainer.devices"),
        (["claim_gpu=yes"], "claim_gpu"),
    ],
)
def test_bad_claim_settings_are_refused(overrides, key):
    with pytest.raises(ConfigError, match=key):
        validate_config(compose_config(overrides))
