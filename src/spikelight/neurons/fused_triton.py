"""The fused layer's steps as Triton kernels, generated from a neuron's :class:`~.dynamics.Form`.

On a GPU each of the PyTorch loops' ~20 small operations per step is a kernel launch and a
round trip of the whole ``[B, N]`` state through memory. Here one launch runs a chunk of time
steps with the state in registers, one element ``(b, n)`` per lane: the forward (or its
recompute, which reads the saved spikes and writes each step's ``p``), and the backward, which
walks the chunk back with ``dL/ds`` in registers and sums every coefficient's local gradient.
A recurrent layer of up to :data:`RECURRENT_MAX` neurons does its product ``W z_{t-1}`` (and
``dL/din_t W`` backwards) inside too, each program holding whole batch rows and reading its own
previous spikes in tiles (``tl.dot``); a wider one launches once per step after a cuBLAS ``mm``.

The kernels' source is written from the form (:func:`source`): the step of
:func:`spikelight.neurons.dynamics.step`, operation for operation (launched without fused
multiply-adds, so the spikes are the PyTorch loops'; the in-kernel recurrent product sums in
another order than cuBLAS, so in float32 a membrane within rounding of the threshold may spike
differently), and the reverse step of ``fused._back_step``. Each surrogate's derivative has
its Triton formula here, checked on first use against the surrogate's own ``derivative``
(float64, on a grid), as ``native.py`` checks the C formulas; a surrogate whose formula differs
runs the PyTorch loops, with a warning.

``triton`` is optional (``pip install -e ".[gpu]"``): without it, or on the CPU, the C or
PyTorch loops run. ``SPIKELIGHT_TRITON=0`` turns the kernels off. Tests run them on CPU tensors
through Triton's interpreter (``TRITON_INTERPRET=1`` before triton is imported) after
:func:`set_forced`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import warnings
from pathlib import Path

import torch

from spikelight import surrogates
from spikelight.atomic import atomic_output
from spikelight.neurons.dynamics import MAX_STATES, Form

DTYPES = (torch.float32, torch.float64)  # the state's; inputs in bf16/fp16 are cast before

#: Each surrogate's derivative at ``x = u - theta`` in Triton (``scale`` multiplies it after,
#: as :meth:`Surrogate.derivative` does); the lines of a ``@triton.jit`` function's body.
FORMULAS = {
    surrogates.SuperSpike: ("d = beta * tl.abs(x) + 1.0", "return 1.0 / (d * d)"),
    surrogates.Logistic: ("s = 1.0 / (1.0 + tl.exp(-(beta * x)))", "return beta * s * (1.0 - s)"),
    surrogates.ATan: ("y = half_pi * beta * x", "return (beta / 2.0) / (1.0 + y * y)"),
    surrogates.Triangle: ("r = 1.0 - beta * tl.abs(x)", "return beta * tl.maximum(r, 0.0)"),
    surrogates.Exponential: ("return (beta / 2.0) * tl.exp(-beta * tl.abs(x))",),
    surrogates.Heaviside: ("return x * 0.0",),
}

_forced, _enabled = False, True


def set_enabled(on: bool) -> bool:
    """Let the fused layers use the Triton kernels (True, the default) or not; returns the
    previous setting (``SPIKELIGHT_TRITON=0``: off for a whole process)."""
    global _enabled
    previous, _enabled = _enabled, bool(on)
    return previous


def set_forced(on: bool) -> bool:
    """Let the kernels take CPU tensors (under ``TRITON_INTERPRET=1``: the tests' way to run
    them without a GPU); returns the previous setting."""
    global _forced
    previous, _forced = _forced, bool(on)
    return previous


@functools.cache
def _triton():
    """``(triton, triton.language)``, or None where triton does not import."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None
    return triton, tl


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable(surrogate, like: torch.Tensor, shape=None) -> str | None:
    """Why the Triton kernels cannot run a layer with ``surrogate`` on tensors like ``like``
    (spikes of ``shape``), or None when they can."""
    if os.environ.get("SPIKELIGHT_TRITON", "1") == "0":
        return "switched off by SPIKELIGHT_TRITON=0"
    if not _enabled:
        return "switched off by fused_triton.set_enabled(False)"
    if like.device.type != "cuda" and not (_forced and interpreting()):
        return f"on {like.device.type}"
    if like.dtype not in DTYPES:
        return f"no Triton kernels for {like.dtype}"
    if _triton() is None:
        return "triton is not installed (pip install -e '.[gpu]')"
    if type(surrogate) not in checked_surrogates(like.device.type):
        return f"no checked Triton formula for {type(surrogate).__name__}"
    if shape is not None and MAX_STATES * (math.isqrt(shape[0]) + 1) * shape[1] * shape[2] >= 2**31:
        return f"a chunk's states of {tuple(shape)} spikes do not fit int32 offsets"
    return None


