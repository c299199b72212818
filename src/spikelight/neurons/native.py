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

from spikelight import surrogates
from spikelight.neurons import dynamics

SOURCE = Path(__file__).with_name("fused_native.c")
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-std=c11", "-shared", "-fPIC"]
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_P = ctypes.c_void_p
_I32, _I64 = ctypes.c_int32, ctypes.c_int64
MAX_STATES = dynamics.MAX_STATES
MAX_TERMS = MAX_STATES * MAX_STATES
N_SLOTS = 2 * MAX_TERMS + 3 * MAX_STATES + 2


class Layer(ctypes.Structure):
    """``Layer`` of fused_native.c: what stays fixed over a sequence."""

    _fields_ = [
        ("batch", _I64), ("size", _I64), ("states", _I64), ("membrane", _I32),
        ("adaptive", _I32), ("reset", _I32), ("detach_reset", _I32), ("rectify", _I32),
        ("surrogate", _I32), ("n_pre", _I32), ("n_post", _I32), ("beta", ctypes.c_double),
        ("scale", ctypes.c_double),
        ("pre_row", _I32 * MAX_TERMS), ("pre_col", _I32 * MAX_TERMS),
        ("post_row", _I32 * MAX_TERMS), ("post_col", _I32 * MAX_TERMS),
        ("replaced", _I32 * MAX_STATES), ("pre", _P * MAX_TERMS), ("post", _P * MAX_TERMS),
        ("input", _P * MAX_STATES), ("constant", _P * MAX_STATES),
        ("post_spike", _P * MAX_STATES), ("threshold", _P), ("v_reset", _P), ("w_t", _P),
    ]  # fmt: skip


class Chunk(ctypes.Structure):
    """``Chunk`` of fused_native.c: a run of forward steps."""

    _fields_ = [
        ("steps", _I64), ("x", _P), ("z_prev", _P), ("z", _P), ("decide", _I32), ("s", _P),
        ("p_hist", _P), ("s_hist", _P), ("in_hist", _P),
        ("events", ctypes.POINTER(_I32)), ("counts", ctypes.POINTER(_I64)),
    ]  # fmt: skip


class Back(ctypes.Structure):
    """``Back`` of fused_native.c: one backward step."""

    _fields_ = [
        ("s", _I64), ("outside", _P), ("rec", _P), ("p", _P), ("z", _P), ("s_hist", _P),
        ("in_hist", _P), ("lam", _P), ("grad_in", _P), ("grad_z", _P),
        ("sums", ctypes.POINTER(ctypes.c_double) * N_SLOTS),
    ]  # fmt: skip


def _expected_layout() -> dict[str, int]:
    """What fused_native.c's ``layout_entries`` must report for the declarations here."""
    expected = {"MAX_STATES": MAX_STATES, "MAX_TERMS": MAX_TERMS, "N_SLOTS": N_SLOTS}
    for struct in (Layer, Chunk, Back):
        expected[f"sizeof {struct.__name__}"] = ctypes.sizeof(struct)
        for name, *_ in struct._fields_:
            expected[f"{struct.__name__}.{name}"] = getattr(struct, name).offset
    return expected


def _layout_mismatch(reported: dict[str, int]) -> str | None:
    """How the compiled structs differ from the declarations here, or None."""
    expected = _expected_layout()
    extra = sorted(k for k in reported if k.startswith(("sizeof ", "Layer.", "Chunk.", "Back."))
                   and k not in expected)  # fmt: skip
    wrong = sorted(k for k, v in expected.items() if reported.get(k) != v)
    if extra or wrong:
        return f"fields the C code has and native.py lacks: {extra}; differing: {wrong}"
    return None


def _cpu_flags() -> str:
    """The CPU's feature flags (``-march=native`` compiles for them), where Linux lists them."""
    try:
        return next(
            x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags")
        )
    except (OSError, StopIteration):
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
    lib.layout_entries.argtypes = [ctypes.POINTER(ctypes.c_char_p), _P, _I64]
    lib.layout_entries.restype = _I64
    status, real_of = ctypes.c_int, {"f32": ctypes.c_float, "f64": ctypes.c_double}
    for suffix, real in real_of.items():
        signatures = {
            "run_chunk": ([ctypes.POINTER(Layer), ctypes.POINTER(Chunk)], _I64),
            "back_step": ([ctypes.POINTER(Layer), ctypes.POINTER(Back)], status),
            "surrogate_slopes": ([ctypes.c_int, _I64, _P, _P, real, real, _P], None),
            "list_nonzero": ([_P, _I64, _P], _I64),
            "scatter_rows": ([_P, _P, _P, _I64, _I64, _I64, _I64, _P, _I64], status),
            "gather_rows": ([_P, _P, _P, _I64, _I64, _I64, _I64, _P, _I64], None),
            "leaky_filter": ([_P, _P, _P, _I64, _I64, real, real, _I32], None),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, f"{name}_{suffix}")
            function.argtypes, function.restype = argtypes, restype
    names, values = (ctypes.c_char_p * 256)(), (_I64 * 256)()  # the C side's layout by name
    count = min(lib.layout_entries(names, values, 256), 256)
    lib.constants = {names[e].decode(): values[e] for e in range(count)}
    mismatch = _layout_mismatch(lib.constants)
    if mismatch is not None:
        warnings.warn(f"spikelight: {target.name} does not match native.py ({mismatch}); "
                      "using the PyTorch loops", RuntimeWarning, stacklevel=2)  # fmt: skip
        return None
    lib.surrogates = _checked_surrogates(lib)
    return lib


