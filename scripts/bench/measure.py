"""Measurements of a built row: step time (round robin), saved-for-backward bytes, peak memory.

On CPU the peak is measured in a fresh interpreter per row: ``scripts/benchmark.py --_child``
runs :func:`child_main` there.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from . import log
from .cases import Case, Setup, make_setup
from .registry import Bench, implementations

SCRIPT = Path(__file__).resolve().parents[1] / "benchmark.py"  # the entry point the child runs
MMAP_THRESHOLD = 16384  # bytes; glibc serves larger blocks by mmap, unmapped again on free


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(bench: Bench, device: torch.device) -> float:
    """Seconds of one ``bench.step()`` (device synchronised; Python GC paused)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        sync(device)
        start = time.perf_counter()
        bench.step()
        sync(device)
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def time_round_robin(
    benches: dict[str, Bench], device: torch.device, warmup: int, repeats: int, label: str = ""
) -> dict[str, list[float]]:
    """Warm-up steps, then ``repeats`` rounds timing one step of each bench (rotating order)."""
    names = list(benches)
    for name in names:
        for _ in range(warmup):
            benches[name].step()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(timed_step(benches[name], device))
        gc.collect()
        if (r + 1) % max(1, repeats // 4) == 0 or r + 1 == repeats:
            log(f"  {label}round {r + 1}/{repeats}")
    return times


def saved_bytes(bench: Bench, setup: Setup) -> int:
    """Bytes of the distinct storages saved for backward by one forward, without weights/input."""
    excluded = {p.untyped_storage().data_ptr() for p in bench.module.parameters()}
    excluded.add(setup.x.untyped_storage().data_ptr())
    storages: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            key, size = (str(t.device), storage.data_ptr()), storage.nbytes()
            if storage.data_ptr() in excluded:
                return t
        except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
            key, size = (str(t.device), id(t)), t.numel() * t.element_size()
        storages[key] = size
        return t

    bench.module.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = bench.forward()
    total = sum(storages.values())
    del loss
    return total


def proc_status() -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of this process in bytes (Linux)."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set size to the current one
        return True
    except OSError:
        return False


class RssSampler:
    """Fallback where VmHWM cannot be reset: the largest RSS seen, sampled every 0.5 ms."""

    def __init__(self) -> None:
        self.peak = proc_status()["VmRSS"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, proc_status()["VmRSS"])
            time.sleep(0.0005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def peak_step_memory(bench: Bench, device: torch.device, steps: int = 3) -> dict:
    """Peak memory growth of a training step over the memory in use before it (bytes).

    One warm-up step first (lazy initialisation, thread pools); then the median growth over
    ``steps`` steps. CPU: resident set size, meaningful in a fresh process (see ``--_child``).
    """
    bench.step()
    gc.collect()
    peaks = []
    for _ in range(steps):
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            bench.step()
            torch.cuda.synchronize(device)
            peaks.append(torch.cuda.max_memory_allocated(device) - before)
            method = "cuda_max_memory_allocated"
        elif reset_peak_rss():
            before = proc_status()["VmRSS"]
            bench.step()
            peaks.append(proc_status()["VmHWM"] - before)
            method = "rss_hwm"
        else:
            before = proc_status()["VmRSS"]
            with RssSampler() as sampler:
                bench.step()
            peaks.append(sampler.peak - before)
            method = "rss_sampled"
    return {"peak_bytes": statistics.median(peaks), "peak_bytes_each": peaks, "method": method}


def child_main(spec: dict) -> dict:
    """``--_child``: build one implementation in this fresh process and measure its peak."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    setup = make_setup(Case(**spec["case"]), device)
    bench = implementations()[spec["impl"]].build(setup)
    return peak_step_memory(bench, device)


def peak_memory_subprocess(impl: str, case: Case, device: torch.device, timeout: float) -> dict:
    """Run :func:`child_main` in a fresh interpreter (glibc: freed buffers returned to the OS)."""
    spec = {
        "impl": impl,
        "case": dataclasses.asdict(case),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    env["GLIBC_TUNABLES"] = f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--_child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"memory subprocess for {impl!r} failed: {' | '.join(tail)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) of ``values``."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, statistics.median(values), q3


def measure_peak(name: str, setup: Setup, child_timeout: float) -> dict:
    """Peak step memory of implementation ``name``: CUDA in-process, CPU in a subprocess."""
    if setup.device.type == "cuda":  # the CUDA allocator's counters are exact in-process
        peak = peak_step_memory(implementations()[name].build(setup), setup.device)
        gc.collect()
        return peak
    return peak_memory_subprocess(name, setup.case, setup.device, child_timeout)