# -- the source, from the form ----------------------------------------------------------------


def _surrogate_source(cls, scaled: bool) -> str:
    """``surrogate(x, beta, half_pi[, scale])``: ``cls``'s formula (times ``scale``)."""
    body = "\n".join(f"    {line}" for line in FORMULAS[cls])
    name = "unit" if scaled else "surrogate"
    text = f"@triton.jit\ndef {name}(x, beta, half_pi):\n{body}\n"
    if scaled:
        text += ("\n\n@triton.jit\ndef surrogate(x, beta, half_pi, scale):\n"
                 "    return unit(x, beta, half_pi) * scale\n")  # fmt: skip
    return text


def _sum(terms: list[str]) -> str | None:
    """``a + b + c`` evaluated left to right, as the PyTorch loops add (None: no term)."""
    return " + ".join(terms) if terms else None


class _Writer:
    """Lines of a kernel body, with the coefficient names of the form's slots."""

    def __init__(self, form: Form):
        self.form, self.lines = form, []
        self.coef = {slot: f"k{i}" for i, slot in enumerate(form.slots)}
        self.k = len(form.states)

    def __call__(self, line: str, indent: int = 1):
        self.lines.append("    " * indent + line)

    def load_coefficients(self):
        for name in self.coef.values():
            self(f"{name} = tl.load({name}_ptr + n, mask=mask, other=0.0)")

    def pre(self, indent: int):
        """``p`` from ``s0..`` and ``x``: :func:`dynamics.pre_update` (``B x``, then ``+ c``,
        then ``+ A s`` in the order listed)."""
        f, w = self.form, self
        for j in range(self.k):
            terms = [f"x * {w.coef[('inputs', j)]}"] if j in f.inputs else []
            terms += [w.coef[("constants", j)]] if j in f.constants else []
            terms += [f"{w.coef[('pre', (r, c))]} * s{c}" for r, c in f.pre if r == j]
            w(f"p{j} = {_sum(terms) or 'tl.full(x.shape, 0.0, x.dtype)'}", indent)

    def theta(self, indent: int):
        """:func:`dynamics.theta_of`."""
        adapt = f" + p{self.form.adaptive}" if self.form.adaptive is not None else ""
        self(f"theta = {self.coef[('threshold', None)]}{adapt}", indent)

    def reset(self, indent: int):
        """The membrane after the reset, ``q_m``: :func:`dynamics.reset`."""
        f, m = self.form, self.form.membrane
        if f.reset == "subtract":
            self(f"q{m} = p{m} - z * theta", indent)
        elif f.reset == "zero":
            self(f"q{m} = p{m} - z * (p{m} - {self.coef[('v_reset', None)]})", indent)
        else:
            self(f"q{m} = p{m}", indent)
        if f.rectify:
            self(f"q{m} = tl.maximum(q{m}, 0.0)", indent)

    def q(self, j: int) -> str:
        return f"q{j}" if j == self.form.membrane else f"p{j}"


