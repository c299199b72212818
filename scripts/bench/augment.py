"""What event augmentation costs per training batch: ``--augment``.

The batch is SHD-sized (``B=256, T=100, C=700`` unless ``--batch``/``--T``/``--inputs``), with
``--density`` (default 2 %) of the bins non-zero, seeded; 95 % of those hold one event, 5 % two.
The transforms and their settings are ``conf/data/augment/shd.yaml``'s. Each row (a transform
alone, the recipe's ``order``, CutMix + mixup, all nine) is one :class:`Augmentation`, timed
round robin over ``--repeats`` calls after ``--warmup``, in two forms:

- ``from events``: what the SHD data module pays, which hands its stored entries to the
  augmentation (:meth:`SHDDataModule.augment_input`) and gets the dense batch back; the column
  ``extra`` subtracts writing a dense batch (``densify``, paid without augmentation too);
- ``dense in``: a caller with a dense batch ``[B, T, C]``, which the augmentation first lists.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from spikelight.data.augment import TRANSFORMS, Augmentation
from spikelight.data.events import Events

from . import log
from .measure import sync
from .runs import record_times

RECIPE = Path(__file__).resolve().parents[2] / "conf" / "data" / "augment" / "shd.yaml"
DEFAULTS = {"T": 100, "batch": 256, "inputs": 700, "density": 0.02}
CLASSES = 20


def recipe() -> tuple[list[str], dict]:
    """``(order, settings)`` of ``conf/data/augment/shd.yaml``."""
    conf = OmegaConf.to_container(OmegaConf.load(RECIPE))
    conf.pop("_target_")
    return conf.pop("order"), conf


def rows() -> dict[str, list[str]]:
    """Row label -> the order it runs."""
    order, _ = recipe()
    return {
        **{name: [name] for name in TRANSFORMS},
        f"shd recipe ({', '.join(order)})": order,
        "cutmix + mixup": ["cutmix", "mixup"],
        "all nine": list(TRANSFORMS),
    }


def event_batch(batch: int, steps: int, inputs: int, density: float, seed: int, device):
    """Seeded counts ``[B, T, C]``: ``density`` of the bins non-zero, 1 event (95 %) or 2."""
    g = torch.Generator().manual_seed(seed)
    occupied = torch.rand(batch, steps, inputs, generator=g) < density
    doubled = torch.rand(batch, steps, inputs, generator=g) < 0.05
    labels = torch.randint(0, CLASSES, (batch,), generator=g)
    return (occupied * (1.0 + doubled)).to(device), labels.to(device)


def timed(call, device) -> float:
    sync(device)
    start = time.perf_counter()
    call()
    sync(device)
    return time.perf_counter() - start


def run_augment(args, device: torch.device) -> dict:
    """Median, quartiles and every call's ms per row and form (see the module docstring)."""
    sizes = {key: getattr(args, key) or value for key, value in DEFAULTS.items()}
    x, y = event_batch(
        sizes["batch"], sizes["T"], sizes["inputs"], sizes["density"], args.seed, device
    )
    events = Events.of(x)
    _, settings = recipe()
    forms = {
        "from_events": lambda aug, g: aug(events, y, CLASSES, g),
        "dense_in": lambda aug, g: aug(x, y, CLASSES, g),
    }
    calls = {"densify": lambda g: events.dense()}
    for label, order in rows().items():
        aug = Augmentation(order, **settings)
        for form, run in forms.items():
            calls[f"{label}\0{form}"] = lambda g, aug=aug, run=run: run(aug, g)
    times = {key: [] for key in calls}
    for repeat in range(args.warmup + args.repeats):
        log(f"  augment round {repeat + 1}/{args.warmup + args.repeats}")
        for key, call in calls.items():
            generator = torch.Generator(device=device).manual_seed(repeat)
            seconds = timed(lambda: call(generator), device)  # noqa: B023
            if repeat >= args.warmup:
                times[key].append(seconds)
    stats = {key: {} for key in times}
    record_times(stats, times)
    densify = stats["densify"]["median_ms"]
    results = []
    for label, order in rows().items():
        row = {"row": label, "order": order} | {f: stats[f"{label}\0{f}"] for f in forms}
        row["extra_ms"] = row["from_events"]["median_ms"] - densify
        results.append(row)
    return {
        "batch": {**sizes, "density_measured": float((x != 0).float().mean())},
        "events": int(x.sum()),
        "recipe": str(RECIPE.relative_to(RECIPE.parents[3])),
        "settings": settings,
        "densify_ms": densify,
        "results": results,
    }
