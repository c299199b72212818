"""Figures in the docs equal the result files of the runs they come from.

Any markdown table row in README.md or docs/*.md that links an evidence file must agree with it,
to the digits shown (a value may be bold, or in per cent with ``%``):

- a ``.json`` file (a copy of a run's ``metrics.json``): every column headed by one of its
  metrics (``val/acc_best``, ``test/acc``, ...) shows that metric;
- a sweep's ``summary.csv``: the columns headed by a swept override (``surrogate``,
  ``surrogate.beta``, ``init``) select its finished jobs, and a column headed
  ``<metric> (mean ± std)`` shows the mean and sample standard deviation over them.

So a figure cannot drift from its run.
"""

from __future__ import annotations

import csv
import json
import re
import statistics

import pytest

from tests.conftest import REPO_ROOT, table_rows

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# bench files (evidence/benchmarks/) have their own check in tests/test_benchmark.py
LINK = re.compile(r"\]\(((?:docs/)?evidence/(?!benchmarks/)[^)]+\.(?:json|csv))\)")
MEAN_STD = re.compile(r"^(?P<metric>\S+) \(mean ± std\)$")


def evidence_rows():
    """``(doc, line number, {header: cell}, evidence path)`` for every linked table row."""
    for doc in DOCS:
        for number, line, row in table_rows(doc):
            if link := LINK.search(line):
                yield doc.name, number, row, (doc.parent / link.group(1)).resolve()


ROWS = list(evidence_rows())


def shown_value(cell: str) -> tuple[float, int]:
    """The number in a cell and its decimal places (per cent cells as fractions)."""
    text = cell.replace("*", "").strip()
    percent = text.endswith("%")
    number = text.rstrip("%").strip()
    decimals = len(number.split(".")[1]) if "." in number else 0
    value = float(number)
    return (value / 100, decimals + 2) if percent else (value, decimals)


def test_the_docs_link_evidence():
    assert len(ROWS) >= 10  # the documented commands and the default matrix at least


@pytest.mark.parametrize("doc, line, row, path", ROWS, ids=[f"{r[0]}:{r[1]}" for r in ROWS])
def test_each_figure_equals_its_evidence_file(doc, line, row, path):
    assert path.is_file(), f"{doc}:{line} links {path}, which does not exist"
    where = f"{doc}:{line}"
    if path.suffix == ".json":
        record = json.loads(path.read_text())
        assert record["status"] == "ok"
        checked = [c for c in row if c in record["metrics"]]
        assert checked, f"{where}: no column is one of the metrics of {path.name}"
        for column in checked:
            assert_shown(row[column], record["metrics"][column], f"{where}: {column}")
        return
    with path.open(newline="") as handle:
        jobs = [job for job in csv.DictReader(handle) if job["status"] == "ok"]
    metrics = {c: m["metric"] for c in row if (m := MEAN_STD.match(c)) and m["metric"] in jobs[0]}
    selectors = {c: row[c].strip("`") for c in row if c in jobs[0] and c not in metrics}
    assert metrics and selectors, f"{where}: no (mean ± std) column or no swept-override column"
    selected = [job for job in jobs if all(job[c] == v for c, v in selectors.items())]
    assert len(selected) >= 2, f"{where}: {selectors} selects {len(selected)} jobs of {path}"
    for column, metric in metrics.items():
        values = [float(job[metric]) for job in selected]
        mean, std = (c.strip() for c in row[column].replace("*", "").split("±"))
        assert_shown(mean, statistics.fmean(values), f"{where}: mean of {metric}")
        assert_shown(std, statistics.stdev(values), f"{where}: std of {metric}")


def assert_shown(cell: str, actual: float, where: str) -> None:
    value, decimals = shown_value(cell)
    expected = round(actual, decimals)
    assert value == pytest.approx(expected, abs=10 ** -(decimals + 3)), (
        f"{where} shows {cell}, its run gave {actual:.6f}"
    )


CURVES = sorted((REPO_ROOT / "docs" / "evidence").rglob("*.epochs.csv"))


@pytest.mark.parametrize("path", CURVES, ids=[p.name for p in CURVES])
def test_each_curve_agrees_with_its_run(path):
    """A run's per-epoch curve holds its final figures: the best validation epoch is the
    checkpoint tested, so its test accuracy that epoch is the reported test/acc."""
    record = json.loads(path.with_name(path.name.replace(".epochs.csv", ".json")).read_text())
    metrics = record["metrics"]
    with path.open(newline="") as handle:
        epochs = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(handle)]
    assert [e["epoch"] for e in epochs] == list(range(len(epochs)))
    val = [e["val/acc"] for e in epochs]
    assert max(val) == pytest.approx(metrics["val/acc_best"], abs=1e-6)
    if "test_epoch/acc" in epochs[0]:
        selected = epochs[val.index(max(val))]  # the first best: what the checkpoint kept
        assert selected["test_epoch/acc"] == pytest.approx(metrics["test/acc"], abs=1e-4)
        best = max(e["test_epoch/acc"] for e in epochs)
        assert best == pytest.approx(metrics["test_epoch/acc_best"], abs=1e-6)
