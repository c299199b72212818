"""Check a composed config up front, so bad input fails in seconds with one clear message.

:func:`validate_config` runs at the start of :func:`spikelight.train.train`, before anything is
built or written: every problem it finds is reported at once, each as ``key=value: expected
...``. :func:`validate_checkpoint` runs once the model exists and compares a checkpoint's
``state_dict`` with it, so a checkpoint of another architecture fails before any loop starts.
The modules keep their own argument checks (they are usable without a config); this module is
the one place that knows the config's keys.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from omegaconf import DictConfig, ListConfig, OmegaConf

from spikelight.configs import shadowed_configs
from spikelight.devices import claims_gpu
from spikelight.network import DECODINGS, TIME_LOOPS, WEIGHT_SELECTIONS, selected_names
from spikelight.neurons.adlif import DISCRETIZATIONS
from spikelight.neurons.base import RESET_MODES
from spikelight.weight_init import FluctuationDriven

_ABSENT = object()
TIME_CONSTANTS = ("tau_mem", "tau_syn", "tau_adapt")
MEMBRANE_DECODINGS = ("max_membrane", "mean_membrane")
FILE_DATASETS = ("MNISTDataModule", "SHDDataModule")  # read data_dir; may not download


class ConfigError(ValueError):
    """The config asks for something impossible; the message names each key and value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"invalid config: {self.problems[0]}"
        else:
            message = "invalid config:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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

    def positive(self, key: str, optional: bool = False) -> float | None:
        """A finite number > 0 (or absent/None when ``optional``); returns it if valid."""
        value = self.get(key)
        if value is _ABSENT or (optional and value is None):
            return None
        if not (_is_number(value) and math.isfinite(value) and value > 0):
            self.fail(key, value, "a finite number > 0")
            return None
        return float(value)

    def non_negative(self, key: str) -> None:
        value = self.get(key)
        if value is not _ABSENT and not (_is_number(value) and math.isfinite(value) and value >= 0):
            self.fail(key, value, "a finite number >= 0")

    def finite(self, key: str) -> None:
        value = self.get(key)
        if value is not _ABSENT and not (_is_number(value) and math.isfinite(value)):
            self.fail(key, value, "a finite number")

    def positive_int(self, key: str) -> None:
        value = self.get(key)
        if value is not _ABSENT and not _is_positive_int(value):
            self.fail(key, value, "an integer >= 1")

    def choice(self, key: str, options: tuple[str, ...]) -> None:
        value = self.get(key)
        if value is not _ABSENT and value not in options:
            self.fail(key, value, f"one of {list(options)}")

    def boolean(self, key: str) -> None:
        value = self.get(key)
        if value is not _ABSENT and not isinstance(value, bool):
            self.fail(key, value, "true or false")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every invalid value in ``cfg``; return if all is well."""
    check = _Checker(cfg)
    _check_config_sources(check)
    _check_run(check)
    _check_parallelism(check)
    neuron_ok = _check_neuron(check)
    surrogate_ok = check.positive("surrogate.beta") is not None
    if neuron_ok and surrogate_ok:
        _check_trainable(check)
    _check_network(check)
    _check_optimizer(check)
    _check_data(check)
    _check_init(check)
    _check_weight_init(check)
    _check_surrogate_switches(check)
    _check_adaptation(check)
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
            f"{_abbreviate(hidden)} and ignores yours; rename them (e.g. {example})",
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


def _check_neuron(check: _Checker) -> bool:
    """Values of the neuron group; True if they are all valid (so the neuron can be built)."""
    before = len(check.problems)
    dt = check.positive("neuron.dt")
    for name in TIME_CONSTANTS:
        key = f"neuron.{name}"
        if check.get(key) is _ABSENT:
            continue
        tau = check.positive(key)
        if tau is not None and dt is not None and not tau > dt:
            check.fail(key, tau, f"a time constant larger than neuron.dt={dt:g} s")
        bounds = check.get(f"{key}_bounds")
        if bounds is _ABSENT:
            continue
        if not (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(_is_number(b) and math.isfinite(b) for b in bounds)
            and 0 < bounds[0] < bounds[1]
        ):
            check.fail(f"{key}_bounds", bounds, "[min, max] with 0 < min < max (seconds)")
        elif tau is not None and not bounds[0] <= tau <= bounds[1]:
            check.fail(key, tau, f"a value inside {key}_bounds={bounds}")
    check.positive("neuron.threshold")
    if check.get("neuron.adapt_jump") is not _ABSENT:
        check.positive("neuron.adapt_jump")
    check.finite("neuron.v_leak")
    check.finite("neuron.v_reset")
    check.choice("neuron.reset", RESET_MODES)
    check.boolean("neuron.detach_reset")
    return len(check.problems) == before


def neuron_parameter_names(cfg: DictConfig) -> tuple[str, ...]:
    """The per-neuron parameters the configured neuron has, read from a one-neuron instance."""
    factory = hydra.utils.instantiate(cfg.neuron)
    surrogate = hydra.utils.instantiate(cfg.surrogate)
    return factory(size=1, surrogate=surrogate, trainable=()).parameter_names


def _check_trainable(check: _Checker) -> None:
    selection = check.get("trainable")
    try:
        names = selected_names(selection if selection is not _ABSENT else ())
    except TypeError:
        check.fail("trainable", selection, "a list of names, e.g. [weights,tau_mem]")
        return
    if not names:
        check.fail("trainable", selection, "at least one name, e.g. trainable=[weights]")
        return
    try:
        parameters = neuron_parameter_names(check.cfg)
    except Exception as error:  # the neuron group itself is broken
        check.fail("neuron", check.get("neuron._target_"), f"a neuron that builds ({error})")
        return
    neuron = check.get("neuron._target_")
    allowed = (*WEIGHT_SELECTIONS, *parameters)
    for name in sorted(names - set(allowed)):
        check.fail("trainable", name, f"one of {list(allowed)} (what neuron {neuron} can train)")
    if "v_reset" in names and check.get("neuron.reset") != "zero":
        check.fail(
            "neuron.reset",
            check.get("neuron.reset"),
            "'zero' when v_reset is trainable (other resets ignore v_reset)",
        )


def _check_network(check: _Checker) -> None:
    hidden = check.get("model.network.hidden")
    if hidden is not _ABSENT and not (
        isinstance(hidden, list) and hidden and all(_is_positive_int(n) for n in hidden)
    ):
        check.fail("model.network.hidden", hidden, "a non-empty list of layer sizes >= 1")
    decoding = check.get("model.network.decoding")
    check.choice("model.network.decoding", DECODINGS)
    check.boolean("model.network.recurrent")
    check.choice("model.network.time_loop", TIME_LOOPS)
    if decoding in MEMBRANE_DECODINGS:
        dt = check.get("neuron.dt")
        for name in ("readout_tau_mem", "readout_tau_syn"):
            key = f"model.network.{name}"
            tau = check.positive(key)
            if tau is not None and _is_number(dt) and not tau > dt:
                check.fail(key, tau, f"a time constant larger than neuron.dt={dt:g} s")


def _check_optimizer(check: _Checker) -> None:
    check.positive("model.optimizer.lr")
    check.positive("model.neuron_lr", optional=True)
    for name in ("reg_l1", "reg_l2", "reg_l2_bound"):
        check.non_negative(f"model.{name}")


def _check_data(check: _Checker) -> None:
    check.positive_int("data.num_steps")
    check.positive_int("data.batch_size")
    batch, devices = check.get("data.batch_size"), check.get("trainer.devices")
    nodes = check.get("trainer.num_nodes")
    world = (devices if _is_positive_int(devices) else 1) * (
        nodes if _is_positive_int(nodes) else 1
    )
    if _is_positive_int(batch) and batch % world:
        check.fail("data.batch_size", batch, f"a multiple of the {world} devices (global batch)")
    workers = check.get("data.num_workers")
    if workers is not _ABSENT and not (isinstance(workers, int) and workers >= 0):
        check.fail("data.num_workers", workers, "an integer >= 0")
    target = str(check.get("data._target_"))
    if target.rsplit(".", 1)[-1] in FILE_DATASETS and check.get("data.download") is False:
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


def _check_init(check: _Checker) -> None:
    for key in ("init.shape", "init.sigma"):
        if check.get(key) is not _ABSENT:
            check.positive(key)
    spread = check.get("init.spread")
    if spread is not _ABSENT and not (_is_number(spread) and 0 < spread < 1):
        check.fail("init.spread", spread, "a number in (0, 1)")


def _check_weight_init(check: _Checker) -> None:
    """The weight initialisation's own checks (its constructor owns them), and its rate."""
    if check.get("weight_init") is _ABSENT:
        return
    try:
        weight_init = hydra.utils.instantiate(check.cfg.weight_init)
        dt = check.get("neuron.dt")
        if isinstance(weight_init, FluctuationDriven) and _is_number(dt) and dt > 0:
            weight_init.spike_probability(dt)
    except ValueError as err:
        check.problems.append(str(err))
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, TypeError):  # a key of another weight_init option, e.g. a preset's
            option = str(check.get("weight_init._target_")).rsplit(".", 1)[-1]
            cause = (
                f"weight_init: {cause} ({option} has no such key; a preset may set a key of "
                "another weight_init option: drop it with ~weight_init.<key>)"
            )
        check.problems.append(str(cause))


