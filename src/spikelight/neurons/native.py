"""The fused layer's per-step loops in C (``fused_native.c``), compiled on first use.

From Python each time step costs ~20 tensor operations of a few microseconds each, mostly
dispatch. ``fused_native.c`` does a chunk of forward steps, or one backward step, in one call
(the backward's recurrent product stays a BLAS ``mm``). It is compiled once per machine with
the system C compiler into a cache folder and loaded through ``ctypes``; where that fails (no
compiler, another OS) the fused layer keeps its PyTorch loops, which compute the same.

``SPIKELIGHT_NATIVE=0`` turns it off; ``SPIKELIGHT_CACHE`` moves the cache (default
``~/.cache/spikelight``); ``CC`` picks the compiler (default ``cc``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("fused_native.c")
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-std=c11", "-shared", "-fPIC"]
RESETS = {"subtract": 0, "zero": 1, "none": 2}
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_P = ctypes.c_void_p


class Layer(ctypes.Structure):
    """``Layer`` of fused_native.c: what stays fixed over a sequence."""

    _fields_ = [
        ("batch", ctypes.c_int64), ("size", ctypes.c_int64),
        ("reset", ctypes.c_int32), ("detach_reset", ctypes.c_int32),
        ("synapse", ctypes.c_int32), ("leaky", ctypes.c_int32),
        ("adaptive", ctypes.c_int32), ("rectify", ctypes.c_int32),
        ("surrogate", ctypes.c_int32), ("has_leak", ctypes.c_int32),
        ("adapt_jump", ctypes.c_double), ("beta", ctypes.c_double),
        ("a_syn", _P), ("a_mem", _P), ("v_leak", _P), ("threshold", _P), ("v_reset", _P),
        ("a_adapt", _P), ("w_t", _P),
    ]  # fmt: skip


class Chunk(ctypes.Structure):
    """``Chunk`` of fused_native.c: a run of forward steps."""

    _fields_ = [
        ("steps", ctypes.c_int64), ("x", _P), ("z_prev", _P), ("z", _P),
        ("decide", ctypes.c_int32), ("i", _P), ("v", _P), ("b", _P), ("u", _P),
        ("i_hist", _P), ("v_hist", _P), ("b_hist", _P),
        ("events", ctypes.POINTER(ctypes.c_int32)), ("counts", ctypes.POINTER(ctypes.c_int64)),
    ]  # fmt: skip


class Back(ctypes.Structure):
    """``Back`` of fused_native.c: one backward step."""

    _fields_ = [
        ("s", ctypes.c_int64), ("t", ctypes.c_int64), ("outside", _P), ("rec", _P),
        ("u", _P), ("z", _P), ("i_hist", _P), ("v_hist", _P), ("b_hist", _P),
        ("lam_v", _P), ("lam_i", _P), ("lam_b", _P), ("grad_in", _P), ("grad_z", _P),
        ("sum_a_syn", _P), ("sum_a_mem", _P), ("sum_v_leak", _P), ("sum_threshold", _P),
        ("sum_v_reset", _P), ("sum_a_adapt", _P),
    ]  # fmt: skip


def _cpu_flags() -> str:
    """The CPU's feature flags (``-march=native`` compiles for them), where Linux lists them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _openmp() -> list[str]:
    """``-fopenmp`` where torch runs on GNU OpenMP (libgomp is loaded): the C loops then split
    the batch over torch's own thread pool. A second OpenMP runtime would compete with it."""
    try:
        return ["-fopenmp"] if "libgomp" in Path("/proc/self/maps").read_text() else []
    except OSError:  # not Linux: serial loops
        return []


