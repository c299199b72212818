"""scripts/benchmark.py (the package scripts/bench/) at tiny sizes: its JSON, its agreement
check, its memory measures, its firing-rate sweep, its neuron-loop comparison, its augmentation
timing.

No timing assertions: speed is measured by running the script, never by tests.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT, table_rows

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from bench import cases, checks, cli, measure, neuron_loops, reference, registry, report  # noqa: E402
from bench.spikelight_rows import build_spikelight  # noqa: E402

from spikelight.data import augment

TINY = ["--T", "10", "--batch", "4", "--hidden", "16", "--repeats", "2", "--warmup", "1"]


def tiny_setup(recurrent=True, T=10, batch=4, dtype=torch.float32):
    case = cases.Case("tiny", T=T, batch=batch, hidden=16, recurrent=recurrent)
    return cases.make_setup(case, "cpu", dtype)


def test_main_writes_json_and_tables(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [*TINY, "--case", "shd_recurrent", "--case", "shd_feedforward"]
    results = cli.main([*argv, "--impl", "spikelight", "--memory", "saved", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["schema"] == cli.SCHEMA
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
    assert data["targets"] == []  # sizes are not the issue's cases
    table = capsys.readouterr().out
    assert "shd_recurrent: recurrent, T=10, batch=4" in table
    assert "spikelight == reference: passed; float64 (asserted)" in table


def test_markdown_and_scaling(tmp_path, capsys):
    argv = [*TINY, "--scaling", "--impl", "spikelight", "--memory", "saved", "--markdown"]
    argv += ["--scaling-T", "4,8,16", "--scaling-batch", "2,4", "--scaling-base", "8,4"]
    results = cli.main(argv)
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
    result = checks.check_agreement(
        build_spikelight(setup), reference.build_reference(setup), rtol=rtol
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
    [(torch.float32, checks.DEFAULT_RTOL_FLOAT32), (torch.float64, checks.DEFAULT_RTOL)],
)
def test_check_fails_on_perturbed_equations(change, recurrent, dtype, rtol):
    setup = tiny_setup(recurrent=recurrent, dtype=dtype)
    spikelight, perturbed = build_spikelight(setup), reference.reference_bench(setup, **change)
    with pytest.raises(checks.AgreementError, match="disagree"):
        checks.check_agreement(spikelight, perturbed, rtol)


def test_saved_bytes_count_activations_not_weights():
    small, large = tiny_setup(T=10), tiny_setup(T=20)
    saved_small = measure.saved_bytes(reference.build_reference(small), small)
    saved_large = measure.saved_bytes(reference.build_reference(large), large)
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
    peak = measure.peak_step_memory(Allocates(64 * MIB), cpu, steps=3)
    assert peak["method"] in ("rss_hwm", "rss_sampled")
    assert len(peak["peak_bytes_each"]) == 3
    assert all(p >= 63 * MIB for p in peak["peak_bytes_each"]), peak
    assert peak["peak_bytes"] < 96 * MIB, peak  # the tensor, not a multiple of it
    idle = measure.peak_step_memory(Allocates(0), cpu, steps=3)
    assert idle["peak_bytes"] < 8 * MIB, idle


PEERS = [("snnTorch", "snntorch"), ("Norse", "norse"), ("Norse (compiled)", "norse"),
         ("SpikingJelly", "spikingjelly")]  # fmt: skip


@pytest.mark.parametrize("peer,module", PEERS)
@pytest.mark.parametrize("recurrent", [True, False])
def test_peer_builds_and_steps(peer, module, recurrent):
    pytest.importorskip(module)
    if "compiled" in peer and shutil.which("cc") is None:
        pytest.skip("torch.compile on CPU needs a C compiler")
    setup = tiny_setup(recurrent=recurrent)
    peer_bench = registry.implementations()[peer].build(setup)
    loss, spikes = peer_bench.forward()
    assert torch.isfinite(loss) and spikes.shape == (10, 4, 16)
    peer_bench.step()
    assert all(p.grad is None for p in peer_bench.module.parameters())


def test_bad_arguments_name_the_value(tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown --impl"):
        cli.main([*TINY, "--impl", "nope"])
    with pytest.raises(SystemExit, match="does not exist"):
        cli.main([*TINY, "--json", str(tmp_path / "missing" / "x.json")])
    with pytest.raises(SystemExit, match="--rates 5,10 needs --rate-sweep"):
        cli.main([*TINY, "--rates", "5,10"])
    with pytest.raises(SystemExit):
        cli.main([*TINY, "--rate-sweep", "--rates", "5,150"])
    assert "expected percentages in (0, 100), got '5,150'" in capsys.readouterr().err


def test_rate_sweep_reaches_increasing_targets(tmp_path, capsys):
    """The bisected input scale gives each target rate to within half a percentage point (a
    case here has 20 x 8 x 16 = 2560 neuron-steps, 0.04 points a spike), and every row is
    built from the scaled weights: the reference fires as spikelight does."""
    neuron_steps = 20 * 8 * 16
    out = tmp_path / "sweep.json"
    argv = ["--T", "20", "--batch", "8", "--hidden", "16", "--repeats", "1", "--warmup", "0"]
    argv += ["--rate-sweep", "--rates", "2,5,10,20", "--impl", "spikelight", "--markdown"]
    results = cli.main([*argv, "--json", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(results))
    assert data["cases"] == [] and data["scaling"] is None  # only the sweep was asked for
    sweep = data["rate_sweep"]
    assert sweep["rates_percent"] == [2, 5, 10, 20]
    assert [c["name"] for c in sweep["cases"]] == ["shd_recurrent", "shd_feedforward"]
    printed = capsys.readouterr().out
    for case in sweep["cases"]:
        assert case["recurrent"] == (case["name"] == "shd_recurrent")
        assert (case["T"], case["batch"], case["hidden"]) == (20, 8, 16)
        points = case["points"]
        assert [p["target_rate"] for p in points] == [0.02, 0.05, 0.1, 0.2]
        measured = [p["hidden_rate"] for p in points]
        assert measured == sorted(set(measured)), measured  # strictly increasing
        scales = [p["input_scale"] for p in points]
        assert scales == sorted(set(scales)), scales
        for p in points:
            assert p["hidden_rate"] == pytest.approx(p["target_rate"], abs=0.005), p
            rows = {r["implementation"]: r for r in p["results"]}
            assert set(rows) == {"spikelight", "reference"}
            for row in rows.values():
                assert row["hidden_rate"] == pytest.approx(p["hidden_rate"], abs=1 / neuron_steps)
                assert len(row["times_ms"]) == 1
            assert rows["reference"]["time_vs_reference"] == pytest.approx(1.0)
            assert f"| {100 * p['target_rate']:g} % | {100 * p['hidden_rate']:.2f} % |" in printed
    assert "### rate sweep, shd_recurrent: recurrent, T=20, batch=8" in printed


NEURON_KINDS = ["if", "lif", "alif", "adlif", "adlif_euler", "rf"]
TINY_NEURON_LOOPS = ["--neuron-loops", "--T", "10", "--batch", "2", "--repeats", "2"]
TINY_NEURON_LOOPS += ["--warmup", "1"]


def test_neuron_loops_time_every_neuron_after_the_agreement_check(tmp_path, capsys):
    out = tmp_path / "loops.json"
    results = cli.main([*TINY_NEURON_LOOPS, "--markdown", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(results))
    assert data["cases"] == [] and data["scaling"] is None and data["rate_sweep"] is None
    assert data["targets"] == []  # not issue 15's sizes
    section = data["neuron_loops"]
    network = section["network"]
    assert (network["T"], network["batch"], network["inputs"]) == (10, 2, 700)
    assert network["hidden"] == [64, 32] and network["surrogate_beta"] == 10
    assert [r["neuron"] for r in section["results"]] == NEURON_KINDS
    printed = capsys.readouterr().out
    assert "### neuron loops, fused against autograd: recurrent 700-64-32-20, T=10" in printed
    for row in section["results"]:
        for loop in ("fused", "autograd"):
            assert len(row[loop]["times_ms"]) == 2 and min(row[loop]["times_ms"]) > 0
        ratio = row["autograd"]["median_ms"] / row["fused"]["median_ms"]
        assert row["autograd_vs_fused"] == pytest.approx(ratio) and math.isfinite(ratio)
        trained = {"weights", "threshold"} | ({"tau_mem"} if row["neuron"] != "if" else set())
        assert set(row["trainable"]) == trained
        check = row["check"]
        assert check["passed"] and check["asserted"] == "float64"
        grads = check["float64"]["grad_rel_diff"]
        assert any(name.endswith("threshold_raw") for name in grads)  # neuron parameters too
        assert ("layers.0.neuron.tau_mem_raw" in grads) == (row["neuron"] != "if")
        assert check["float64"]["dtype"] == "float64" and check["float64"]["max_rel_diff"] < 1e-9
        assert check["float64"]["logits_rel_diff"] < 1e-9
        assert check["float32"]["dtype"] == "float32"
        assert 0 < row["hidden_rates"]["hidden0"] < 1 and 0 < row["hidden_rates"]["hidden1"] < 1
        assert row["hidden_rate"] == row["hidden_rates"]["hidden0"]
        assert row["time_loops"]["fused"]["hidden0"].startswith("fused")
        assert row["time_loops"]["autograd"]["hidden0"] == "autograd loop"
        assert f"| {row['neuron']} | {row['fused']['median_ms']:.1f} |" in printed


def test_neuron_loops_stop_when_the_two_loops_disagree(monkeypatch):
    """A twin that differs (here: the autograd network's input weights moved by 1e-3) stops
    the run at the float64 check, before anything is timed."""
    copy_state = neuron_loops.copy_state

    def copy_and_perturb(source, target):
        copy_state(source, target)
        if not target.fused:
            with torch.no_grad():
                target.layers[0].fc.weight.add_(1e-3)

    monkeypatch.setattr(neuron_loops, "copy_state", copy_and_perturb)
    monkeypatch.setattr(neuron_loops, "time_round_robin", None)  # must not be reached
    with pytest.raises(checks.AgreementError, match=r"disagree \(rtol 1e-06\)"):
        cli.main(TINY_NEURON_LOOPS)


def test_neuron_loop_targets_at_issue_15s_sizes_only():
    def section(ratios, **network):
        rows = [{"neuron": k, "autograd_vs_fused": ratios.get(k, 1.0)} for k in NEURON_KINDS]
        sizes = {"T": 100, "batch": 32, "inputs": 700, "density": 0.02} | network
        return {"network": sizes, "results": rows}

    targets = neuron_loops.neuron_loop_targets(section({"adlif": 3.2, "adlif_euler": 2.9}))
    assert [(t["implementation"], t["value"], t["met"]) for t in targets] == [
        ("adlif", 3.2, True),
        ("adlif_euler", 2.9, False),
    ]
    assert targets[0]["target"] == "fused step >= 3x its autograd loop"
    assert neuron_loops.neuron_loop_targets(section({"adlif": 5.0}, T=50)) == []
    assert neuron_loops.neuron_loop_targets(None) == []


def test_peak_memory_child_runs_the_script():
    """On CPU the peak is measured by ``scripts/benchmark.py --_child`` in a fresh process."""
    case = cases.Case("tiny", T=10, batch=4, hidden=16)
    peak = measure.peak_memory_subprocess("reference", case, torch.device("cpu"), timeout=120)
    assert peak["method"] in ("rss_hwm", "rss_sampled")
    assert len(peak["peak_bytes_each"]) == 3 and peak["peak_bytes"] >= 0


def test_pytorch_loops_row_restores_the_c_loop_and_triton_switches():
    from spikelight.neurons import fused_triton, native

    row = registry.implementations()["spikelight (PyTorch loops)"].build(tiny_setup())
    assert native.set_enabled(True) is True and fused_triton.set_enabled(True) is True
    row.step()
    assert native.set_enabled(True) is True  # switched off for the step only
    assert fused_triton.set_enabled(True) is True
    assert set(build_spikelight(tiny_setup()).info["layers"]) == {"hidden0", "readout"}


def test_open_neuromorphic_cases_run_by_default_on_a_gpu_only():
    """Linear n -> n + LIF, batch 16, T = 500 at 4k, 8k and 16k neurons, beside the SHD cases
    on CUDA; on the CPU the default stays the SHD cases."""
    on = cases.OPEN_NEUROMORPHIC_CASES
    assert [(c.T, c.batch, c.inputs, c.hidden, c.recurrent) for c in on.values()] == [
        (500, 16, n, n, False) for n in (4096, 8192, 16384)
    ]
    assert cases.default_cases(torch.device("cpu")) == list(cases.SHD_CASES)
    assert cases.default_cases(torch.device("cuda")) == [*cases.SHD_CASES, *on]
    small = cli.configured(on["on_4k"], cli.build_parser().parse_args(["--hidden", "8"]))
    assert (small.hidden, small.inputs) == (8, 4096)  # only what the command line names
    assert cli.configured(on["on_4k"], cli.build_parser().parse_args([])).hidden == 4096


def test_dense_input_row_takes_the_dense_path_and_restores_the_crossover(monkeypatch):
    from spikelight.neurons import events

    projected = []
    project = events.Events.project
    monkeypatch.setattr(
        events.Events, "project", lambda *a, **k: projected.append(1) or project(*a, **k)
    )
    before = events.SPARSE_DENSITY
    registry.implementations()["spikelight"].build(tiny_setup()).step()
    assert projected  # the default sums the sparse input per event ...
    projected.clear()
    registry.implementations()["spikelight (dense input)"].build(tiny_setup()).step()
    assert not projected  # ... the dense-input row does not
    assert before == events.SPARSE_DENSITY


def test_the_benchmark_tables_in_the_docs_are_the_rendered_evidence_file():
    """Every row of docs/benchmarks.md's result tables is a line of its bench.json, rendered.

    The tables are pasted from ``--markdown``; re-rendering the committed ``--json`` file must
    give each row again, so a figure cannot drift from the run it came from.
    """
    results = json.loads((REPO_ROOT / "docs/evidence/benchmarks/bench.json").read_text())
    rendered = set(report.render(results, True).splitlines())
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


def _tiny_checkpoint(path, recurrent=True, hidden=16, seed=0):
    """A train.py-shaped checkpoint of a 700-hidden-20 network: only its state_dict is read."""
    gen = torch.Generator().manual_seed(seed)
    state = {
        "network.layers.0.fc.weight": torch.randn(hidden, 700, generator=gen) * 0.6,
        "network.readout_fc.weight": torch.randn(20, hidden, generator=gen) * 0.5,
    }
    if recurrent:
        state["network.layers.0.rec.weight"] = torch.randn(hidden, hidden, generator=gen) * 0.3
    torch.save({"state_dict": state, "epoch": 3}, path)
    return state


def test_trained_point_runs_the_checkpoint_on_the_files_samples(tmp_path, capsys):
    """--trained: the recurrent case gets one more point whose input is the file's first samples
    binned as experiment=shd bins them (compared with the fixture's own binning) and whose
    weights are the checkpoint's; every row fires as spikelight does on it."""
    from bench import trained

    from tests.data_fixtures import make_shd_samples, write_shd_h5

    truth = make_shd_samples(6, max_events=400)
    data = write_shd_h5(tmp_path / "shd_test.h5", truth)
    ckpt = tmp_path / "last.ckpt"
    state = _tiny_checkpoint(ckpt)
    base = cases.make_setup(cases.Case("shd_recurrent", T=10, batch=4, hidden=16), "cpu")
    setup = trained.trained_setup(base, ckpt, data)
    expected = torch.from_numpy(truth.dense(10)[:4]).float().transpose(0, 1)
    assert torch.equal(setup.x, expected)
    assert torch.equal(setup.y, torch.from_numpy(truth.labels[:4].astype("int64")))
    assert torch.equal(setup.weights["w_rec"], state["network.layers.0.rec.weight"])

    argv = ["--T", "10", "--batch", "4", "--hidden", "16", "--repeats", "1", "--warmup", "0"]
    argv += ["--rate-sweep", "--rates", "5", "--impl", "spikelight", "--impl", "reference"]
    results = cli.main([*argv, "--trained", str(ckpt), "--trained-data", str(data), "--markdown"])
    recurrent, feedforward = results["rate_sweep"]["cases"]
    assert [p["target_rate"] for p in recurrent["points"]] == [0.05, None]
    assert [p["target_rate"] for p in feedforward["points"]] == [0.05]  # not its recurrence
    point = recurrent["points"][-1]
    rows = {r["implementation"]: r for r in point["results"]}
    assert 0 < point["hidden_rate"] == rows["spikelight"]["hidden_rate"] < 1
    assert rows["reference"]["hidden_rate"] == pytest.approx(point["hidden_rate"], abs=1 / 640)
    assert point["input_density_measured"] == pytest.approx(expected.gt(0).float().mean().item())
    assert "| trained |" in capsys.readouterr().out


def test_trained_checkpoint_of_another_shape_is_refused(tmp_path):
    from bench import trained

    ckpt = tmp_path / "two_layers.ckpt"
    torch.save({"state_dict": {"network.layers.0.fc.weight": torch.zeros(4, 700),
                               "network.layers.1.fc.weight": torch.zeros(4, 4),
                               "network.readout_fc.weight": torch.zeros(20, 4)}}, ckpt)  # fmt: skip
    with pytest.raises(SystemExit, match="expected one hidden layer"):
        trained.checkpoint_weights(ckpt)


def test_profile_splits_the_step_into_its_phases():
    """Every phase is timed (the C loops ran), the phases fit inside the step, and the timers
    are gone afterwards."""
    from bench import profile
    from bench.spikelight_rows import spikelight_bench

    from spikelight.neurons import native

    if not native.supports(torch.zeros(1)):
        pytest.skip("the C loops are not available here")
    originals = (native.scatter_rows, native.Kernel.run, torch.mm)
    result = profile.profile_bench(spikelight_bench(tiny_setup()), repeats=2, warmup=1)
    assert (native.scatter_rows, native.Kernel.run, torch.mm) == originals
    phases = result["phases_ms"]
    assert list(phases) == list(profile.PHASES)
    for name in ("forward loop", "recompute", "backward steps", "event gradients", "BLAS products"):
        assert phases[name] > 0, name
    assert sum(phases.values()) <= result["step_ms"]
    assert result["other_ms"] == pytest.approx(result["step_ms"] - sum(phases.values()))


def test_profile_and_trained_need_the_rate_sweep(tmp_path):
    ckpt = tmp_path / "x.ckpt"
    _tiny_checkpoint(ckpt)
    with pytest.raises(SystemExit, match="--profile needs --rate-sweep"):
        cli.main([*TINY, "--profile"])
    with pytest.raises(SystemExit, match="--trained and --trained-data go together"):
        cli.main([*TINY, "--rate-sweep", "--trained", str(ckpt)])
    with pytest.raises(SystemExit, match="no such file"):
        cli.main([*TINY, "--rate-sweep", "--trained", str(ckpt), "--trained-data", "nope.h5"])


def test_augment_times_every_transform_of_the_recipe_in_both_forms(tmp_path, capsys):
    out = tmp_path / "augment.json"
    argv = ["--augment", "--batch", "3", "--T", "12", "--inputs", "40", "--density", "0.2"]
    results = cli.main([*argv, "--repeats", "2", "--warmup", "1", "--markdown", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(results))
    assert data["cases"] == [] and data["neuron_loops"] is None
    section = data["augment"]
    assert section["recipe"] == "conf/data/augment/shd.yaml"
    assert section["settings"]["event_drop"] == {"p": 0.1}  # the recipe's, read from conf/
    assert (section["batch"]["batch"], section["batch"]["T"], section["batch"]["inputs"]) == (
        3,
        12,
        40,
    )
    labels = [row["row"] for row in section["results"]]
    assert labels[:9] == list(augment.TRANSFORMS)
    assert labels[9].startswith("shd recipe (time_shift, time_jitter")
    printed = capsys.readouterr().out
    assert "### event augmentation per batch: B=3, T=12, C=40" in printed
    for row in section["results"]:
        for form in ("from_events", "dense_in"):
            assert len(row[form]["times_ms"]) == 2 and min(row[form]["times_ms"]) > 0
        assert row["extra_ms"] == pytest.approx(
            row["from_events"]["median_ms"] - section["densify_ms"]
        )
        assert f"| {row['row']} | {row['from_events']['median_ms']:.1f} |" in printed
