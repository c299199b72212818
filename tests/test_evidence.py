"""Figures in the docs equal the result files of the runs they come from.

Any markdown table row in README.md or docs/*.md that links an evidence file
(``docs/evidence/**/*.json``, a copy of a run's ``metrics.json``) must show, in its columns
headed ``val/acc_best`` and ``test/acc``, that file's metrics rounded to the digits shown (a
value may be bold, or in per cent with ``%``). So a figure cannot drift from its run.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
CHECKED_COLUMNS = ("val/acc_best", "test/acc")
LINK = re.compile(r"\]\(((?:docs/)?evidence/[^)]+\.json)\)")


def evidence_rows():
    """``(doc, line number, {header: cell}, evidence path)`` for every linked table row."""
    for doc in DOCS:
        header = None
        for number, line in enumerate(doc.read_text().splitlines(), start=1):
            if not line.startswith("|"):
                header = None
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
                continue
            link = LINK.search(line)
            if link and len(cells) == len(header):
                path = (doc.parent / link.group(1)).resolve()
                yield doc.name, number, dict(zip(header, cells, strict=True)), path


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
    record = json.loads(path.read_text())
    assert record["status"] == "ok"
    checked = [c for c in CHECKED_COLUMNS if c in row]
    assert checked, f"{doc}:{line}: no column of {CHECKED_COLUMNS} to check"
    for column in checked:
        value, decimals = shown_value(row[column])
        expected = round(record["metrics"][column], decimals)
        assert value == pytest.approx(expected, abs=10 ** -(decimals + 3)), (
            f"{doc}:{line}: {column} shows {row[column]}, its run gave "
            f"{record['metrics'][column]:.6f}"
        )