def _offsets(w: _Writer, recurrent: bool) -> None:
    """This program's elements ``e`` (``mask``: inside the plane) and their neurons ``n``: a
    block of the flat plane, or (``recurrent``) ``BB`` whole batch rows of ``NP >= N`` lanes."""
    if not recurrent:
        w("e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)")
        w("mask = e < plane")
        w("n = e % size")
        return
    w("rows = tl.program_id(0) * BB + tl.arange(0, BB)[:, None]")
    w("n = tl.arange(0, NP)[None, :]")
    w("mask = (rows < plane // size) & (n < size)")
    w("e = rows * size + n")


def _rows_times(ieee: bool) -> str:
    """``rows_times(acc, a_ptr, m_ptr, ...)``: ``acc + A[rows] @ M`` for ``[B, N]`` rows ``A``
    and an ``[N, N]`` matrix ``M`` (both row-major), in ``BK``-wide tiles; float32 products in
    full precision (``ieee``: no TF32)."""
    precision = ', input_precision="ieee"' if ieee else ""
    return (
        "@triton.jit\ndef rows_times(acc, a_ptr, m_ptr, rows, n, size, batch, BK: tl.constexpr):\n"
        "    for k0 in range(0, size, BK):\n"
        "        kk = k0 + tl.arange(0, BK)\n"
        "        a = tl.load(a_ptr + rows * size + kk[None, :],\n"
        "                    mask=(rows < batch) & (kk[None, :] < size), other=0.0)\n"
        "        m = tl.load(m_ptr + kk[:, None] * size + n,\n"
        "                    mask=(kk[:, None] < size) & (n < size), other=0.0)\n"
        f"        acc += tl.dot(a.to(m.dtype), m{precision})\n"
        "    return acc\n"
    )


def _block_params(recurrent: bool) -> str:
    """A kernel's tile sizes: whole batch rows (``BB``) x padded neurons (``NP``) in ``BK`` tiles
    for a recurrent layer, else ``BLOCK`` elements."""
    return "BB: tl.constexpr, NP: tl.constexpr, BK: tl.constexpr" if recurrent else (
        "BLOCK: tl.constexpr")  # fmt: skip