def _check_surrogate_switches(check: _Checker) -> None:
    """``surrogate.smooth_forward`` (optional): a bool, and not with the heaviside surrogate."""
    smooth = check.get("surrogate.smooth_forward")
    if smooth is _ABSENT:
        return
    check.boolean("surrogate.smooth_forward")
    target = str(check.get("surrogate._target_"))
    if smooth is True and target.endswith(".Heaviside"):
        check.fail(
            "surrogate.smooth_forward",
            smooth,
            "false with surrogate=heaviside (the true step has no smooth version)",
        )


def _check_adaptation(check: _Checker) -> None:
    """The adLIF keys (``neuron.adapt_a`` etc.), when the configured neuron has them."""
    if check.get("neuron.discretization") is not _ABSENT:
        check.choice("neuron.discretization", DISCRETIZATIONS)
    if check.get("neuron.adapt_scale") is not _ABSENT:
        check.positive("neuron.adapt_scale")
    for name in ("adapt_a", "adapt_b"):
        value, bounds = check.get(f"neuron.{name}"), check.get(f"neuron.{name}_bounds")
        if value is _ABSENT or bounds is _ABSENT:
            continue
        if not (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(_is_number(b) and math.isfinite(b) for b in bounds)
            and bounds[0] < bounds[1]
        ):
            check.fail(f"neuron.{name}_bounds", bounds, "[min, max] with min < max")
        elif not (_is_number(value) and bounds[0] <= value <= bounds[1]):
            check.fail(f"neuron.{name}", value, f"a number inside neuron.{name}_bounds={bounds}")


def validate_checkpoint(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """Raise :class:`ConfigError` unless ``path`` loads safely and matches ``model``'s weights.

    Loads with ``weights_only=True`` (no code from the file runs) and compares its
    ``state_dict`` keys and shapes with the model's.
    """
    key = "ckpt_path"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            [
                f"{key}={str(path)!r}: expected a checkpoint that loads with weights_only=True "
                f"({reason})"
            ]
        ) from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(
            [f"{key}={str(path)!r}: expected a Lightning checkpoint with a 'state_dict'"]
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name} {tuple(state[name].shape)} (model: {tuple(expected[name].shape)})"
        for name in sorted(set(state) & set(expected))
        if tuple(getattr(state[name], "shape", ())) != tuple(expected[name].shape)
    ]
    details = []
    for label, names in (("missing", missing), ("unexpected", unexpected)):
        if names:
            details.append(f"{label} keys {_abbreviate(names)}")
    if mismatched:
        details.append(f"mismatched shapes {_abbreviate(mismatched)}")
    if details:
        raise ConfigError(
            [
                f"{key}={str(path)!r}: expected a checkpoint of this model "
                f"(same neuron and layer sizes); " + "; ".join(details)
            ]
        )


def _abbreviate(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"
