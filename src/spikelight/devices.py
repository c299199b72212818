"""One GPU per job when a sweep runs several jobs at once on one machine.

Parallel launchers reuse their worker processes (joblib/loky), so ``CUDA_VISIBLE_DEVICES`` set
per job is ignored once CUDA is initialised in a worker, and ``job.num % n_gpus`` puts two jobs
on one GPU as soon as their run times differ. Instead each job claims a free device: it holds an
exclusive :func:`fcntl.flock` on ``<lock_dir>/gpu<id>.lock`` for its whole life and passes
``devices=[index]`` to the trainer. The OS drops the lock when the job ends or its process dies,
so a crashed job never leaves a GPU reserved. Locks are per machine: keep ``lock_dir`` on a local
disk (flock on network file systems is unreliable).
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "SPIKELIGHT_GPU_LOCK_DIR"
#: Launchers that run several jobs at once in one machine's worker processes.
PARALLEL_LAUNCHERS = ("JoblibLauncher",)
GPU_ACCELERATORS = ("auto", "gpu", "cuda")


def claims_gpu(cfg: DictConfig) -> bool:
    """Whether this run claims a GPU: ``claim_gpu=true``, or ``auto`` under a parallel launcher.

    Only runs whose ``trainer.accelerator`` may pick a GPU claim one (``cpu`` runs never do).
    """
    setting = cfg.get("claim_gpu", "auto")
    if setting == "auto":
        target = ""
        if HydraConfig.initialized():
            target = str(HydraConfig.get().launcher.get("_target_", ""))
        setting = target.endswith(PARALLEL_LAUNCHERS)
    return setting is True and cfg.trainer.get("accelerator") in GPU_ACCELERATORS


def default_lock_dir() -> Path:
    """``$SPIKELIGHT_GPU_LOCK_DIR``, else ``<tmp>/spikelight-gpu-locks-<uid>`` (local disk)."""
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(tempfile.gettempdir()) / f"spikelight-gpu-locks-{os.getuid()}"


def device_names(n_devices: int) -> list[str]:
    """Lock-file names of the visible devices: physical ids from ``CUDA_VISIBLE_DEVICES``.

    Index ``k`` of a job (``cuda:k``) is the ``k``-th visible device; naming its lock after the
    physical id keeps jobs with different ``CUDA_VISIBLE_DEVICES`` from sharing a GPU.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else []
    if len(ids) < n_devices:
        ids = [str(k) for k in range(n_devices)]
    return ids[:n_devices]


def _try_lock(path: Path):
    """The open, exclusively flock'ed file at ``path``, or None if another process holds it."""
    handle = open(path, "a+")  # noqa: SIM115  (kept open: the lock lives as long as the handle)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")  # who holds it, for `cat gpu*.lock`
    handle.flush()
    return handle


@contextmanager
def claim_device(
    n_devices: int, lock_dir: str | os.PathLike | None = None, poll_s: float = 2.0
) -> Iterator[int | None]:
    """Hold a free device index in ``[0, n_devices)`` for the body; ``None`` if there are none.

    Tries the devices in order without blocking and takes the first free one; when all are held
    by other processes it polls every ``poll_s`` seconds until one is released.
    """
    if n_devices < 0:
        raise ValueError(f"n_devices={n_devices!r}: expected a count >= 0")
    if n_devices == 0:
        yield None
        return
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    names = device_names(n_devices)
    announced = False
    while True:
        for index, name in enumerate(names):
            handle = _try_lock(lock_dir / f"gpu{name}.lock")
            if handle is None:
                continue
            log.info("Claimed GPU %s (cuda:%d), lock %s", name, index, handle.name)
            try:
                yield index
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if not announced:
            announced = True
            log.info("All %d GPUs are claimed (locks in %s); waiting", n_devices, lock_dir)
        time.sleep(poll_s)