def _forward_source(form: Form, recurrent: bool = False) -> list[str]:
    """``forward``: a run of steps from the state ``s``, advanced in place; spikes decided
    (``DECIDE``) or read; optionally each step's ``p`` and state before it. ``forward_rec``
    (``recurrent``): the same with the input plus ``W z_{t-1}`` (``w_ptr``: ``W^T``;
    ``zp_ptr``: the spikes of the step before the first), whole batch rows per program."""
    w, k, f = _Writer(form), len(form.states), form
    coefs = "".join(f"{name}_ptr, " for name in w.coef.values())
    name, extra = ("forward_rec", "w_ptr, zp_ptr, ") if recurrent else ("forward", "")
    sizes = _block_params(recurrent)
    w.lines.append(
        f"@triton.jit\ndef {name}(x_ptr, z_ptr, s_ptr, p_ptr, sh_ptr, {extra}{coefs}steps, plane,"
        " size,\n            DECIDE: tl.constexpr, KEEP_P: tl.constexpr, KEEP_S: tl.constexpr,"
        f" {sizes}):"
    )
    _offsets(w, recurrent)
    w.load_coefficients()
    for j in range(k):
        w(f"s{j} = tl.load(s_ptr + {j} * plane + e, mask=mask, other=0.0)")
    w("x_cur = x_ptr + e")
    w("z_cur = z_ptr + e")
    w("p_cur = p_ptr + e")
    w("sh_cur = sh_ptr + e")
    if recurrent:
        w("zp_step = zp_ptr")
        w("z_step = z_ptr")
    w("for t in range(steps):")
    w("x = tl.load(x_cur, mask=mask, other=0.0).to(s0.dtype)", 2)
    if recurrent:  # in_t = x_t + W z_{t-1}, from this program's own rows of the spikes
        w("x = rows_times(x, zp_step, w_ptr, rows, n, size, plane // size, BK)", 2)
    w("if KEEP_S:", 2)
    for j in range(k):
        w(f"tl.store(sh_cur + {j} * plane, s{j}, mask=mask)", 3)
    w.pre(2)
    w.theta(2)
    w("if DECIDE:", 2)
    w(f"z = (p{f.membrane} > theta).to(p0.dtype)", 3)  # 0./1. <=> u - theta > 0, exactly
    w("tl.store(z_cur, z.to(z_ptr.dtype.element_ty), mask=mask)", 3)
    w("else:", 2)
    w("z = tl.load(z_cur, mask=mask, other=0.0).to(p0.dtype)", 3)
    w("if KEEP_P:", 2)
    for j in range(k):
        w(f"tl.store(p_cur + {j} * plane, p{j}, mask=mask)", 3)
    w.reset(2)
    post = f.post_rows
    for j in range(k):  # s' = q, with the post rows replaced by E q + D z
        if j not in post:
            w(f"s{j} = {w.q(j)}", 2)
            continue
        terms = [f"{w.coef[('post', (r, c))]} * {w.q(c)}" for r, c in f.post if r == j]
        terms += [f"{w.coef[('post_spike', j)]} * z"] if j in f.post_spike else []
        w(f"post{j} = {_sum(terms)}", 2)
    for j in post:
        w(f"s{j} = post{j}", 2)
    for ptr, stride in (("x", "plane"), ("z", "plane"), ("p", f"{k} * plane"),
                        ("sh", f"{k} * plane")):  # fmt: skip
        w(f"{ptr}_cur += {stride}", 2)
    if recurrent:  # this step's spikes, stored by all lanes, feed the next step
        w("tl.debug_barrier()", 2)
        w("zp_step = z_step", 2)
        w("z_step += plane", 2)
    for j in range(k):
        w(f"tl.store(s_ptr + {j} * plane + e, s{j}, mask=mask)")
    return w.lines


