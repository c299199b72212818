"""OmegaConf resolvers that spikelight configs use, e.g. ``${floordiv:700,${.channel_pool}}``.

``import spikelight`` registers them, so configs composed outside ``train.py`` resolve too.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def floordiv(numerator: int, denominator: int) -> int:
    """Integer division for config arithmetic; refuses a zero or non-integer denominator."""
    numerator, denominator = int(numerator), int(denominator)
    if denominator == 0:
        raise ValueError(f"floordiv: cannot divide {numerator} by 0")
    return numerator // denominator


def hydra_or(key: str, fallback: Any) -> Any:
    """``${hydra:key}`` in a Hydra run; ``fallback`` in a config composed outside one.

    The compose API (a notebook, a test) builds the config without starting a run, so Hydra's
    own ``${hydra:runtime.output_dir}`` would fail there ("HydraConfig was not set").
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return fallback
    return OmegaConf.select(HydraConfig.get(), key, throw_on_missing=True)


RESOLVERS = {"floordiv": floordiv, "hydra_or": hydra_or}


def register_resolvers() -> None:
    """Register every resolver once; safe to call any number of times."""
    for name, function in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
