"""Check a composed config up front, so bad input fails in seconds with one clear message.

:func:`validate_config` runs at the start of :func:`spikelight.train.train`, before anything is
built or written: every problem it finds is reported at once, each as ``key=value: expected
...``. :func:`~spikelight.checkpoint_io.validate_checkpoint` (also importable from here) runs
once the model exists, so a checkpoint of another architecture fails before any loop starts.
Each constructor owns the rules of its own arguments (:mod:`spikelight.checks`); this module
builds every config group as the run would, without reading a file, and puts the group's key in
front of a constructor's error. What it checks itself is what no single constructor can see:
the run mode, the checkpoint, the devices, the data and cache directories, and synaptic delays
against the sample length.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from omegaconf import DictConfig, ListConfig, OmegaConf

from spikelight.checkpoint_io import abbreviate, validate_checkpoint
from spikelight.checks import ArgumentError, ConfigError
from spikelight.configs import shadowed_configs
from spikelight.devices import claims_gpu
from spikelight.loggers import LOGGER_PACKAGES
from spikelight.network import WEIGHT_SELECTIONS, selected_names
from spikelight.weight_init import FluctuationDriven

_ABSENT = object()
__all__ = ["ConfigError", "validate_checkpoint", "validate_config"]


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class _Checker:
    """Collects problems as ``key=value: expected ...`` lines."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.problems: list[str] = []

    def get(self, key: str) -> Any:
        try:
            value = OmegaConf.select(self.cfg, key, default=_ABSENT, throw_on_missing=True)
        except Exception as error:  # unresolvable interpolation, ??? value
            self.problems.append(f"{key}: expected a value that resolves ({error})")
            return _ABSENT
        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True)
        return value

    def fail(self, key: str, value: Any, expected: str) -> None:
        self.problems.append(f"{key}={value!r}: expected {expected}")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every invalid value in ``cfg``; return if all is well."""
    check = _Checker(cfg)
    _check_config_sources(check)
    _check_run(check)
    _check_parallelism(check)
    _check_precision(check)
    _check_logger_packages(check)
    data = _check_groups(check)
    _check_delays(check)
    if data is not None:
        _check_data_placement(check, data)
    if check.problems:
        raise ConfigError(check.problems)


def _check_config_sources(check: _Checker) -> None:
    """A user's config named like one of spikelight's is never read (Hydra reads ours first)."""
    if not HydraConfig.initialized():
        return
    sources = OmegaConf.to_container(HydraConfig.get().runtime.config_sources)
    for option, folder, hidden in shadowed_configs(sources):
        first = hidden[0].removesuffix(".yaml")
        group, _, name = first.rpartition("/")
        example = f"{group}/my_{name}.yaml" if group else f"my_{name}.yaml, --config-name my_{name}"
        check.fail(
            option,
            folder,
            f"config names that spikelight's own configs do not use: Hydra reads spikelight's "
            f"{abbreviate(hidden)} and ignores yours; rename them (e.g. {example})",
        )


def _check_run(check: _Checker) -> None:
    train, test, ckpt = check.get("train"), check.get("test"), check.get("ckpt_path")
    if not train and not test:
        check.fail("train", train, "train=true or test=true (both false: nothing to do)")
    if not train and test and ckpt is None:
        check.fail("ckpt_path", ckpt, "the path of a checkpoint to test when train=false")
    if ckpt is not None:
        path = Path(str(ckpt)).expanduser()
        if not path.is_file():
            check.fail("ckpt_path", ckpt, "an existing checkpoint file")
        elif not os.access(path, os.R_OK):
            check.fail("ckpt_path", ckpt, "a readable checkpoint file")


#: Strategies whose ranks > 0 Lightning starts by re-running the command line (sys.argv).
RELAUNCHING_STRATEGIES = ("ddp", "fsdp", "deepspeed")
#: Strategies that start their ranks in-process instead (no re-run of the command).
IN_PROCESS_STRATEGIES = ("spawn", "fork", "notebook")


def _world_size(devices: Any, nodes: Any) -> int | None:
    """Processes a trainer starts from ``devices``/``num_nodes``; None if only known at run time."""
    if _is_positive_int(devices):
        count = devices
    elif isinstance(devices, list | tuple):
        count = len(devices)
    elif isinstance(devices, str) and devices.strip().isdigit():
        count = int(devices)
    else:  # "auto", -1, "0,1": every visible device
        return None
    return count * (nodes if _is_positive_int(nodes) else 1)


def _check_parallelism(check: _Checker) -> None:
    """GPU claiming needs one device per job; re-launching DDP cannot run inside a multirun."""
    claim = check.get("claim_gpu")
    if claim is not _ABSENT and claim not in (True, False, "auto"):
        check.fail("claim_gpu", claim, "true, false or auto")
        return
    devices = check.get("trainer.devices")
    if claims_gpu(check.cfg) and devices != 1:
        check.fail(
            "trainer.devices",
            devices,
            "1 when each job claims its own GPU (claim_gpu, hydra/launcher=parallel); for "
            "several GPUs per run use claim_gpu=false and a single run or SLURM",
        )
    strategy = check.get("trainer.strategy")
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if not (multirun and isinstance(strategy, str)):
        return
    name = strategy.lower()
    relaunches = name.startswith(RELAUNCHING_STRATEGIES) and not any(
        word in name for word in IN_PROCESS_STRATEGIES
    )
    world = _world_size(devices, check.get("trainer.num_nodes"))
    ranks_exist = SLURMEnvironment.detect() or TorchElasticEnvironment.detect()
    if relaunches and world != 1 and not ranks_exist:
        check.fail(
            "trainer.strategy",
            strategy,
            "no re-launching strategy in a multirun (-m): Lightning starts DDP ranks > 0 by "
            "re-running the command line, which would start the whole sweep again. Instead run "
            "one GPU per job (hydra/launcher=parallel, trainer.devices=1), or "
            "trainer.strategy=ddp_spawn, or let SLURM create the ranks (hydra/launcher=slurm "
            "hydra.launcher.tasks_per_node=N hydra.launcher.gpus_per_node=N trainer.devices=N)",
        )


#: Lightning's precision settings (``trainer.precision``); the fused layers compute in float32
#: under the mixed ones and in float64 under ``64-true``.
PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-mixed", "16-mixed", "bf16-true", "16-true")


def _check_precision(check: _Checker) -> None:
    precision = check.get("trainer.precision")
    if precision is not _ABSENT and str(precision) not in PRECISIONS:
        check.fail("trainer.precision", precision, f"one of {', '.join(PRECISIONS)}")


def _build(check: _Checker, group: str, make: Callable[[], Any], keys=None) -> Any:
    """``make()``, or None with its error recorded under the config key of ``group``.

    ``keys`` maps an argument name to a key outside the group (the neuron's ``trainable``
    argument is the top-level ``trainable`` selection).
    """
    try:
        return make()
    except InstantiationException as error:
        cause = error.__cause__ or error
    except (ValueError, TypeError) as error:
        cause = error
    if isinstance(cause, ArgumentError):
        key = (keys or {}).get(cause.name)
        check.problems.append(
            f"{key}={cause.value!r}: expected {cause.expected}" if key else cause.under(group)
        )
    elif isinstance(cause, TypeError) and "unexpected keyword" in str(cause):
        target = str(check.get(f"{group}._target_")).rsplit(".", 1)[-1]
        check.problems.append(
            f"{group}: {cause} ({target} has no such key; a preset may set a key of another "
            f"{group} option: drop it with ~{group}.<key>)"
        )
    else:  # messages that name their key already, or errors of the config itself
        message = str(cause)
        check.problems.append(message if message.startswith(f"{group}.") else f"{group}: {message}")
    return None


def _check_groups(check: _Checker) -> Any:
    """Build each config group as the run will (no file is read); return the data module.

    Each constructor owns the rules of its arguments; a failure is reported with the group's key
    (``neuron.tau_mem=-0.01: expected a finite number > 0``). The network and the model are
    built only when their groups are valid, so one mistake is reported once.
    """
    cfg, before = check.cfg, len(check.problems)
    surrogate = _build(check, "surrogate", lambda: instantiate(cfg.surrogate))
    tau_init = _build(check, "init", lambda: instantiate(cfg.init))
    data = _build(check, "data", lambda: instantiate(cfg.data))
    factory = _build(check, "neuron", lambda: instantiate(cfg.neuron))
    neuron = None
    if factory is not None:
        neuron = _build(
            check, "neuron", lambda: factory(size=1, surrogate=surrogate, tau_init=tau_init)
        )
    if neuron is not None:
        names = selected_names(check.get("trainable") or ())
        _build(
            check,
            "neuron",
            lambda: factory(size=1, surrogate=surrogate, trainable=names - set(WEIGHT_SELECTIONS)),
            keys={"trainable": "trainable"},
        )
    if "weight_init" in cfg:
        weight_init = _build(check, "weight_init", lambda: instantiate(cfg.weight_init))
        if isinstance(weight_init, FluctuationDriven) and neuron is not None:
            _build(check, "weight_init", lambda: weight_init.spike_probability(neuron.dt))
    if len(check.problems) > before:
        return data
    network = _build(
        check,
        "model.network",
        lambda: instantiate(cfg.model.network),
        keys={"trainable": "trainable"},
    )
    if network is not None:
        _build(check, "model", lambda: instantiate(cfg.model, network=network))
        steps = check.get("data.num_steps")
        if isinstance(steps, int) and network.ignore_steps >= steps:
            check.fail(
                "model.network.ignore_steps",
                network.ignore_steps,
                f"fewer than the data.num_steps={steps} time steps (the readout steps decoded)",
            )
    return data


def _check_delays(check: _Checker) -> None:
    """A delay must be shorter than a sample, or a spike delayed by it never arrives."""
    max_delay, steps = check.get("model.network.delays.max_delay"), check.get("data.num_steps")
    if _is_positive_int(max_delay) and _is_positive_int(steps) and max_delay >= steps:
        check.fail(
            "model.network.delays.max_delay",
            max_delay,
            f"fewer steps than a sample has (data.num_steps={steps})",
        )


def _check_data_placement(check: _Checker, data: Any) -> None:
    """The global batch splits evenly over the devices; files to read exist."""
    batch, devices = data.batch_size, check.get("trainer.devices")
    nodes = check.get("trainer.num_nodes")
    world = (devices if _is_positive_int(devices) else 1) * (
        nodes if _is_positive_int(nodes) else 1
    )
    if batch % world:
        check.fail("data.batch_size", batch, f"a multiple of the {world} devices (global batch)")
    if getattr(data, "download", None) is False and hasattr(data, "data_dir"):
        data_dir = check.get("data.data_dir")
        path = Path(str(data_dir)).expanduser()
        if not path.is_dir():
            check.fail(
                "data.data_dir",
                data_dir,
                "an existing directory holding the data files (data.download=false), "
                "or data.download=true",
            )
        elif not os.access(path, os.R_OK | os.X_OK):
            check.fail("data.data_dir", data_dir, "a readable directory")
    if isinstance(getattr(data, "cache_dir", None), Path) and not _creatable(data.cache_dir):
        check.fail(
            "data.cache_dir",
            check.get("data.cache_dir"),
            "a writable directory, or one that can be created (binned data and decompressed "
            "copies go there, never into data.data_dir)",
        )


def _creatable(directory: Path) -> bool:
    """Whether ``directory`` is a writable directory or can be made inside one (nothing made)."""
    for path in (directory, *directory.parents):
        if path.exists():
            return path.is_dir() and os.access(path, os.W_OK | os.X_OK)
    return False


def _check_logger_packages(check: _Checker) -> None:
    """A logger whose optional package is missing (``logger=wandb``) fails here, not mid-run."""
    loggers = check.cfg.get("logger")
    if not isinstance(loggers, DictConfig):
        return
    for name in loggers:
        target = check.get(f"logger.{name}._target_")
        kind = str(target).rsplit(".", 1)[-1]
        if kind not in LOGGER_PACKAGES:
            continue
        module, extra = LOGGER_PACKAGES[kind]
        if importlib.util.find_spec(module) is None:
            check.problems.append(
                f"logger={name}: {kind} needs the {module} package, which is not installed: "
                f"pip install 'spikelight[{extra}]'"
            )