def _backward_source(form: Form, needed: tuple, recurrent: bool = False) -> list[str]:
    """``backward``: steps ``s_hi - 1`` down to ``s_hi - n_steps`` of a chunk back through
    ``forward`` (``fused._back_step``): ``lam = dL/ds`` in place, ``dL/din`` (and ``dL/dz``) per
    step, and the local gradients of the ``needed`` slots added into ``sums [len(needed), B, N]``.
    ``rec_ptr`` (``HAS_REC``): dL/dz of the top step through the recurrence. ``backward_rec``
    (``recurrent``): each step's ``dL/dz_{t-1} += dL/din_t W`` inside (``w_ptr``: ``W``), whole
    batch rows per program; the chunk's first step's goes out through ``rec_ptr``.
    """
    w, k, f, m = _Writer(form), len(form.states), form, form.membrane
    coefs = "".join(f"{name}_ptr, " for name in w.coef.values())
    name, extra = ("backward_rec", "w_ptr, ") if recurrent else ("backward", "")
    sizes = _block_params(recurrent)
    w.lines.append(
        f"@triton.jit\ndef {name}(p_ptr, z_ptr, out_ptr, rec_ptr, sh_ptr, in_ptr, lam_ptr, "
        f"gin_ptr, gz_ptr, sums_ptr, consts_ptr, {extra}{coefs}s_hi, n_steps, plane, size,"
        "\n             HAS_OUT: tl.constexpr, HAS_REC: tl.constexpr, KEEP_GZ: tl.constexpr,"
        f" {sizes}):"
    )
    _offsets(w, recurrent)
    w.load_coefficients()
    w("beta = tl.load(consts_ptr)")
    w("half_pi = tl.load(consts_ptr + 1)")
    scaled = f.surrogate.scale != 1.0
    if scaled:
        w("scale = tl.load(consts_ptr + 2)")
    for j in range(k):
        w(f"lam{j} = tl.load(lam_ptr + {j} * plane + e, mask=mask, other=0.0)")
    w("zero = lam0 * 0.0")
    sums = {slot: f"acc{i}" for i, slot in enumerate(needed)}
    for acc in sums.values():
        w(f"{acc} = zero")
    w("rec = zero")
    w("if HAS_REC:")
    w("rec = tl.load(rec_ptr + e, mask=mask, other=0.0)", 2)
    w("last = s_hi - 1")
    if recurrent:
        w("gin_step = gin_ptr + last * plane")
    for ptr, stride in (("p", f"{k} * plane"), ("z", "plane"), ("out", "plane"), ("gin", "plane"),
                        ("gz", "plane"), ("sh", f"{k} * plane"), ("in", "plane")):  # fmt: skip
        w(f"{ptr}_cur = {ptr}_ptr + last * {stride} + e")
    w("for i in range(n_steps):")
    for j in range(k):
        w(f"p{j} = tl.load(p_cur + {j} * plane, mask=mask, other=0.0)", 2)
    w("z = tl.load(z_cur, mask=mask, other=0.0).to(p0.dtype)", 2)
    w("gz = zero", 2)
    w("if HAS_OUT:", 2)
    w("gz = tl.load(out_cur, mask=mask, other=0.0).to(p0.dtype)", 3)
    w("gz = gz + rec", 2)  # dL/dz_t through the recurrence (backward: n_steps == 1)
    w.theta(2)
    w.reset(2)
    post = f.post_rows
    grad_q = {j: [f"lam{j}"] for j in range(k) if j not in post}
    for r, c in f.post:  # s'_r = sum E q + D z
        grad_q.setdefault(c, []).append(f"{w.coef[('post', (r, c))]} * lam{r}")
        if ("post", (r, c)) in sums:
            w(f"{sums[('post', (r, c))]} += lam{r} * {w.q(c)}", 2)
    for j in f.post_spike:
        w(f"gz = gz + {w.coef[('post_spike', j)]} * lam{j}", 2)
        if ("post_spike", j) in sums:
            w(f"{sums[('post_spike', j)]} += lam{j} * z", 2)
    w(f"g = {_sum(grad_q.get(m, [])) or 'zero'}", 2)
    if f.rectify:
        w(f"g = tl.where(q{m} > 0.0, g, 0.0)", 2)
    if f.reset == "subtract":  # q_m = p_m - r theta
        w("gp = g", 2)
        w("gth = -z * g", 2)
        if not f.detach_reset:
            w("gz = gz - theta * g", 2)
    elif f.reset == "zero":  # q_m = p_m - r (p_m - v_reset)
        w("gp = g * (1.0 - z)", 2)
        if ("v_reset", None) in sums:
            w(f"{sums[('v_reset', None)]} += z * g", 2)
        if not f.detach_reset:
            w(f"gz = gz + ({w.coef[('v_reset', None)]} - p{m}) * g", 2)
    else:
        w("gp = g", 2)
    w(f"slope = surrogate(p{m} - theta, beta, half_pi{', scale' if scaled else ''})", 2)
    w("through = gz * slope", 2)  # z = H(p_m - theta)
    w("gp = gp + through", 2)
    w("gth = gth - through" if f.reset == "subtract" else "gth = -through", 2)
    if ("threshold", None) in sums:
        w(f"{sums[('threshold', None)]} += gth", 2)
    rows = {j: _sum(grad_q.get(j, [])) for j in range(k)}
    rows[m] = "gp"
    if f.adaptive is not None:  # theta = threshold + p_a
        rows[f.adaptive] = _sum([t for t in [rows[f.adaptive], "gth"] if t])
    for j in range(k):
        w(f"d{j} = {rows[j] or 'zero'}", 2)
    gains = [f"{w.coef[('inputs', j)]} * d{j}" for j in f.inputs]
    w(f"gin = {_sum(gains) or 'zero'}", 2)
    if any(("inputs", j) in sums for j in f.inputs):
        w("xin = tl.load(in_cur, mask=mask, other=0.0)", 2)
    for j in f.inputs:
        if ("inputs", j) in sums:
            w(f"{sums[('inputs', j)]} += d{j} * xin", 2)
    for j in f.constants:
        if ("constants", j) in sums:
            w(f"{sums[('constants', j)]} += d{j}", 2)
    new = {j: [] for j in range(k)}
    for r, c in f.pre:  # p = A s + B x + c
        new[c].append(f"{w.coef[('pre', (r, c))]} * d{r}")
        if ("pre", (r, c)) in sums:
            w(f"{sums[('pre', (r, c))]} += d{r} * tl.load(sh_cur + {c} * plane, mask=mask, "
              "other=0.0)", 2)  # fmt: skip
    for j in range(k):
        w(f"lam{j} = {_sum(['zero', *new[j]])}", 2)
    w("tl.store(gin_cur, gin.to(gin_ptr.dtype.element_ty), mask=mask)", 2)
    w("if KEEP_GZ:", 2)
    w("tl.store(gz_cur, gz, mask=mask)", 3)
    if recurrent:  # in_t = x_t + W z_{t-1}: dL/dz_{t-1} from this step's dL/din, all lanes'
        w("tl.debug_barrier()", 2)
        w("rec = rows_times(zero, gin_step, w_ptr, rows, n, size, plane // size, BK)", 2)
        w("gin_step -= plane", 2)
    for ptr, stride in (("p", f"{k} * plane"), ("z", "plane"), ("out", "plane"), ("gin", "plane"),
                        ("gz", "plane"), ("sh", f"{k} * plane"), ("in", "plane")):  # fmt: skip
        w(f"{ptr}_cur -= {stride}", 2)
    for j in range(k):
        w(f"tl.store(lam_ptr + {j} * plane + e, lam{j}, mask=mask)")
    for i, acc in enumerate(sums.values()):
        w(f"at = sums_ptr + {i} * plane + e")
        w(f"tl.store(at, tl.load(at, mask=mask, other=0.0) + {acc}, mask=mask)")
    if recurrent:
        w("tl.store(rec_ptr + e, rec, mask=mask)")
    return w.lines


