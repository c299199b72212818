"""Shared fixtures: compose the real Hydra config the way `python train.py` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from spikelight.train import CONFIG_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]


def compose_config(overrides: list[str] = (), output_dir: Path | None = None):
    """The composed training config (hydra section removed), as ``train.py`` would see it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def flat(node, prefix=""):
    """``{"trainer.max_epochs": 2, ...}`` of a nested dict."""
    items = {}
    for key, value in node.items():
        if isinstance(value, dict):
            items.update(flat(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def table_rows(doc: Path):
    """``(line number, line, {header: cell})`` of every body row of the markdown tables in doc."""
    header = None
    for number, line in enumerate(doc.read_text().splitlines(), start=1):
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif len(cells) == len(header):
            yield number, line, dict(zip(header, cells, strict=True))


def run_train_cli(*args: str, timeout: float = 300, env: dict | None = None):
    """``python train.py *args`` from the repository root; the completed process."""
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype (exact comparisons)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def make_config(tmp_path):
    """``make_config(overrides)``: composed config writing into a temporary run directory."""

    def make(overrides=()):
        return compose_config(overrides, output_dir=tmp_path / "run")

    return make
