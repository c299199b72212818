"""Argument checks shared by the constructors, each rule written once.

A constructor that gets a bad argument raises :class:`ArgumentError` naming the argument, the
value and what was expected (``tau_mem=-0.01: expected a finite number > 0``). It is a
``ValueError``, so plain-PyTorch users get a clear message; the up-front config validation
(:mod:`spikelight.validation`) builds each config group, puts the group's key in front
(``neuron.tau_mem=-0.01: ...``) and raises every problem at once as a :class:`ConfigError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


class ArgumentError(ValueError):
    """``name=value: expected ...``; ``name`` is the argument (the key inside its config group)."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name, self.value, self.expected = name, value, expected
        super().__init__(self.under(None))

    def under(self, group: str | None) -> str:
        """The message with the config group's key in front of the argument's name."""
        key = f"{group}.{self.name}" if group else self.name
        return f"{key}={self.value!r}: expected {self.expected}"


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite(name: str, value: Any) -> float:
    if not (is_number(value) and math.isfinite(value)):
        raise ArgumentError(name, value, "a finite number")
    return float(value)


def positive(name: str, value: Any) -> float:
    if not (is_number(value) and math.isfinite(value) and value > 0):
        raise ArgumentError(name, value, "a finite number > 0")
    return float(value)


def non_negative(name: str, value: Any) -> float:
    if not (is_number(value) and math.isfinite(value) and value >= 0):
        raise ArgumentError(name, value, "a finite number >= 0")
    return float(value)


def probability(name: str, value: Any) -> float:
    if not (is_number(value) and 0 <= value <= 1):
        raise ArgumentError(name, value, "a probability in [0, 1]")
    return float(value)


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(name, value, "an integer >= 1")
    return value


def non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ArgumentError(name, value, "an integer >= 0")
    return value


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(name, value, "true or false")
    return value


def choice(name: str, value: Any, options: Iterable[str]) -> str:
    options = tuple(options)
    if value not in options:
        raise ArgumentError(name, value, f"one of {list(options)}")
    return value


def interval(name: str, value: Any, positive_bounds: bool = False) -> tuple[float, float]:
    """``[min, max]``: finite numbers, min < max (and 0 < min with ``positive_bounds``)."""
    sequence = isinstance(value, Sequence) and not isinstance(value, str)
    bounds = list(value) if sequence else None
    ok = bounds is not None and len(bounds) == 2 and all(is_number(b) for b in bounds)
    ok = ok and all(math.isfinite(b) for b in bounds) and bounds[0] < bounds[1]
    if ok and positive_bounds:
        ok = bounds[0] > 0
    if not ok:
        floor = "0 < min < max" if positive_bounds else "min < max"
        raise ArgumentError(name, value, f"[min, max] of finite numbers with {floor}")
    return float(bounds[0]), float(bounds[1])


class ConfigError(ValueError):
    """The config asks for something impossible; the message names each key and value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"invalid config: {self.problems[0]}"
        else:
            message = "invalid config:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)