#: The C formula (fused_native.c's SURROGATE_* name) of each surrogate's derivative.
SURROGATE_NAMES = {
    surrogates.SuperSpike: "SURROGATE_FAST_SIGMOID", surrogates.Logistic: "SURROGATE_LOGISTIC",
    surrogates.ATan: "SURROGATE_ATAN", surrogates.Triangle: "SURROGATE_TRIANGLE",
    surrogates.Exponential: "SURROGATE_EXPONENTIAL", surrogates.Heaviside: "SURROGATE_HEAVISIDE",
}  # fmt: skip


def slopes(lib, kind: int, x: torch.Tensor, beta: float, scale: float = 1.0) -> torch.Tensor:
    """The C formula ``kind`` at ``x`` (contiguous, 1-D, float32 or float64), times ``scale``."""
    out, zeros = torch.empty_like(x), torch.zeros_like(x)
    function = getattr(lib, f"surrogate_slopes_{_SUFFIX[x.dtype]}")
    function(kind, x.numel(), x.data_ptr(), zeros.data_ptr(), beta, scale, out.data_ptr())
    return out


def _checked_surrogates(lib) -> dict[type, int]:
    """Each surrogate class whose C formula equals its ``derivative`` (float64, on a grid over
    several steepnesses and scales), with its number; one that differs is left out with a
    warning, so layers with it run the PyTorch loops."""
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    kinds = {}
    for cls, name in SURROGATE_NAMES.items():
        kind = lib.constants[name]
        agree = all(
            torch.allclose(
                slopes(lib, kind, x, beta, scale),
                cls(beta, scale=scale).derivative(x, torch.tensor(beta, dtype=torch.float64)),
                rtol=1e-12,
                atol=1e-15,
            )  # fmt: skip
            for beta in (0.5, 2.0, 25.0)
            for scale in (1.0, 0.4)
        )
        if agree:
            kinds[cls] = kind
        else:
            warnings.warn(f"spikelight: the C formula {name} differs from {cls.__name__}."
                          "derivative; layers with it use the PyTorch loops", RuntimeWarning,
                          stacklevel=3)  # fmt: skip
    return kinds


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


def unavailable(t: torch.Tensor) -> str | None:
    """Why the C loops cannot take ``t``, or None when they can (float32/float64 on the CPU,
    built and enabled)."""
    if not _enabled:
        return "switched off by native.set_enabled(False)"
    if t.device.type != "cpu":
        return f"on {t.device.type}"
    if t.dtype not in _SUFFIX:
        return f"no C loops for {t.dtype}"
    if library() is None:
        return "not built: SPIKELIGHT_NATIVE=0, no C compiler, or a failed build (warned)"
    return None


def supports(t: torch.Tensor) -> bool:
    """Whether the C loops take ``t``: see :func:`unavailable`."""
    return unavailable(t) is None


def nonzero(flat: torch.Tensor) -> torch.Tensor:
    """The ascending positions (int32) of the non-zero entries of the contiguous 1-D ``flat``
    (fewer than 2^31 entries): ``flat.nonzero()``, skipping runs of 8 zeros in one test."""
    if flat.numel() >= 2**31:
        raise ValueError(f"native.nonzero lists int32 positions: {flat.numel()} entries")
    out = torch.empty(flat.numel(), dtype=torch.int32)  # only the pages written get memory
    count = _function("list_nonzero", flat.dtype)(_ptr(flat), flat.numel(), out.data_ptr())
    return out[:count].clone()


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
    out, state = torch.empty_like(x), x.new_zeros(2, *x.shape[1:])
    _function("leaky_filter", x.dtype)(
        _ptr(x), _ptr(out), _ptr(state), x.shape[0], x[0].numel() if len(x) else 0, a_syn, a_mem,
        int(reverse),
    )  # fmt: skip
    return out


def _ptr(t: torch.Tensor | None) -> int | None:
    if t is None:
        return None
    if not t.is_contiguous():
        raise ValueError(f"native kernel needs contiguous tensors, got strides {t.stride()}")
    return t.data_ptr()


def surrogate_kind(surrogate) -> int | None:
    """The C code's number for ``surrogate``'s derivative; None for one it has no formula for."""
    lib = library()
    return None if lib is None else lib.surrogates.get(type(surrogate))