def _build(compiler: str, flags: list[str], target: Path) -> None:
    """Compile the source into ``target``, atomically (a temporary file, then a rename);
    without OpenMP if the compiler has none."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        for attempt in (flags, [f for f in flags if f != "-fopenmp"]):
            result = subprocess.run(
                [compiler, *attempt, "-o", tmp, str(SOURCE), "-lm"],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            if result.returncode == 0:
                os.replace(tmp, target)
                return
        raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[:2000]}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they cannot be had (with a warning saying why)."""
    if os.environ.get("SPIKELIGHT_NATIVE", "1") == "0":
        return None
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        return None  # no compiler: the PyTorch loops, silently (they are the portable path)
    flags = FLAGS + _openmp()
    key = hashlib.sha256(
        b"\0".join(
            [SOURCE.read_bytes(), " ".join(flags).encode(), compiler.encode(),
             platform.machine().encode(), _cpu_flags().encode()]
        )
    ).hexdigest()[:16]  # fmt: skip
    cache = Path(os.environ.get("SPIKELIGHT_CACHE", Path.home() / ".cache" / "spikelight"))
    target = cache / f"fused_native-{key}.so"
    try:
        if not target.exists():
            _build(compiler, flags, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        warnings.warn(
            f"spikelight: native fused kernels unavailable ({err}); using the PyTorch loops",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    i64, i32, status = ctypes.c_int64, ctypes.c_int32, ctypes.c_int
    for suffix, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        signatures = {
            "run_chunk": ([ctypes.POINTER(Layer), ctypes.POINTER(Chunk)], i64),
            "back_step": ([ctypes.POINTER(Layer), ctypes.POINTER(Back)], status),
            "list_nonzero": ([_P, i64, _P, ctypes.POINTER(i32)], i64),
            "scatter_rows": ([_P, _P, _P, i64, i64, i64, i64, _P, i64], status),
            "gather_rows": ([_P, _P, _P, i64, i64, i64, i64, _P, i64], None),
            "leaky_filter": ([_P, _P, i64, i64, real, real, i32], status),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, f"{name}_{suffix}")
            function.argtypes, function.restype = argtypes, restype
    return lib


def _function(name: str, dtype: torch.dtype):
    return getattr(library(), f"{name}_{_SUFFIX[dtype]}")


_enabled = True


def set_enabled(on: bool) -> bool:
    """Let the fused layers use the C loops (True, the default) or only their PyTorch loops
    (False); returns the previous setting. ``SPIKELIGHT_NATIVE=0`` turns them off for a whole
    process. A layer decides in its forward pass; its backward follows that choice."""
    global _enabled
    previous, _enabled = _enabled, bool(on)
    return previous


def supports(t: torch.Tensor) -> bool:
    """Whether the C loops take ``t`` (float32/float64 on the CPU), are built and enabled."""
    return _enabled and t.device.type == "cpu" and t.dtype in _SUFFIX and library() is not None


def nonzero(flat: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(positions, all_ones)``: the ascending positions (int64) of the non-zero entries of
    the contiguous 1-D ``flat``, and whether every one of them is exactly 1."""
    out = torch.empty(flat.numel(), dtype=torch.int64)  # only the pages written get memory
    ones = ctypes.c_int32()
    count = _function("list_nonzero", flat.dtype)(
        _ptr(flat), flat.numel(), out.data_ptr(), ctypes.byref(ones)
    )
    return out[:count].clone(), bool(ones.value)


def scatter_rows(acc, index, values, width: int, row_shift: int, row_lo: int, src) -> None:
    """``acc[c] += value * src[r - row_lo]`` for every entry of the int32 flat positions
    ``index`` (row ``r = index // width + row_shift``, column ``c = index % width``)."""
    if index.dtype != torch.int32:
        raise ValueError(f"scatter_rows takes int32 positions, got {index.dtype}")
    status = _function("scatter_rows", acc.dtype)(
        _ptr(acc), _ptr(index), _ptr(values), index.numel(), width, row_shift, row_lo,
        _ptr(src), src.shape[-1],
    )  # fmt: skip
    if status != 0:
        raise MemoryError("native scatter_rows: out of memory")


def gather_rows(index, values, width: int, row_lo: int, rows: int, src) -> torch.Tensor:
    """Rows ``row_lo .. row_lo + rows - 1`` of ``S @ src`` for the sparse ``S [.., width]``
    given by ascending int32 flat positions ``index`` (and ``values``, or None for ones)."""
    if index.dtype != torch.int32:
        raise ValueError(f"gather_rows takes int32 positions, got {index.dtype}")
    out = src.new_empty(rows, src.shape[1])
    _function("gather_rows", src.dtype)(
        _ptr(out), _ptr(index), _ptr(values), index.numel(), width, row_lo, rows, _ptr(src),
        src.shape[1],
    )  # fmt: skip
    return out


def leaky_filter(x: torch.Tensor, a_syn: float, a_mem: float, reverse: bool) -> torch.Tensor:
    """The readout's two leaky stages over ``x [T, ...]`` (``fused._filter``); backwards in
    time when ``reverse``."""
    x = x.contiguous()
    out = torch.empty_like(x)
    width = x[0].numel() if x.shape[0] else 0
    status = _function("leaky_filter", x.dtype)(
        _ptr(x), _ptr(out), x.shape[0], width, a_syn, a_mem, int(reverse)
    )
    if status != 0:
        raise MemoryError("native leaky_filter: out of memory")
    return out


def _ptr(t: torch.Tensor | None) -> int | None:
    if t is None:
        return None
    if not t.is_contiguous():
        raise ValueError(f"native kernel needs contiguous tensors, got strides {t.stride()}")
    return t.data_ptr()


def surrogate_kind(surrogate) -> int | None:
    """The C code's number for ``surrogate``'s derivative; None for one it does not know."""
    from spikelight import surrogates as s

    kinds = {s.SuperSpike: 0, s.Logistic: 1, s.ATan: 2, s.Triangle: 3, s.Exponential: 4,
             s.Heaviside: 5}  # fmt: skip
    return kinds.get(type(surrogate))


class NativeSteps:
    """A layer's fixed part (``Layer``) plus the calls the fused layer makes with it.

    The tensors handed over must stay alive while this object is used: it keeps them.
    """

    def __init__(self, d, batch, size, dtype, coefficients: dict, w_t, beta: float, leak: bool):
        self.keep = {
            k: v.expand(size).contiguous() for k, v in coefficients.items() if v is not None
        }
        self.w_t = w_t
        self.layer = Layer(
            batch=batch, size=size, reset=RESETS[d.reset], detach_reset=int(d.detach_reset),
            synapse=int(d.synapse), leaky=int(d.leaky), adaptive=int(d.adaptive),
            rectify=int(d.rectify), surrogate=surrogate_kind(d.surrogate), has_leak=int(leak),
            adapt_jump=float(d.adapt_jump), beta=beta, w_t=_ptr(w_t),
            **{k: _ptr(v) for k, v in self.keep.items()},
        )  # fmt: skip
        self._run = _function("run_chunk", dtype)
        self._back = _function("back_step", dtype)

    def run(self, x, z, i, v, b, z_prev=None, decide=False, u=None, hist=(None, None, None)):
        """Advance the state ``(i, v, b)`` in place over the steps of ``x [k, B, N]``.

        ``decide``: write the spikes into ``z`` and return their chunk positions ``[n]`` int32
        and counts per step ``[k]``; else read them from ``z``. ``u``/``hist``: outputs.
        """
        k = x.shape[0]
        events = torch.empty(x.numel() if decide else 0, dtype=torch.int32)
        counts = torch.empty(k if decide else 0, dtype=torch.int64)
        chunk = Chunk(
            steps=k, x=_ptr(x), z_prev=_ptr(z_prev), z=_ptr(z), decide=int(decide),
            i=_ptr(i), v=_ptr(v), b=_ptr(b), u=_ptr(u),
            i_hist=_ptr(hist[0]), v_hist=_ptr(hist[1]), b_hist=_ptr(hist[2]),
            events=ctypes.cast(events.data_ptr(), ctypes.POINTER(ctypes.c_int32)),
            counts=ctypes.cast(counts.data_ptr(), ctypes.POINTER(ctypes.c_int64)),
        )  # fmt: skip
        total = self._run(ctypes.byref(self.layer), ctypes.byref(chunk))
        if total < 0:
            raise MemoryError("native kernel: out of memory")
        return (events[:total], counts) if decide else None

    def backward(self, **tensors):
        """A ``Back`` for one chunk; ``step(back, s, t, rec)`` then walks it."""
        self.alive = tensors  # the struct holds bare pointers: keep the tensors until the next
        sums = {k: _ptr(v) for k, v in tensors.items() if k.startswith("sum_")}
        parts = {k: _ptr(v) for k, v in tensors.items() if not k.startswith("sum_")}
        return Back(**parts, **sums)

    def step(self, back: Back, s: int, t: int, rec: torch.Tensor | None) -> None:
        back.s, back.t, back.rec = s, t, _ptr(rec)
        if self._back(ctypes.byref(self.layer), ctypes.byref(back)) != 0:
            raise MemoryError("native kernel: out of memory")
