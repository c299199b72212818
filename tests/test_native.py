"""The C loops of the fused layer (spikelight.neurons.native): build, helpers, fallback.

The fused layer's results with and without them are compared in tests/test_fused.py (every
test there runs on both); these check the pieces against plain PyTorch, and the build.
"""

from __future__ import annotations

import math
import shutil
import warnings

import pytest
import torch

from spikelight import surrogates
from spikelight.neurons import LIF, dynamics, fused, leaky_filter, native
from spikelight.neurons.events import Events
from spikelight.neurons.fused import run_fused
from spikelight.surrogates import SuperSpike

needs_native = pytest.mark.skipif(native.library() is None, reason="no C compiler here")


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """``native.library()`` built afresh into ``tmp_path``; the cached one again afterwards."""
    monkeypatch.setenv("SPIKELIGHT_CACHE", str(tmp_path))
    native.library.cache_clear()
    yield tmp_path
    native.library.cache_clear()


@needs_native
def test_build_is_cached_and_leaves_no_temporary_files(fresh_library):
    lib = native.library()
    assert lib is not None
    built = list(fresh_library.iterdir())
    assert len(built) == 1 and built[0].name.startswith("fused_native-"), built
    stamp = built[0].stat().st_mtime_ns
    native.library.cache_clear()
    assert native.library() is not None
    assert [p.stat().st_mtime_ns for p in fresh_library.iterdir()] == [stamp]  # not rebuilt


def test_switched_off_or_no_compiler_means_the_pytorch_loops(fresh_library, monkeypatch):
    monkeypatch.setenv("SPIKELIGHT_NATIVE", "0")
    assert native.library() is None
    native.library.cache_clear()
    monkeypatch.delenv("SPIKELIGHT_NATIVE")
    monkeypatch.setenv("CC", "no-such-compiler-here")
    assert native.library() is None


def test_failing_compiler_warns_and_falls_back(fresh_library, monkeypatch):
    monkeypatch.setenv("CC", "false")  # exists, exits 1
    with pytest.warns(RuntimeWarning, match="native fused kernels unavailable.*false failed"):
        assert native.library() is None
    assert list(fresh_library.iterdir()) == []  # nothing half-written left behind
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning came once, with the failed build
        spikes = run_fused(LIF(4, SuperSpike()), torch.rand(6, 2, 4) * 3)  # PyTorch loops
    assert spikes.shape == (6, 2, 4) and 0 < spikes.mean() < 1


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("numel", [0, 1, 7, 8, 9, 1000])
def test_nonzero_lists_what_torch_lists(dtype, numel):
    generator = torch.Generator().manual_seed(numel)
    x = torch.rand(numel, generator=generator, dtype=dtype)
    x = torch.where(x < 0.8, torch.zeros_like(x), torch.ones_like(x))
    if numel >= 9:
        x[3], x[5] = -0.0, float("nan")  # -0 is zero; NaN is not
    positions = native.nonzero(x)
    assert positions.dtype == torch.int32
    assert torch.equal(positions.long(), x.nonzero().squeeze(1))
    if numel >= 9:
        assert 5 in positions.tolist() and 3 not in positions.tolist()


@needs_native
@pytest.mark.parametrize("with_values", [False, True])
def test_scatter_rows_is_the_transposed_sparse_product(with_values):
    generator = torch.Generator().manual_seed(0)
    rows, width, k, shift, lo = 12, 9, 5, 2, 4
    dense = (torch.rand(rows, width, generator=generator) < 0.3).double()
    if with_values:
        dense = dense * torch.randn(rows, width, generator=generator, dtype=torch.float64)
    index = dense.reshape(-1).nonzero().squeeze(1)
    values = dense.reshape(-1)[index] if with_values else None
    # only the entries whose shifted row lands in src's rows lo .. lo + len(src) - 1
    rows_of = index // width + shift
    keep = (rows_of >= lo) & (rows_of < rows)
    index, values = index[keep], None if values is None else values[keep]
    src = torch.randn(rows - lo, k, generator=generator, dtype=torch.float64)
    acc = torch.ones(width, k, dtype=torch.float64)  # accumulates: starts at one
    native.scatter_rows(acc, index.to(torch.int32), values, width, shift, lo, src)
    shifted = torch.zeros(rows - lo, width, dtype=torch.float64)  # S with rows moved by shift
    shifted[rows_of[keep] - lo] += dense[index // width]
    torch.testing.assert_close(acc, 1 + shifted.t() @ src)
    with pytest.raises(ValueError, match="int32"):
        native.scatter_rows(acc, index, values, width, shift, lo, src)


@needs_native
@pytest.mark.parametrize("reverse", [False, True])
def test_leaky_filter_equals_the_pytorch_loop(reverse):
    x = torch.randn(30, 3, 4, dtype=torch.float64)
    got = native.leaky_filter(x, 0.8, 0.3, reverse)
    torch.testing.assert_close(
        got, leaky_filter.run_filter(x, 0.8, 0.3, reverse), rtol=1e-13, atol=1e-14
    )
    expected = leaky_filter.run_filter(x.flip(0), 0.8, 0.3).flip(0) if reverse else None
    if expected is not None:
        torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-14)


