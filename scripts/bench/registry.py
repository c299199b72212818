"""The rows of every table: :func:`register` adds a builder ``setup -> Bench``.

The builders live in the row modules (:data:`ROW_MODULES`, in table order); importing them
registers them, which :func:`implementations` does; read the rows through it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .cases import Setup

ROW_MODULES = ("spikelight_rows", "reference", "peers")


@dataclass
class Bench:
    """A built implementation: ``forward() -> (loss, hidden spikes [T, B, H])``."""

    module: nn.Module
    forward: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    params: dict[str, torch.Tensor]  # w_in, w_rec, w_out: the parameters holding those weights
    info: dict = field(default_factory=dict)

    def step(self) -> None:
        """One training step: forward, loss, backward, zero_grad.

        The spikes returned for checks are dropped before backward, as a training loop would,
        so memory counts only what each implementation itself keeps alive.
        """
        loss = self.forward()[0]
        loss.backward()
        self.module.zero_grad(set_to_none=True)


@dataclass(frozen=True)
class Implementation:
    name: str
    build: Callable[[Setup], Bench]
    group: str  # "spikelight" | "reference" | "peer"
    check: bool  # same equations as the reference: loss and gradients must agree
    available: Callable[[], str | None]  # None, or why this row cannot run


IMPLEMENTATIONS: dict[str, Implementation] = {}


def register(
    name: str,
    group: str,
    check: bool = False,
    available: Callable[[], str | None] = lambda: None,
):
    """Decorator adding a builder ``setup -> Bench`` as a row of every table."""

    def deco(build: Callable[[Setup], Bench]) -> Callable[[Setup], Bench]:
        IMPLEMENTATIONS[name] = Implementation(name, build, group, check, available)
        return build

    return deco


def implementations() -> dict[str, Implementation]:
    """Every registered row, in table order: by :data:`ROW_MODULES`, then as defined there
    (whatever order the modules happened to be imported in)."""
    modules = [f"{__package__}.{name}" for name in ROW_MODULES]
    for module in modules:
        importlib.import_module(module)
    ordered = sorted(IMPLEMENTATIONS.values(), key=lambda i: modules.index(i.build.__module__))
    return {impl.name: impl for impl in ordered}


def select_implementations(names: list[str] | None) -> list[Implementation]:
    """The rows named (all when ``names`` is empty), always with the reference."""
    known = implementations()
    if names:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"unknown --impl {unknown}; choose from {list(known)}")
        if "reference" not in names:
            names = ["reference", *names]
    return [impl for name, impl in known.items() if not names or name in names]


def requires(module: str) -> Callable[[], str | None]:
    """An ``available`` check: the row needs ``module`` installed."""

    def available() -> str | None:
        if importlib.util.find_spec(module) is None:
            return f"{module} not installed"
        return None

    return available


def assign(param: torch.Tensor, value: torch.Tensor) -> None:
    """Copy the shared weight ``value`` into ``param`` (same shape)."""
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(f"weight shape {tuple(param.shape)} != {tuple(value.shape)}")
    with torch.no_grad():
        param.copy_(value)


def dist_version(dist: str) -> str | None:
    """Installed version of distribution ``dist``, None when it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