class Kernel:
    """A layer's fixed part (``Layer``) for one neuron's :class:`~.dynamics.Dynamics`, plus the
    calls the fused layer makes with it. It keeps the tensors the struct points to alive."""

    def __init__(self, d, batch: int, size: int, dtype, w_t, beta: float):
        form, lib = d.form, library()
        self.keep = [w_t]
        constants = lib.constants

        def ptr(t):
            if t is None:
                return None
            t = t.to(dtype).expand(size).contiguous()
            self.keep.append(t)
            return t.data_ptr()

        def rows(group: dict) -> list:
            return [ptr(group.get(j)) for j in range(MAX_STATES)]

        pre, post = list(d.pre.items()), list(d.post.items())
        self.layer = Layer(
            batch=batch, size=size, states=len(form.states), membrane=form.membrane,
            adaptive=-1 if form.adaptive is None else form.adaptive,
            reset=constants[f"RESET_{form.reset.upper()}"], detach_reset=int(form.detach_reset),
            rectify=int(form.rectify), surrogate=surrogate_kind(form.surrogate),
            n_pre=len(pre), n_post=len(post), beta=beta, scale=form.surrogate.scale,
            pre_row=(_I32 * MAX_TERMS)(*(j for (j, _), _ in pre)),
            pre_col=(_I32 * MAX_TERMS)(*(col for (_, col), _ in pre)),
            post_row=(_I32 * MAX_TERMS)(*(j for (j, _), _ in post)),
            post_col=(_I32 * MAX_TERMS)(*(col for (_, col), _ in post)),
            replaced=(_I32 * MAX_STATES)(*(int(j in form.post_rows) for j in range(MAX_STATES))),
            pre=(_P * MAX_TERMS)(*(ptr(a) for _, a in pre)),
            post=(_P * MAX_TERMS)(*(ptr(e) for _, e in post)),
            input=(_P * MAX_STATES)(*rows(d.inputs)),
            constant=(_P * MAX_STATES)(*rows(d.constants)),
            post_spike=(_P * MAX_STATES)(*rows(d.post_spike)),
            threshold=ptr(d.threshold), v_reset=ptr(d.v_reset), w_t=_ptr(w_t),
        )  # fmt: skip
        self.slot_index = {  # form slot -> place in Back.sums
            **{("pre", e): constants["SLOT_PRE"] + i for i, (e, _) in enumerate(pre)},
            **{("post", e): constants["SLOT_POST"] + i for i, (e, _) in enumerate(post)},
            **{("inputs", j): constants["SLOT_INPUT"] + j for j in d.inputs},
            **{("constants", j): constants["SLOT_CONSTANT"] + j for j in d.constants},
            **{("post_spike", j): constants["SLOT_POST_SPIKE"] + j for j in d.post_spike},
            ("threshold", None): constants["SLOT_THRESHOLD"],
            ("v_reset", None): constants["SLOT_V_RESET"],
        }
        self._run = _function("run_chunk", dtype)
        self._back = _function("back_step", dtype)

    def run(self, x, z, s, z_prev=None, decide=False, p_hist=None, s_hist=None, in_hist=None):
        """Advance the state ``s [k, B, N]`` in place over the steps of ``x [steps, B, N]``.

        ``decide``: write the spikes into ``z`` and return their chunk positions ``[n]`` int32
        and counts per step ``[steps]``; else read them from ``z``. ``*_hist``: outputs.
        """
        steps = x.shape[0]
        events = torch.empty(x.numel() if decide else 0, dtype=torch.int32)
        counts = torch.empty(steps if decide else 0, dtype=torch.int64)
        chunk = Chunk(
            steps=steps, x=_ptr(x), z_prev=_ptr(z_prev), z=_ptr(z), decide=int(decide),
            s=_ptr(s), p_hist=_ptr(p_hist), s_hist=_ptr(s_hist), in_hist=_ptr(in_hist),
            events=ctypes.cast(events.data_ptr(), ctypes.POINTER(_I32)),
            counts=ctypes.cast(counts.data_ptr(), ctypes.POINTER(_I64)),
        )  # fmt: skip
        total = self._run(ctypes.byref(self.layer), ctypes.byref(chunk))
        if total < 0:
            raise MemoryError("native kernel: out of memory")
        return (events[:total], counts) if decide else None

    def backward(self, sums: dict, **tensors) -> Back:
        """A ``Back`` for one chunk (``sums``: float64 ``[N]`` accumulators by form slot);
        ``step(back, s, rec)`` then walks it."""
        self.alive = (sums, tensors)  # the struct holds bare pointers: keep the tensors
        slots = [None] * N_SLOTS
        for slot, acc in sums.items():
            slots[self.slot_index[slot]] = ctypes.cast(
                acc.data_ptr(), ctypes.POINTER(ctypes.c_double)
            )
        back = Back(**{k: _ptr(v) for k, v in tensors.items()})
        back.sums = (ctypes.POINTER(ctypes.c_double) * N_SLOTS)(*slots)
        return back

    def step(self, back: Back, s: int, rec: torch.Tensor | None) -> None:
        back.s, back.rec = s, _ptr(rec)
        if self._back(ctypes.byref(self.layer), ctypes.byref(back)) != 0:
            raise MemoryError("native kernel: out of memory")