def source(form: Form, needed: tuple = (), dtype: torch.dtype = torch.float32) -> str:
    """The Python source of the kernels for ``form`` (``needed``: the slots whose gradient the
    backward sums) in ``dtype``: ``surrogate``, ``slopes``, ``forward`` and ``backward``, and
    their recurrent variants ``forward_rec`` and ``backward_rec``."""
    scaled = form.surrogate.scale != 1.0
    parts = [
        f"# generated by spikelight.neurons.fused_triton for {form.states}, {form.reset}\n"
        "import triton\nimport triton.language as tl\n",
        _surrogate_source(type(form.surrogate), scaled),
        "@triton.jit\ndef slopes(x_ptr, out_ptr, consts_ptr, count, BLOCK: tl.constexpr):\n"
        "    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)\n"
        "    mask = e < count\n"
        "    x = tl.load(x_ptr + e, mask=mask, other=0.0)\n"
        "    beta, half_pi = tl.load(consts_ptr), tl.load(consts_ptr + 1)\n"
        + ("    scale = tl.load(consts_ptr + 2)\n" if scaled else "")
        + f"    out = surrogate(x, beta, half_pi{', scale' if scaled else ''})\n"
        "    tl.store(out_ptr + e, out, mask=mask)\n",
        _rows_times(ieee=dtype == torch.float32),
        *("\n".join(_forward_source(form, rec)) + "\n" for rec in (False, True)),
        *("\n".join(_backward_source(form, needed, rec)) + "\n" for rec in (False, True)),
    ]
    return "\n\n".join(parts)


# -- loading and launching -------------------------------------------------------------------


