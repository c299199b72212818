"""OmegaConf resolvers that spikelight configs use, e.g. ``${floordiv:700,${.channel_pool}}``."""

from __future__ import annotations

from omegaconf import OmegaConf


def floordiv(numerator: int, denominator: int) -> int:
    """Integer division for config arithmetic; refuses a zero or non-integer denominator."""
    numerator, denominator = int(numerator), int(denominator)
    if denominator == 0:
        raise ValueError(f"floordiv: cannot divide {numerator} by 0")
    return numerator // denominator


RESOLVERS = {"floordiv": floordiv}


def register_resolvers() -> None:
    """Register every resolver once; safe to call any number of times."""
    for name, function in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