@needs_native
def test_fused_layer_runs_the_c_loops_where_it_can(monkeypatch):
    calls = []
    run = native.Kernel.run
    monkeypatch.setattr(native.Kernel, "run", lambda *a, **k: calls.append(1) or run(*a, **k))
    neuron = LIF(8, SuperSpike(), trainable=["tau_mem"])
    x = (torch.rand(30, 2, 20, generator=torch.Generator().manual_seed(0)) < 0.03).float()
    w_in = (3 * torch.randn(8, 20)).requires_grad_()
    w_rec = torch.randn(8, 8, requires_grad=True)
    run_fused(neuron, Events.of(x), w_rec, in_weight=w_in).sum().backward()
    chunks = math.ceil(30 / fused.chunk_steps(30))
    assert len(calls) == 2 * chunks  # the forward pass and the recomputation, per chunk
    calls.clear()
    monkeypatch.setattr(native, "_enabled", False)
    run_fused(neuron, Events.of(x), w_rec, in_weight=w_in).sum().backward()
    assert calls == []


@needs_native
@pytest.mark.parametrize("with_values", [False, True])
def test_gather_rows_is_the_sparse_product(with_values):
    generator = torch.Generator().manual_seed(1)
    rows, width, k, lo, count = 80, 13, 6, 7, 70  # 80 rows: split over the threads
    dense = (torch.rand(rows, width, generator=generator) < 0.2).double()
    if with_values:
        dense = dense * torch.randn(rows, width, generator=generator, dtype=torch.float64)
    index = dense.reshape(-1).nonzero().squeeze(1)
    values = dense.reshape(-1)[index] if with_values else None
    src = torch.randn(width, k, generator=generator, dtype=torch.float64)
    got = native.gather_rows(index.to(torch.int32), values, width, lo, count, src)
    torch.testing.assert_close(got, dense[lo : lo + count] @ src)
    with pytest.raises(ValueError, match="int32"):
        native.gather_rows(index, values, width, lo, count, src)


@needs_native
def test_c_structs_and_constants_are_the_python_declarations():
    """fused_native.c reports its struct sizes, field offsets and constants by name; they are
    what native.py declares, and a difference is named."""
    reported = native.library().constants
    assert native._layout_mismatch(reported) is None
    assert reported["MAX_STATES"] == dynamics.MAX_STATES
    shifted = {**reported, "Layer.beta": reported["Layer.beta"] + 8}
    assert "Layer.beta" in native._layout_mismatch(shifted)
    assert "Back.extra" in native._layout_mismatch({**reported, "Back.extra": 0})


def test_a_layout_mismatch_falls_back_to_the_pytorch_loops(fresh_library, monkeypatch):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler here")
    expected = native._expected_layout()
    monkeypatch.setattr(native, "_expected_layout", lambda: {**expected, "sizeof Chunk": 1})
    with pytest.warns(RuntimeWarning, match="does not match native.py.*sizeof Chunk"):
        assert native.library() is None


@needs_native
def test_every_surrogate_has_a_c_formula_equal_to_its_derivative():
    classes = {
        cls for cls in vars(surrogates).values()
        if isinstance(cls, type) and issubclass(cls, surrogates.Surrogate)
        and cls is not surrogates.Surrogate
    }  # fmt: skip
    assert classes == set(native.SURROGATE_NAMES)
    assert set(native.library().surrogates) == classes  # each passed the check on load
    x = torch.linspace(-2, 2, 41, dtype=torch.float32)
    for cls, kind in native.library().surrogates.items():  # float32 too, and scaled
        for scale in (1.0, 0.4):
            expected = cls(3.0, scale=scale).derivative(x, torch.tensor(3.0))
            got = native.slopes(native.library(), kind, x, 3.0, scale)
            torch.testing.assert_close(got, expected)


@needs_native
def test_a_c_formula_that_differs_is_not_used(monkeypatch):
    monkeypatch.setitem(native.SURROGATE_NAMES, surrogates.Logistic, "SURROGATE_ATAN")
    with pytest.warns(RuntimeWarning, match="SURROGATE_ATAN differs from Logistic"):
        kinds = native._checked_surrogates(native.library())
    assert surrogates.Logistic not in kinds and surrogates.ATan in kinds
