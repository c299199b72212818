"""scripts/benchmark.py at tiny sizes: its JSON, its agreement check, its memory measures.

No timing assertions: speed is measured by running the script, never by tests.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT, table_rows

TINY = ["--T", "10", "--batch", "4", "--hidden", "16", "--repeats", "2", "--warmup", "1"]


def _load_benchmark():
    path = REPO_ROOT / "scripts" / "benchmark.py"
    spec = importlib.util.spec_from_file_location("spikelight_benchmark_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()


def tiny_setup(recurrent=True, T=10, batch=4, dtype=torch.float32):
    case = bench.Case("tiny", T=T, batch=batch, hidden=16, recurrent=recurrent)
    return bench.make_setup(case, "cpu", dtype)


def test_main_writes_json_and_tables(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [*TINY, "--case", "shd_recurrent", "--case", "shd_feedforward"]
    results = bench.main([*argv, "--impl", "spikelight", "--memory", "saved", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["schema"] == bench.SCHEMA
    assert data == json.loads(json.dumps(results))
    assert {"cpu", "torch", "torch_threads", "device"} <= set(data["machine"])
    assert [c["name"] for c in data["cases"]] == ["shd_recurrent", "shd_feedforward"]
    for case in data["cases"]:
        assert (case["T"], case["batch"], case["hidden"]) == (10, 4, 16)
        rows = {r["implementation"]: r for r in case["results"]}
        assert {"spikelight", "reference"} <= set(rows)
        for row in rows.values():
            assert row["available"]
            assert len(row["times_ms"]) == 2
            assert row["q1_ms"] <= row["median_ms"] <= row["q3_ms"]
            assert row["saved_bytes"] > 0
            assert "peak_bytes" not in row  # --memory saved
        assert rows["reference"]["time_vs_reference"] == pytest.approx(1.0)
        checks = {c["implementation"]: c for c in case["checks"]}
        assert "spikelight" in checks
        for check in checks.values():
            assert check["passed"] and check["asserted"] == "float64"
            assert check["float64"]["dtype"] == "float64" and check["float64"]["passed"]
            assert check["float64"]["max_rel_diff"] < 1e-9
            assert check["float32"]["dtype"] == "float32"
    assert data["scaling"] is None
    assert data["targets"] == []  # sizes are not the cases
    table = capsys.readouterr().out
    assert "shd_recurrent: recurrent, T=10, batch=4" in table
    assert "spikelight == reference: passed; float64 (asserted)" in table


def test_markdown_and_scaling(tmp_path, capsys):
    argv = [*TINY, "--scaling", "--impl", "spikelight", "--memory", "saved", "--markdown"]
    argv += ["--scaling-T", "4,8,16", "--scaling-batch", "2,4", "--scaling-base", "8,4"]
    results = bench.main(argv)
    assert results["cases"] == []
    scaling = results["scaling"]
    assert {(p["axis"], p["T"], p["batch"]) for p in scaling["points"]} == {
        ("T", 4, 4),
        ("T", 8, 4),
        ("T", 16, 4),
        ("batch", 8, 2),
        ("batch", 8, 4),
    }
    # the reference saves the same tensors every time step: saved bytes are linear in T
    fit = next(
        f
        for f in scaling["fits"]
        if (f["implementation"], f["axis"], f["metric"]) == ("reference", "T", "saved_bytes")
    )
    assert fit["r2"] > 0.9999 and fit["slope"] > 0
    printed = capsys.readouterr().out
    assert "| implementation |" in printed and "### scaling in T" in printed


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_reference_agrees_with_spikelight(dtype, rtol):
    setup = tiny_setup(dtype=dtype)
    result = bench.check_agreement(
        bench.build_spikelight(setup), bench.build_reference(setup), rtol=rtol
    )
    assert result["passed"] and result["spikes_differing"] == 0
    assert result["dtype"] == str(dtype).removeprefix("torch.")
    assert result["hidden_rate"] > 0  # spikes happen, so reset and surrogate are exercised


@pytest.mark.parametrize(
    "change",
    [
        {"tau_syn": 6e-3},
        {"tau_mem": 12e-3},
        {"readout_tau_mem": 12e-3},
        {"beta": 50.0},
        {"threshold": 1.1},
        {"detach_reset": False},
    ],
)
@pytest.mark.parametrize("recurrent", [True, False])
@pytest.mark.parametrize(
    "dtype,rtol",
    [(torch.float32, bench.DEFAULT_RTOL_FLOAT32), (torch.float64, bench.DEFAULT_RTOL)],
)
def test_check_fails_on_perturbed_equations(change, recurrent, dtype, rtol):
    setup = tiny_setup(recurrent=recurrent, dtype=dtype)
    spikelight, perturbed = bench.build_spikelight(setup), bench.reference_bench(setup, **change)
    with pytest.raises(bench.AgreementError, match="disagree"):
        bench.check_agreement(spikelight, perturbed, rtol)


def test_saved_bytes_count_activations_not_weights():
    small, large = tiny_setup(T=10), tiny_setup(T=20)
    saved_small = bench.saved_bytes(bench.build_reference(small), small)
    saved_large = bench.saved_bytes(bench.build_reference(large), large)
    # per step: the spikes (recurrent input) and v - threshold (surrogate), plus the stacked
    # spikes for the readout projection: 3 float32 [B, H] tensors
    per_step = 3 * 4 * 16 * 4
    assert saved_large - saved_small == 10 * per_step
    assert saved_small < 10 * per_step + 4096  # the weights (16 x 700 floats) are excluded


class Allocates:
    """A stand-in benchmark whose step fills, uses and frees ``nbytes`` of float32."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes

    def step(self) -> None:
        if self.nbytes:
            x = torch.ones(self.nbytes // 4)  # written, so every page is resident
            assert x.sum().item() == self.nbytes // 4
            del x


MIB = 1 << 20


def test_peak_step_memory_sees_a_known_allocation():
    """64 MiB (above glibc's largest mmap threshold, 32 MiB: fresh pages every step) show up as
    64 MiB of peak growth, less at most what the process frees meanwhile (measured: ~0.2 MiB);
    a step that allocates nothing shows far less."""
    cpu = torch.device("cpu")
    peak = bench.peak_step_memory(Allocates(64 * MIB), cpu, steps=3)
    assert peak["method"] in ("rss_hwm", "rss_sampled")
    assert len(peak["peak_bytes_each"]) == 3
    assert all(p >= 63 * MIB for p in peak["peak_bytes_each"]), peak
    assert peak["peak_bytes"] < 96 * MIB, peak  # the tensor, not a multiple of it
    idle = bench.peak_step_memory(Allocates(0), cpu, steps=3)
    assert idle["peak_bytes"] < 8 * MIB, idle


@pytest.mark.parametrize("peer,module", [("snnTorch", "snntorch"), ("Norse", "norse")])
@pytest.mark.parametrize("recurrent", [True, False])
def test_peer_builds_and_steps(peer, module, recurrent):
    pytest.importorskip(module)
    setup = tiny_setup(recurrent=recurrent)
    peer_bench = bench.IMPLEMENTATIONS[peer].build(setup)
    loss, spikes = peer_bench.forward()
    assert torch.isfinite(loss) and spikes.shape == (10, 4, 16)
    peer_bench.step()
    assert all(p.grad is None for p in peer_bench.module.parameters())


def test_bad_arguments_name_the_value(tmp_path):
    with pytest.raises(SystemExit, match="unknown --impl"):
        bench.main([*TINY, "--impl", "nope"])
    with pytest.raises(SystemExit, match="does not exist"):
        bench.main([*TINY, "--json", str(tmp_path / "missing" / "x.json")])


def test_the_benchmark_tables_in_the_docs_are_the_rendered_evidence_file():
    """Every row of docs/benchmarks.md's result tables is a line of its bench.json, rendered.

    The tables are pasted from ``--markdown``; re-rendering the committed ``--json`` file must
    give each row again, so a figure cannot drift from the run it came from.
    """
    results = json.loads((REPO_ROOT / "docs/evidence/benchmarks/bench.json").read_text())
    rendered = set(bench.render(results, True).splitlines())
    headers = {line for line in rendered if line.startswith("| ") and "---" not in line}
    doc = (REPO_ROOT / "docs/benchmarks.md").read_text().splitlines()
    checked, header = 0, None
    for line in doc:
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = line
        elif header in headers and not line.startswith("|-") and "---" not in line:
            assert line in rendered, f"docs/benchmarks.md row not in bench.json: {line}"
            checked += 1
    assert checked >= 20  # the three cases and the scaling tables at least


def _benchmark_rows():
    """``(line, {header: cell}, json path)`` of docs/benchmarks.md rows that link a bench file."""
    for _, line, row in table_rows(REPO_ROOT / "docs/benchmarks.md"):
        if link := re.search(r"\]\((evidence/benchmarks/[^)]+\.json)\)", line):
            yield line, row, REPO_ROOT / "docs" / link.group(1)


def test_summary_rows_of_the_benchmark_docs_equal_their_bench_files():
    """A row linking a bench file shows its first case's median per implementation and ratio."""
    rows = list(_benchmark_rows())
    assert len(rows) >= 5  # the repeated runs and the density sweep
    for line, row, path in rows:
        (case, *_) = json.loads(path.read_text())["cases"]
        results = {r["implementation"]: r for r in case["results"] if r.get("median_ms")}
        shown = [name for name in row if name in results]
        assert {"spikelight", "snnTorch", "Norse"} <= set(shown), line
        for name in shown:
            assert row[name] == f"{results[name]['median_ms']:.1f} ms", line
        ratio = results["spikelight"]["time_vs_best_peer"]
        assert row["spikelight x fastest peer"] == f"{ratio:.2f}", line
        if "hidden rate" in row:
            assert row["hidden rate"] == f"{results['spikelight']['hidden_rate']:.3f}", line


README_ROWS = {  # README's summary table: row label -> (case, quantity)
    "T=100, B=64: step time": ("shd_recurrent", "median_ms"),
    "T=100, B=64, feed-forward: step time": ("shd_feedforward", "median_ms"),
    "T=250, B=128: step time": ("shd_recurrent_long", "median_ms"),
    "T=250, B=128: peak memory of a step": ("shd_recurrent_long", "peak_bytes"),
    "T=250, B=128: saved for backward": ("shd_recurrent_long", "saved_bytes"),
}
README_COLUMNS = ["spikelight", "spikelight (PyTorch loops)", "reference", "snnTorch", "Norse"]


def test_the_readme_benchmark_summary_equals_the_bench_file():
    results = json.loads((REPO_ROOT / "docs/evidence/benchmarks/bench.json").read_text())
    cases = {c["name"]: {r["implementation"]: r for r in c["results"]} for c in results["cases"]}
    seen = 0
    for line in (REPO_ROOT / "README.md").read_text().splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if cells[0] not in README_ROWS:
            continue
        case, quantity = README_ROWS[cells[0]]
        for implementation, cell in zip(README_COLUMNS, cells[1:], strict=True):
            number, unit = cell.split()
            value = cases[case][implementation][quantity]
            value = value / 2**20 if unit == "MiB" else value
            decimals = len(number.split(".")[1]) if "." in number else 0
            assert float(number) == pytest.approx(round(value, decimals)), (line, implementation)
        seen += 1
    assert seen == len(README_ROWS)