@functools.cache
def _module(text: str):
    """The kernels of ``text``, imported from a file in the cache folder (Triton reads a
    kernel's source from its file), written atomically and named by the text's hash."""
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("SPIKELIGHT_CACHE", Path.home() / ".cache" / "spikelight"))
    path = cache / "triton" / f"fused_{key}.py"
    if not path.exists() or path.read_text() != text:
        with atomic_output(path) as handle:
            handle.write(text.encode())
    spec = importlib.util.spec_from_file_location(f"spikelight_fused_triton_{key}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _constants(surrogate, beta, like: torch.Tensor) -> torch.Tensor:
    """``[beta, pi/2, scale]`` as a tensor like ``like`` (scalar arguments would be float32)."""
    beta = torch.as_tensor(beta, dtype=like.dtype, device=like.device).reshape(1)
    rest = torch.tensor([torch.pi / 2, surrogate.scale], dtype=like.dtype, device=like.device)
    return torch.cat([beta, rest])


def _launch(kernel, programs: int, *args, **flags):
    """``kernel`` on ``programs`` programs, without fused multiply-adds (the PyTorch loops'
    rounding, so the same spikes)."""
    options = {} if interpreting() else {"enable_fp_fusion": False}
    kernel[(max(1, programs),)](*args, **flags, **options)


def _blocks(count: int, block: int) -> int:
    return -(-count // block)


def block_size(count: int) -> int:
    """Elements per program: 256 lanes on a GPU, one small block in the interpreter."""
    if interpreting():
        return max(16, min(1024, 1 << (count - 1).bit_length()))
    return 256


def _form_of(cls, scale: float) -> Form:
    """A one-state form with ``cls``'s surrogate: what :func:`slopes` needs from a form."""
    return Form(states=("v",), membrane=0, pre=(), inputs=(0,), surrogate=cls(1.0, scale=scale))


def slopes(cls, x: torch.Tensor, beta: float, scale: float = 1.0) -> torch.Tensor:
    """The Triton formula of ``cls`` at ``x`` (contiguous, 1-D), times ``scale``."""
    form = _form_of(cls, scale)
    out = torch.empty_like(x)
    consts = _constants(form.surrogate, beta, x)
    block = block_size(x.numel())
    kernel = _module(source(form, dtype=x.dtype)).slopes
    _launch(kernel, _blocks(x.numel(), block), x, out, consts, x.numel(), BLOCK=block)
    return out


@functools.cache
def checked_surrogates(device_type: str) -> frozenset:
    """The surrogate classes whose Triton formula equals their ``derivative`` (float64, on a
    grid over several steepnesses and scales) on ``device_type``; one that differs is left out
    with a warning, so layers with it run the PyTorch loops."""
    x = torch.linspace(-3, 3, 601, dtype=torch.float64, device=device_type)
    agree = set()
    for cls in FORMULAS:
        same = all(
            torch.allclose(
                slopes(cls, x, beta, scale),
                cls(beta, scale=scale).derivative(x, torch.tensor(beta, dtype=torch.float64)),
                rtol=1e-12,
                atol=1e-15,
            )
            for beta in (0.5, 2.0, 25.0)
            for scale in (1.0, 0.4)
        )
        if same:
            agree.add(cls)
        else:
            warnings.warn(f"spikelight: the Triton formula of {cls.__name__} differs from its "
                          "derivative; layers with it use the PyTorch loops", RuntimeWarning,
                          stacklevel=3)  # fmt: skip
    return frozenset(agree)


#: Neurons up to which a recurrent layer runs a whole chunk per launch, the recurrent product
#: inside (each program holds whole batch rows: ``[16, N]`` in registers); above, one launch per
#: step after a cuBLAS product.
RECURRENT_MAX = 512
ROWS, TILE = 16, 16  # batch rows per program and the product's tile (tl.dot's smallest)


class Kernel:
    """The kernels of one layer's :class:`~.dynamics.Dynamics` and the launches the fused layer
    makes with them (``need``: the form slots whose gradient the backward sums)."""

    def __init__(self, d, batch: int, size: int, beta, need: dict | None = None):
        form = d.form
        self.needed = tuple(
            s for s in form.slots if need is not None and need[s] and s[0] != "initial"
        )
        like = d.threshold
        self.kernels = _module(source(form, self.needed, like.dtype))
        self.coefficients = [t.expand(size).contiguous() for t in d.tensors()]
        self.consts = _constants(form.surrogate, beta, like)
        self.k, self.batch, self.plane = len(form.states), batch, batch * size
        self.size, self.block = size, block_size(batch * size)
        #: whether a recurrent layer of this size runs whole chunks per launch
        self.recurrent = size <= RECURRENT_MAX
        self.rows = {"BB": ROWS, "NP": max(TILE, 1 << (size - 1).bit_length()), "BK": TILE}

    def run(self, x, z, s, decide: bool, p_hist=None, s_hist=None, w_t=None, z_prev=None):
        """Advance the state ``s [k, B, N]`` in place over the steps of ``x [steps, B, N]``,
        writing the spikes into ``z`` (``decide``) or reading them; ``*_hist``: outputs. With
        ``w_t`` (``W^T``, needs :attr:`recurrent`) the input of each step adds ``W z_{t-1}``,
        ``z_prev [B, N]`` the spikes before the first."""
        shared = (
            *self.coefficients, x.shape[0], self.plane, self.size,
        )  # fmt: skip
        flags = dict(DECIDE=decide, KEEP_P=p_hist is not None, KEEP_S=s_hist is not None)
        hist = (s if p_hist is None else p_hist, s if s_hist is None else s_hist)
        if w_t is None:
            _launch(self.kernels.forward, _blocks(self.plane, self.block), x, z, s, *hist,
                    *shared, BLOCK=self.block, **flags)  # fmt: skip
        else:
            _launch(self.kernels.forward_rec, _blocks(self.batch, ROWS), x, z, s, *hist, w_t,
                    z_prev, *shared, **self.rows, **flags)  # fmt: skip

    def new_sums(self, like: torch.Tensor) -> torch.Tensor:
        """Zeroed accumulators ``[len(needed), B, N]`` for :meth:`back`."""
        return like.new_zeros(max(len(self.needed), 1), self.plane)

    def back(self, p, z, lam, grad_in, sums, s_hi: int, steps: int, outside=None, rec=None,
             s_hist=None, in_hist=None, grad_z=None, w=None, rec_known=True) -> None:  # fmt: skip
        """Walk steps ``s_hi - 1`` down to ``s_hi - steps`` of a chunk back (``rec``: dL/dz of
        the top step through the recurrence; only with one step). With ``w`` (the recurrent
        weights, needs :attr:`recurrent`) every step's recurrence is inside; ``rec`` is read
        first where ``rec_known`` and receives the first step's dL/dz_{t-1}."""
        if rec is not None and steps != 1 and w is None:
            raise ValueError("the recurrent dL/dz enters one step at a time")
        args = (
            p, z, p if outside is None else outside, p if rec is None else rec,
            p if s_hist is None else s_hist, p if in_hist is None else in_hist, lam, grad_in,
            p if grad_z is None else grad_z, sums, self.consts,
        )  # fmt: skip
        shared = (*self.coefficients, s_hi, steps, self.plane, self.size)
        flags = dict(HAS_OUT=outside is not None, HAS_REC=rec is not None and rec_known,
                     KEEP_GZ=grad_z is not None)  # fmt: skip
        if w is None:
            _launch(self.kernels.backward, _blocks(self.plane, self.block), *args, *shared,
                    BLOCK=self.block, **flags)  # fmt: skip
        else:
            _launch(self.kernels.backward_rec, _blocks(self.batch, ROWS), *args, w, *shared,
                    **self.rows, **flags)  # fmt: skip

    def slot_sums(self, sums: torch.Tensor, batch: int) -> dict:
        """The needed slots' gradients ``[N]``: ``sums`` summed over the batch."""
        per = sums.view(-1, batch, self.size).sum(1)
        return {slot: per[i] for i, slot in enumerate(self.needed)}
