"""The whole time loop of a spiking layer in one autograd Function, with a hand-written BPTT.

Autograd through a per-step loop records ~10 small operations per time step and keeps every
intermediate for the backward pass. :func:`run_fused` instead runs the IF / LIF / ALIF
recurrences (optionally with a recurrent weight matrix) without recording and derives every
gradient in one reverse sweep. What it keeps for that sweep:

- the spikes: for a recurrent layer on the CPU the flat positions of the spike events (4 bytes
  per spike, listed every step for the recurrent sum), else booleans; never the ``[T, B, N]``
  membrane;
- the state ``(i, v, b)`` at the start of each chunk of ``ceil(sqrt(T))`` steps. The backward
  recomputes one chunk's membranes from its start state (one extra pass of cheap element-wise
  work; the recurrent input comes from the saved spike events), then walks back through it;
- for sparse input (binned spike data) only the input events: the input current
  ``x_t = W_in s_t`` is summed from them a chunk at a time, forwards and again backwards, and
  ``W_in``'s gradient is a sum over the same events.

On the CPU the per-step work (a chunk of forward steps, its recomputation, one backward step)
and the sums over events run as C loops (``native.py``, ``fused_native.c``) where a C compiler
is available; the PyTorch loops here compute the same and run everywhere else
(``native.set_enabled``).

The last hidden layer also projects its spikes onto the readout from the spike events and
receives that projection's gradient a chunk at a time, so a training step holds no ``[T, B, N]``
tensor besides the spikes it returns. The equations are those of the neuron classes' ``step``
(the LIF membrane as one ``lerp``), so spikes agree and gradients equal the autograd loop's to
rounding (``tests/test_fused.py``).

One step, with ``x_t`` the layer's input current and ``W`` the optional recurrent weights::

    in_t = x_t + W z_{t-1}
    i_t  = a_syn i_{t-1} + in_t                        (IF: i_t = in_t)
    u_t  = v_leak + a_mem (v_{t-1} - v_leak) + (1 - a_mem) i_t     (IF: u_t = v_{t-1} + i_t)
    theta_t = threshold + b_{t-1}                      (b = 0 unless ALIF)
    z_t  = H(u_t - theta_t)
    v_t  = u_t - r_t theta_t | u_t - r_t (u_t - v_reset) | u_t     (subtract | zero | none)
    v_t  = max(v_t, 0)                                 (IF with rectify)
    b_t  = a_adapt b_{t-1} + adapt_jump z_t            (ALIF)

``r_t`` is ``z_t`` with its gradient cut when ``detach_reset``; ``H``'s derivative is the
surrogate's. Walking back in time with the adjoints ``lam_v = dL/dv_t``, ``lam_i = dL/di_t`` and
``lam_b = dL/db_t``, each step's local derivatives give the gradients of the input, ``W`` and
every per-neuron coefficient (summed over batch and time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from spikelight.neurons import native
from spikelight.surrogates import Surrogate


@dataclass(frozen=True)
class Dynamics:
    """The static shape of the recurrence: which terms exist and how reset works."""

    reset: str  # "subtract" | "zero" | "none"
    detach_reset: bool
    surrogate: Surrogate
    synapse: bool = False  # i_t = a_syn i_{t-1} + in_t (LIF, ALIF); else i_t = in_t (IF)
    leaky: bool = False  # LIF membrane; else the IF integrator u = v + i
    adaptive: bool = False  # ALIF threshold adaptation
    rectify: bool = False  # clip v at zero after reset (IF)
    adapt_jump: float = 0.0


def chunk_steps(steps: int) -> int:
    """Time steps per chunk: ``ceil(sqrt(T))``.

    The forward keeps the state at each chunk start (``T / K`` of them) and the backward holds
    a few ``[K, B, N]`` buffers, so ``K ~ sqrt(T)`` keeps both at ``O(sqrt(T) B N)``.
    """
    return max(1, math.isqrt(max(steps - 1, 0)) + 1)


def sparse_recurrence(device: torch.device) -> bool:
    """Recurrent products from spike events on CPU; dense products on accelerators.

    Listing a step's spikes needs ``nonzero``, which on a GPU waits for the device, where a dense
    product is cheap anyway. On a CPU the sum over spike events costs about half the dense
    product at typical firing rates, and the backward reuses the events.
    """
    return device.type == "cpu"


#: Below this fraction of non-zero input entries the input is kept as events. Every event
#: costs a few hundred ns over a training step (listing, sums forwards and again backwards,
#: the weight gradient); measured on a 2-core CPU (docs/benchmarks.md), events win clearly at
#: 2 % density and lose at 8 %.
SPARSE_DENSITY = 0.05

#: Above this fraction of spiking neurons (per step, per chunk) the recurrent input and its
#: weight gradient use dense products instead of sums over the spike events; same measurement:
#: events win at 5 % and 9 %, dense products at 17 %.
DENSE_SPIKE_RATE = 0.1


def _sparse(x: torch.Tensor) -> bool:
    """Whether ``x [..., C]`` is below ``SPARSE_DENSITY``, judged on ~256 of its rows."""
    flat = x.reshape(-1, x.shape[-1])
    sample = flat[:: max(1, flat.shape[0] // 256)]
    return bool(torch.count_nonzero(sample) < SPARSE_DENSITY * sample.numel())


def _nonzero_positions(flat: torch.Tensor) -> torch.Tensor:
    """Ascending positions of the non-zero entries of the 1-D ``flat`` (``flat.nonzero()``).

    ``nonzero`` visits every entry one by one (~1.5 ns each on a CPU). This visits one 8-byte
    word per 8 entries of a byte mask, then the bytes of the words that hold an event: about
    twice as fast at the densities of binned spike data.
    """
    mask = flat.bool()  # as nonzero: NaN counts as non-zero
    pad = (-mask.numel()) % 8
    if pad:
        mask = torch.cat([mask, mask.new_zeros(pad)])
    words = mask.view(torch.int64)  # 8 entries per word, in memory order
    hit = words.nonzero().squeeze(1)
    word, byte = words.index_select(0, hit).view(torch.uint8).view(-1, 8).nonzero().unbind(1)
    return hit.index_select(0, word) * 8 + byte


def _compact(index: torch.Tensor, numel: int) -> torch.Tensor:
    """Flat positions in 4 bytes where they fit."""
    return index.to(torch.int32 if numel < 2**31 else torch.int64)


def _bags(index: torch.Tensor, width: int, rows: int) -> torch.Tensor:
    """Start of each row's entries in ascending flat positions ``index`` (rows of ``width``)."""
    starts = torch.arange(rows, device=index.device, dtype=index.dtype) * width
    return torch.searchsorted(index, starts)


def _row_sums(index, values, width: int, rows: int, weight: torch.Tensor, starts=None):
    """``S @ weight`` for the sparse ``S [rows, width]`` given by ascending flat ``index``
    and ``values`` (None: ones): each row sums its entries' rows of ``weight [width, N]``.

    ``starts``: the rows' first flat positions, ``arange(rows) * width``, when at hand.
    """
    weights = None if values is None else values.to(weight.dtype)
    offsets = _bags(index, width, rows) if starts is None else torch.searchsorted(index, starts)
    return F.embedding_bag(index % width, weight, offsets, mode="sum", per_sample_weights=weights)


class _ColumnBags:
    """Sparse entries regrouped by column within each time chunk (one sort), for ``S_c.T @ G``.

    The entries are flat positions ``index`` over rows of ``width`` (row ``r = t * B + b``) with
    ``values`` (None: ones); ``shift`` rows are added to each (a spike at ``t`` feeds ``t + 1``).
    ``grad_t(c, grad)`` is ``S_c.T @ grad`` for chunk ``c``'s block: every column sums the
    gradient rows of its entries, at a cost per entry (a weight gradient).
    """

    def __init__(self, index, values, width: int, shift: int, chunk_rows: int, n_chunks: int):
        rows = torch.div(index, width, rounding_mode="floor") + shift
        chunk = torch.div(rows, chunk_rows, rounding_mode="floor")
        key = chunk * width + index % width
        order = torch.argsort(key, stable=True)
        bounds = torch.arange(n_chunks + 1, device=index.device, dtype=key.dtype) * width
        self.ptr = torch.searchsorted(key[order], bounds).tolist()
        self.order = _compact(order, order.numel())
        self.index, self.values, self.width, self.shift = index, values, width, shift
        self.chunk_rows = chunk_rows

    def grad_t(self, c: int, grad: torch.Tensor) -> torch.Tensor:
        pick = self.order[self.ptr[c] : self.ptr[c + 1]].long()
        index = self.index[pick].long()
        rows = torch.div(index, self.width, rounding_mode="floor") + self.shift
        cols = index % self.width
        weights = None if self.values is None else self.values[pick].to(grad.dtype)
        return F.embedding_bag(
            rows - c * self.chunk_rows, grad, _bags(cols, 1, self.width), mode="sum",
            per_sample_weights=weights,
        )  # fmt: skip


@dataclass
class Events:
    """The non-zero entries of a constant input ``[T, B, C]``: ascending flat positions.

    A layer fed events computes its input current ``x @ W.T`` a chunk of time steps at a time,
    at a cost per event, and the weight gradient likewise; no ``[T, B, N]`` current is stored.
    """

    index: torch.Tensor  # flat positions (t * B + b) * C + c, int32 where they fit
    values: torch.Tensor | None  # None: every event is 1 (binned spikes)
    shape: tuple[int, int, int]  # (T, B, C) of the dense input

    @classmethod
    @torch.compiler.disable  # data-dependent: the number of events
    def of(cls, x: torch.Tensor) -> Events | None:
        """Events of ``x [T, B, C]`` if it is constant, strided and sparse enough, else None."""
        if x.requires_grad or x.dim() != 3 or x.numel() == 0 or x.layout != torch.strided:
            return None
        if not _sparse(x):
            return None
        flat = x.reshape(-1)
        if native.supports(flat):
            index, ones = native.nonzero(flat)
        else:
            index = _nonzero_positions(flat)
            ones = None
        values = None if ones else flat.index_select(0, index)
        if ones is None and bool((values == 1).all()):
            values = None
        return cls(_compact(index, flat.numel()), values, tuple(x.shape))

    def bounds(self, rows: list[int]) -> list[int]:
        """Event offsets where each row in ``rows`` starts."""
        starts = torch.tensor(rows, dtype=self.index.dtype, device=self.index.device)
        return torch.searchsorted(self.index, starts * self.shape[2]).tolist()

    def project(self, weight_t, r0: int, r1: int, lo: int, hi: int, c_loop: bool | None = None):
        """Rows ``r0:r1`` of ``x @ weight_t`` (``weight_t [C, N]``); their events are ``lo:hi``.

        ``c_loop``: sum them in C (``native.gather_rows``); None: where it can.
        """
        values = None if self.values is None else self.values[lo:hi].to(weight_t.dtype)
        if c_loop is None:
            c_loop = native.supports(weight_t)
        if c_loop and self.index.dtype == torch.int32:
            index = self.index[lo:hi]
            return native.gather_rows(index, values, self.shape[2], r0, r1 - r0, weight_t)
        index = self.index[lo:hi].long() - r0 * self.shape[2]
        return _row_sums(index, values, self.shape[2], r1 - r0, weight_t)


def _same(t):
    return t


def _native_steps(d: Dynamics, like, shape, coefficients: dict, w_t, leak, beta):
    """The C loops for this layer (``like`` is one ``native.supports``), or None: they know the
    surrogates they have a formula for, and need the spike positions over ``[T, B, N]`` to fit
    in int32."""
    if math.prod(shape) >= 2**31 or native.surrogate_kind(d.surrogate) is None:
        return None
    _, batch, size = shape
    return native.NativeSteps(d, batch, size, like.dtype, coefficients, w_t,
                              float(beta.to(like.dtype)), leak is not None)  # fmt: skip


def _reset(d: Dynamics, u, z, theta, v_reset):
    """Post-reset membrane: ``Neuron.spike_and_reset``'s arithmetic (+ rectify)."""
    if d.reset == "subtract":
        v = torch.addcmul(u, z, theta, value=-1)  # u - z * theta
    elif d.reset == "zero":
        v = u - z * (u - v_reset)
    else:
        v = u
    return F.relu(v) if d.rectify else v


def _membrane(d: Dynamics, v, i, a_mem, v_leak, out=None):
    """Pre-reset membrane ``u_t`` from ``v_{t-1}`` and ``i_t``.

    LIF: ``v_leak + a_mem (v - v_leak) + (1 - a_mem) i``, as one ``lerp`` from ``i + v_leak``
    to ``v`` (``v_leak`` None when it is zero); IF: ``v + i``.
    """
    if d.leaky:
        return torch.lerp(i if v_leak is None else i + v_leak, v, a_mem, out=out)
    return torch.add(v, i, out=out)


def _recompute(d: Dynamics, x, z, u_out, i, v, b, keep_i, keep_v, a_syn, a_mem, leak,
               threshold, v_reset, a_adapt):  # fmt: skip
    """One chunk's membranes ``u_out [k, B, N]`` from its start state ``(i, v, b)``, input
    ``x`` and spikes ``z``, plus the state before each step and after the last: lists
    ``[k + 1]`` of ``i`` (``keep_i``), ``v`` (``keep_v``), ``b`` (ALIF) or None."""
    i_hist = [i] if keep_i else None
    v_hist = [v] if keep_v else None
    b_hist = [b] if d.adaptive else None  # b_{t-1}: part of theta_t
    for s in range(x.shape[0]):
        i = torch.addcmul(x[s], a_syn, i) if d.synapse else x[s]
        u = _membrane(d, v, i, a_mem, leak, out=u_out[s])
        theta = threshold + b if d.adaptive else threshold
        v = _reset(d, u, z[s], theta, v_reset)
        if d.adaptive:
            b = torch.add(a_adapt * b, z[s], alpha=d.adapt_jump)
            b_hist.append(b)
        if keep_i:
            i_hist.append(i)
        if keep_v:
            v_hist.append(v)
    return i_hist, v_hist, b_hist


def _native_recompute(kernel, x, z, z_prev, u_out, i, v, b, keep_i, keep_v):
    """``_recompute`` by the C loop: the histories as ``[k + 1, B, N]`` tensors."""
    hist = []
    for start, keep in ((i, keep_i), (v, keep_v), (b, b is not None)):
        h = None
        if keep:
            h = start.new_empty(x.shape[0] + 1, *start.shape)
            h[0] = start
        hist.append(h)
    state = [None if t is None else t.clone() for t in (i, v, b)]  # advanced in place
    after = [None if h is None else h[1:] for h in hist]
    kernel.run(x, z, *state, z_prev, u=u_out, hist=after)
    return hist


def _spike_row(fired, spike_ptr, t: int, plane: int, like) -> torch.Tensor:
    """Step ``t``'s spikes as floats ``[B * N]`` from the flat spike positions ``fired``."""
    index = fired[spike_ptr[t] : spike_ptr[t + 1]].long() - t * plane
    return like.new_zeros(plane).index_fill_(0, index, 1)


class _FusedLayer(torch.autograd.Function):
    """``(input, W_in, W_rec, W_out, coefficients..., beta) -> spikes [T,B,N]`` (and, with
    ``W_out``, the next layer's current); see the module docstring.

    The input is either a current ``[T, B, N]`` (``W_in`` None) or ``Events`` projected by
    ``W_in`` inside. The forward saves the spikes (events or booleans, see the module) and the
    state at the start of each chunk of time steps; the backward walks the chunks from last to
    first, recomputing each chunk's membrane from its start state before differentiating it.
    """

    @staticmethod
    def forward(
        ctx, current, w_in, rec_weight, w_out, a_syn, a_mem, v_leak, threshold, v_reset, a_adapt,
        beta, d, events,
    ):  # fmt: skip
        like = w_in if events is not None else current
        steps, batch = events.shape[:2] if events is not None else current.shape[:2]
        size = w_in.shape[0] if events is not None else current.shape[2]
        chunk = chunk_steps(steps)
        starts = list(range(0, steps, chunk))
        zeros = like.new_zeros(batch, size)
        i, b, z = zeros, zeros, zeros
        v = v_leak.expand(batch, size) if d.leaky else zeros
        leak = v_leak if d.leaky and (v_leak.requires_grad or bool(v_leak.any())) else None
        spikes = like.new_empty(steps, batch, size)
        ptr = events.bounds([t * batch for t in [*starts, steps]]) if events is not None else None
        w_in_t = w_in.t().contiguous() if events is not None else None
        sparse = rec_weight is not None and sparse_recurrence(like.device)  # spikes as events
        w_t = rec_weight.t().contiguous() if rec_weight is not None else None
        spike_index, spike_ptr = [], [0]  # flat spike positions by time step (sparse path)
        fired_t = z.new_zeros(0, dtype=torch.long)  # the last step's, within its [B, N] plane
        row_starts = torch.arange(batch, device=like.device) * size
        state = {"i": [], "v": [], "b": []}  # at the start of each chunk, where it varies
        coefficients = dict(a_syn=a_syn, a_mem=a_mem, v_leak=v_leak, threshold=threshold,
                            v_reset=v_reset, a_adapt=a_adapt)  # fmt: skip
        c_loops = native.supports(like)  # backward follows this choice (ctx)
        kernel = None
        if c_loops:
            kernel = _native_steps(d, like, spikes.shape, coefficients, w_t, leak, beta)
        copy = _same  # the chunk-start states kept: the C loops advance theirs in place
        if kernel is not None:
            i, v, b = zeros.clone(), v.contiguous().clone(), zeros.clone()
            current = current.contiguous() if current is not None else None
            copy = torch.clone
        for c, t0 in enumerate(starts):
            t1 = min(t0 + chunk, steps)
            state["v"].append(copy(v.expand(batch, size)))
            if d.synapse:
                state["i"].append(copy(i))
            if d.adaptive:
                state["b"].append(copy(b))
            if events is not None:
                x = events.project(w_in_t, t0 * batch, t1 * batch, *ptr[c : c + 2], c_loops)
                x = x.view(t1 - t0, batch, size)
            else:
                x = current[t0:t1]
            if kernel is not None:
                previous = spikes[t0 - 1] if t0 > 0 and w_t is not None else None
                index, counts = kernel.run(x, spikes[t0:t1], i, v, b, previous, decide=True)
                if sparse:  # flat positions over [T, B, N]: fit in int32 (see _native_steps)
                    spike_index.append(index + t0 * batch * size)
                    spike_ptr.extend((spike_ptr[-1] + counts.cumsum(0)).tolist())
                continue
            for t in range(t0, t1):
                x_t = x[t - t0]
                if sparse and fired_t.numel() <= DENSE_SPIKE_RATE * batch * size:
                    x_t = x_t + _row_sums(
                        fired_t, None, size, batch, w_t, row_starts
                    )  # + W z_{t-1}
                elif w_t is not None:
                    x_t = torch.addmm(x_t, z, w_t)
                i = torch.addcmul(x_t, a_syn, i) if d.synapse else x_t
                u = _membrane(d, v, i, a_mem, leak)
                theta = threshold + b if d.adaptive else threshold
                z = torch.gt(u, theta, out=spikes[t])  # 0./1. <=> u - theta > 0, exactly
                v = _reset(d, u, z, theta, v_reset)
                if d.adaptive:
                    b = torch.add(a_adapt * b, z, alpha=d.adapt_jump)
                if sparse:
                    fired_t = z.view(-1).nonzero().squeeze(1)
                    spike_index.append(fired_t)
                    spike_ptr.append(spike_ptr[-1] + fired_t.numel())
        ctx.d, ctx.starts, ctx.chunk, ctx.ptr = d, starts, chunk, ptr
        ctx.native, ctx.c_loops = kernel is not None, c_loops
        ctx.event_shape = events.shape if events is not None else None
        ctx.leak, ctx.spike_ptr = leak is not None, spike_ptr if sparse else None
        # the spikes kept: flat positions over [T, B, N] (each step's plus the step's offset),
        # or booleans, a quarter of the floats
        if sparse and kernel is not None:  # already flat positions
            fired = torch.cat(spike_index)
        elif sparse:
            counts = torch.tensor(spike_ptr, device=like.device).diff()
            offsets = torch.arange(steps, device=like.device) * (batch * size)
            fired = torch.cat(spike_index) + offsets.repeat_interleave(counts)
            fired = _compact(fired, spikes.numel())
        else:
            fired = spikes.bool()
        ctx.save_for_backward(
            fired, *(torch.stack(s) if s else None for s in state.values()),
            current if events is None else None, w_in, rec_weight, w_out, a_syn, a_mem, v_leak,
            threshold, v_reset, a_adapt, beta,
            *((events.index, events.values) if events is not None else (None, None)),
        )  # fmt: skip
        ctx.shape = (steps, batch, size)
        ctx.set_materialize_grads(False)  # unused outputs (often the spikes) get no gradient
        if w_out is None:
            return spikes
        if sparse:  # the next layer's input current, summed over the spike events
            out = _row_sums(fired.long(), None, size, steps * batch, w_out.t().contiguous())
        else:
            out = spikes.view(-1, size) @ w_out.t()
        return spikes, out.view(steps, batch, -1)

    @staticmethod
    def backward(ctx, grad_spikes, grad_out=None):
        d, chunk, starts = ctx.d, ctx.chunk, ctx.starts
        (fired, i_start, v_start, b_start, current, w_in, rec_weight, w_out, a_syn, a_mem, v_leak,
         threshold, v_reset, a_adapt, beta, *event_parts) = ctx.saved_tensors  # fmt: skip
        events = None if ctx.event_shape is None else Events(*event_parts, ctx.event_shape)
        names = ("x", "w_in", "w", "w_out", "a_syn", "a_mem", "v_leak", "threshold", "v_reset",
                 "a_adapt", "beta")  # fmt: skip
        need = dict(zip(names, ctx.needs_input_grad, strict=False))
        need["w_out"] = need["w_out"] and grad_out is not None
        steps, batch, size = ctx.shape
        plane = batch * size  # elements per time step
        like = grad_spikes if grad_spikes is not None else grad_out
        dtype = like.dtype
        gain = 1 - a_mem if d.leaky else None
        leak = v_leak if ctx.leak else None
        beta_ = beta.to(dtype)
        need_theta = need["threshold"] or d.adaptive
        keep_v = d.rectify or need["a_mem"]  # post-reset v_{t-1}, v_t
        keep_i = d.synapse and (need["a_syn"] or need["a_mem"])
        w_in_t = w_in.t().contiguous() if events is not None else None
        w_rec_t = rec_weight.t().contiguous() if rec_weight is not None else None
        sparse, spike_ptr = ctx.spike_ptr is not None, ctx.spike_ptr
        n_chunks = len(starts)
        rec_bags = None  # the spike events by column, sorted once when a chunk first needs them
        sums = {}  # per-neuron gradients, summed over time here and over the batch at the end

        def accumulate(name, value):
            sums[name] = value if name not in sums else sums[name] + value

        coefficient_names = ("a_syn", "a_mem", "v_leak", "threshold", "v_reset", "a_adapt")
        kernel = None
        if ctx.native:  # the C loops: coefficient gradients summed over batch and time there
            own_values = (a_syn, a_mem, v_leak, threshold, v_reset, a_adapt)
            coefficients = dict(zip(coefficient_names, own_values, strict=True))
            kernel = _native_steps(d, like, ctx.shape, coefficients, w_rec_t, leak, beta)
            native_sums = {
                f"sum_{name}": like.new_zeros(size, dtype=torch.float64)
                for name in coefficient_names
                if need[name]
            }
            rec = like.new_empty(batch, size)  # dL/dz_t through the recurrence, once known
            rec_known = False
        # weight gradients as sums over events in C (no sort), where the positions are int32
        scatter = kernel is not None and sparse
        scatter_in = kernel is not None and need["w_in"] and events.index.dtype == torch.int32
        if need["w_in"] and not scatter_in:
            in_bags = _ColumnBags(
                events.index, events.values, events.shape[2], 0, chunk * batch, n_chunks
            )

        buffers = {}  # [K, B, N] scratch reused by every chunk (fresh memory costs page faults)

        def scratch(name: str, k: int, zero: bool = False) -> torch.Tensor:
            if name not in buffers:
                new = like.new_zeros if zero else like.new_empty
                buffers[name] = new(chunk, batch, size)
            return buffers[name][:k]

        grad_x = torch.empty_like(current) if need["x"] else None
        grad_w_in_t = grad_w_t = grad_beta = None
        # dL/dv_t, dL/di_t, dL/db_t (the C loops update them in place)
        lam_v, lam_i, lam_b = (like.new_zeros(batch, size) for _ in range(3))
        grad_w_out_t = carry = None  # carry: dL/dz_{t0-1} from the recurrence, across chunks
        for c in range(n_chunks - 1, -1, -1):
            t0 = starts[c]
            t1 = min(t0 + chunk, steps)
            k = t1 - t0
            # -- recompute the chunk's input, membrane and state from its start -------------
            if events is not None:
                x = events.project(w_in_t, t0 * batch, t1 * batch, *ctx.ptr[c : c + 2],
                                   ctx.c_loops)  # fmt: skip
                x = x.view(k, batch, size)
            else:
                x = current[t0:t1]
            previous = None  # z_{t0-1} .. z_{t1-2} as floats [k B, N], where dense products win
            if sparse:
                own = fired[spike_ptr[t0] : spike_ptr[t1]].long() - t0 * plane
                z_chunk = scratch("z", k, zero=True)  # zeros: the chunk's spikes are unset below
                z_chunk.view(-1).index_fill_(0, own, 1)
                # the spikes of t0 - 1 .. t1 - 2 feed this chunk through the recurrence
                index = fired[spike_ptr[max(t0 - 1, 0)] : spike_ptr[t1 - 1]].long()
                index = index - (t0 - 1) * plane
                if kernel is None and index.numel() > DENSE_SPIKE_RATE * k * plane:
                    previous = like.new_zeros(k * plane).index_fill_(0, index, 1).view(-1, size)
                if kernel is not None:  # the C loop adds the recurrent input itself
                    pass
                elif previous is None:
                    x = x + _row_sums(index, None, size, k * batch, w_rec_t).view(x.shape)
                else:
                    x = x + (previous @ w_rec_t).view(k, batch, size)
            else:
                z_chunk = fired[t0:t1].view(torch.uint8).to(dtype)
                if rec_weight is not None:
                    previous = fired[max(t0 - 1, 0) : t1 - 1].view(torch.uint8).to(dtype)
                    if t0 == 0:
                        previous = torch.cat([torch.zeros_like(previous[:1]), previous])
                    if kernel is None:
                        x = x + (previous.view(-1, size) @ w_rec_t).view(k, batch, size)
            u_chunk = scratch("u", k)
            if kernel is not None:
                z_prev = None  # z_{t0-1} [B, N], the recurrent input of the chunk's first step
                if rec_weight is not None and t0 > 0:
                    z_prev = previous[:batch] if previous is not None else _spike_row(
                        fired, spike_ptr, t0 - 1, plane, like
                    ).view(batch, size)  # fmt: skip
                i_hist, v_hist, b_hist = _native_recompute(
                    kernel, x, z_chunk, z_prev, u_chunk,
                    i_start[c] if d.synapse else None, v_start[c],
                    b_start[c] if d.adaptive else None, keep_i, keep_v,
                )  # fmt: skip
            else:
                i_hist, v_hist, b_hist = _recompute(
                    d, x, z_chunk, u_chunk, i_start[c] if d.synapse else None, v_start[c],
                    b_start[c] if d.adaptive else None, keep_i, keep_v,
                    a_syn, a_mem, leak, threshold, v_reset, a_adapt,
                )  # fmt: skip
            del x
            grad_z_chunk = scratch("grad_z", k) if need["beta"] else None
            grad_in = grad_x[t0:t1] if grad_x is not None else scratch("grad_in", k)
            # dL/dz_t from outside: the spikes' own gradient and the next layer's, through W_out
            outside = None if grad_spikes is None else grad_spikes[t0:t1]
            if grad_out is not None:
                through = scratch("through", k)
                torch.mm(grad_out[t0:t1].reshape(k * batch, -1), w_out, out=through.view(-1, size))
                outside = through if outside is None else through + outside
            theta_chunk = threshold
            if d.adaptive:  # theta_t = threshold + b_{t-1}
                b_before = b_hist[:k] if torch.is_tensor(b_hist) else torch.stack(b_hist[:k])
                theta_chunk = threshold + b_before
            if kernel is not None:
                back = kernel.backward(
                    outside=None if outside is None else outside.contiguous(), u=u_chunk,
                    z=z_chunk, i_hist=i_hist, v_hist=v_hist, b_hist=b_hist, lam_v=lam_v,
                    lam_i=lam_i, lam_b=lam_b, grad_in=grad_in, grad_z=grad_z_chunk,
                    **native_sums,
                )  # fmt: skip
                for s in range(k - 1, -1, -1):
                    kernel.step(back, s, t0 + s, rec if rec_known else None)
                    if rec_weight is not None and t0 + s > 0:  # in_t = x_t + W z_{t-1}
                        torch.mm(grad_in[s], rec_weight, out=rec)
                        rec_known = True
            else:
                if outside is None:  # only the recurrence carries gradient into these spikes
                    outside = like.new_zeros(1, 1, 1).expand(k, batch, size)
                grad_z = outside[k - 1] if carry is None else outside[k - 1] + carry
                slopes = d.surrogate.derivative(u_chunk - theta_chunk, beta_)  # z = H(u - theta)
                # -- walk back through the chunk ---------------------------------------------------
                for s in range(k - 1, -1, -1):
                    t = t0 + s
                    z = z_chunk[s] if need_theta or d.reset == "zero" else None
                    theta = threshold + b_hist[s] if d.adaptive else threshold
                    if d.adaptive:  # b_t = a_adapt b_{t-1} + adapt_jump z_t
                        grad_z = torch.add(grad_z, lam_b, alpha=d.adapt_jump)
                    grad_v = lam_v * (v_hist[s + 1] > 0) if d.rectify else lam_v
                    grad_theta, grad_r = None, None
                    if d.reset == "subtract":  # v = u - r theta
                        grad_u = grad_v
                        if need_theta:
                            grad_theta = -z * grad_v
                        if not d.detach_reset:
                            grad_r = -theta * grad_v
                    elif d.reset == "zero":  # v = u - r (u - v_reset)
                        grad_u = grad_v * (1 - z)
                        if need["v_reset"]:
                            accumulate("v_reset", z * grad_v)
                        if not d.detach_reset:
                            grad_r = (v_reset - u_chunk[s]) * grad_v
                    else:
                        grad_u = grad_v
                    if grad_r is not None:
                        grad_z = grad_z + grad_r
                    if grad_z_chunk is not None:
                        grad_z_chunk[s] = grad_z
                    slope = slopes[s]
                    if need_theta:
                        grad_pre = grad_z * slope
                        grad_u = grad_u + grad_pre
                        grad_theta = -grad_pre if grad_theta is None else grad_theta - grad_pre
                        if need["threshold"]:
                            accumulate("threshold", grad_theta)
                    else:
                        grad_u = torch.addcmul(grad_u, grad_z, slope)
                    if d.adaptive:  # theta_t = threshold + b_{t-1}
                        if need["a_adapt"]:
                            accumulate("a_adapt", lam_b * b_hist[s])
                        lam_b = torch.addcmul(grad_theta, a_adapt, lam_b)
                    if d.leaky:  # u = v_leak + a_mem (v_{t-1} - v_leak) + (1 - a_mem) i_t
                        if need["a_mem"]:
                            accumulate("a_mem", grad_u * (v_hist[s] - v_leak - i_hist[s + 1]))
                        if need["v_leak"]:
                            accumulate("v_leak", grad_u)  # times (1 - a_mem), applied once below
                        grad_i = torch.addcmul(lam_i, gain, grad_u, out=grad_in[s])
                        lam_v = a_mem * grad_u
                    else:  # u = v_{t-1} + i_t
                        grad_i = torch.add(lam_i, grad_u, out=grad_in[s])
                        lam_v = grad_u
                    if d.synapse:  # i_t = a_syn i_{t-1} + in_t
                        if need["a_syn"] and t > 0:
                            accumulate("a_syn", grad_i * i_hist[s])
                        lam_i = a_syn * grad_i
                    if s > 0:  # in_t = x_t + W z_{t-1}
                        grad_z = outside[s - 1]
                        if rec_weight is not None:
                            grad_z = torch.addmm(grad_z, grad_i, rec_weight)
                    elif rec_weight is not None and t0 > 0:
                        carry = grad_i @ rec_weight
            # -- the chunk's weight gradients ------------------------------------------------
            flat_grad = grad_in.reshape(k * batch, size)
            if scatter_in:
                lo, hi = ctx.ptr[c : c + 2]
                if grad_w_in_t is None:
                    grad_w_in_t = like.new_zeros(events.shape[2], size)
                values = None if events.values is None else events.values[lo:hi]
                native.scatter_rows(grad_w_in_t, events.index[lo:hi], values, events.shape[2],
                                    0, t0 * batch, flat_grad)  # fmt: skip
            elif need["w_in"]:
                g = in_bags.grad_t(c, flat_grad)
                grad_w_in_t = g if grad_w_in_t is None else grad_w_in_t + g
            if need["w"] and scatter:  # spike z_s feeds step s + 1
                if grad_w_t is None:
                    grad_w_t = like.new_zeros(size, size)
                fed = fired[spike_ptr[max(t0 - 1, 0)] : spike_ptr[t1 - 1]]
                native.scatter_rows(grad_w_t, fed, None, size, batch, t0 * batch, flat_grad)
            elif need["w"]:
                if previous is None:
                    if rec_bags is None:  # spike z_s feeds step s + 1; the last step's, nothing
                        fed = fired[: spike_ptr[steps - 1]]
                        rec_bags = _ColumnBags(fed, None, size, batch, chunk * batch, n_chunks)
                    g = rec_bags.grad_t(c, flat_grad)
                else:
                    g = previous.view(-1, size).t() @ flat_grad
                grad_w_t = g if grad_w_t is None else grad_w_t + g
            if need["w_out"] and scatter:
                g_out = grad_out[t0:t1].reshape(k * batch, -1).contiguous()
                if grad_w_out_t is None:
                    grad_w_out_t = like.new_zeros(size, g_out.shape[1])
                here = fired[spike_ptr[t0] : spike_ptr[t1]]
                native.scatter_rows(grad_w_out_t, here, None, size, 0, t0 * batch, g_out)
            elif need["w_out"]:
                g_out = grad_out[t0:t1].reshape(k * batch, -1)
                g = z_chunk.view(-1, size).t() @ g_out  # [N, K]: small for a readout
                grad_w_out_t = g if grad_w_out_t is None else grad_w_out_t + g
            if need["beta"]:  # d(spike)/d(beta) via the surrogate's primitive, as _SpikeFunction
                with torch.enable_grad():
                    beta_leaf = beta.detach().requires_grad_(True)
                    smooth = d.surrogate.primitive(u_chunk - theta_chunk, beta_leaf.to(dtype))
                    (g,) = torch.autograd.grad(smooth, beta_leaf, grad_z_chunk)
                grad_beta = g if grad_beta is None else grad_beta + g
            if sparse:
                z_chunk.view(-1).index_fill_(0, own, 0)  # all zeros again, for the next chunk

        sums = {name: value.sum(0) for name, value in sums.items()}  # over the batch
        if kernel is not None:
            sums = {name: native_sums[f"sum_{name}"].to(dtype) for name in coefficient_names
                    if need[name]}  # fmt: skip
        if need["v_leak"]:  # v_{-1} = v_leak
            sums["v_leak"] = sums["v_leak"] * gain + lam_v.sum(0)
        zero = like.new_zeros(size)  # e.g. a_syn's gradient over a single step
        coefficient_grads = [
            sums[name] if name in sums else zero if need[name] else None
            for name in coefficient_names
        ]
        return (
            grad_x,
            None if grad_w_in_t is None else grad_w_in_t.t(),
            None if grad_w_t is None else grad_w_t.t(),
            None if grad_w_out_t is None else grad_w_out_t.t(),
            *coefficient_grads,
            grad_beta,
            None,
            None,
        )


@torch.compiler.disable  # a Python time loop: torch.compile would unroll it
def run_fused(
    neuron,
    source: torch.Tensor | Events,
    rec_weight: torch.Tensor | None = None,
    in_weight: torch.Tensor | None = None,
    out_weight: torch.Tensor | None = None,
):
    """Spikes ``[T, B, N]`` of ``neuron`` driven by a current ``source [T, B, N]``, or by
    ``Events`` through ``in_weight [N, C]``, plus the recurrent ``rec_weight [N, N]``.

    With ``out_weight [K, N]`` it returns ``(spikes, spikes @ out_weight.T)``: the next layer's
    input current, computed from the spike events, and its gradient taken one chunk of time
    steps at a time, so that no ``[T, B, N]`` spike gradient is needed when only it is used.
    """
    d = neuron.fused_dynamics()
    c = neuron.coefficients()
    events = source if isinstance(source, Events) else None
    if (events is None) != (in_weight is None):
        raise ValueError("run_fused takes in_weight exactly when the source is Events")
    like = in_weight if events is not None else source

    def coefficient(name):
        value = c.get(name)
        return None if value is None else value.to(like.dtype)

    beta = d.surrogate.beta.to(like.device)
    return _FusedLayer.apply(
        None if events is not None else source,
        in_weight,
        rec_weight,
        out_weight,
        coefficient("a_syn"),
        coefficient("a_mem"),
        coefficient("v_leak"),
        coefficient("threshold"),
        coefficient("v_reset"),
        coefficient("a_adapt"),
        beta,
        d,
        events,
    )


def spike_outer(grad: torch.Tensor, fired: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """``sum_t grad[t]^T z[t]`` for boolean spikes ``fired``, a few time steps at a time.

    Converting all spikes to floats at once would add a ``[T, B, N]`` float temporary.
    """
    out = grad.new_zeros(grad.shape[-1], fired.shape[-1])
    for start in range(0, grad.shape[0], chunk):
        g = grad[start : start + chunk].flatten(0, -2)
        z = fired[start : start + chunk].flatten(0, -2).to(grad.dtype)
        out.addmm_(g.t(), z)
    return out


class _SpikeProjection(torch.autograd.Function):
    """``z @ weight.T`` for 0/1 spikes ``z``, saving them as booleans (a quarter of floats)."""

    @staticmethod
    def forward(ctx, z, weight):
        ctx.save_for_backward(z.bool(), weight)
        return z @ weight.t()

    @staticmethod
    def backward(ctx, grad):
        fired, weight = ctx.saved_tensors
        grad_z = grad @ weight if ctx.needs_input_grad[0] else None
        grad_w = spike_outer(grad, fired) if ctx.needs_input_grad[1] else None
        return grad_z, grad_w


@torch.compiler.disable
def project_spikes(z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``z @ weight.T`` for spikes that are exactly 0 or 1 (the fused layers' output)."""
    return _SpikeProjection.apply(z, weight)


def _filter(x, a_syn: float, a_mem: float, reverse: bool = False, c_loop: bool = False):
    """The leaky readout's two first-order stages over time (backwards: ``reverse``).

    ``i = a_syn i + x_t`` and ``v = a_mem v + (1 - a_mem) i`` (one ``lerp``), written in place;
    with ``c_loop``, by the C loop (``native.leaky_filter``).
    """
    if c_loop:
        return native.leaky_filter(x, a_syn, a_mem, reverse)
    i = v = x.new_zeros(x.shape[1:])
    out = torch.empty_like(x)
    for t in reversed(range(x.shape[0])) if reverse else range(x.shape[0]):
        i = torch.add(x[t], i, alpha=a_syn)
        v = torch.lerp(i, v, a_mem, out=out[t])
    return out


class _LeakyIntegrator(torch.autograd.Function):
    """A linear, time-invariant filter: its adjoint is the same filter run backwards in time."""

    @staticmethod
    def forward(ctx, x, a_syn, a_mem):
        ctx.coefficients = (float(a_syn), float(a_mem))
        ctx.c_loop = native.supports(x)  # the backward follows the forward's choice
        return _filter(x, *ctx.coefficients, c_loop=ctx.c_loop)

    @staticmethod
    def backward(ctx, grad):
        return _filter(grad, *ctx.coefficients, reverse=True, c_loop=ctx.c_loop), None, None


@torch.compiler.disable  # a Python time loop: torch.compile would unroll it
def leaky_integrate(x: torch.Tensor, a_syn: torch.Tensor, a_mem: torch.Tensor) -> torch.Tensor:
    """Membrane ``[T, B, K]`` of the non-spiking readout (fixed decays); saves nothing."""
    return _LeakyIntegrator.apply(x, a_syn.to(x.dtype), a_mem.to(x.dtype))


class _EventProjection(torch.autograd.Function):
    """``x @ weight.T`` for a constant, mostly-zero ``x`` given as ``Events``; saves only them."""

    @staticmethod
    def forward(ctx, weight, index, values, events):
        steps, batch, _ = events.shape
        ctx.save_for_backward(index, values)
        ctx.shape = events.shape
        out = events.project(weight.t().contiguous(), 0, steps * batch, 0, index.numel())
        return out.view(steps, batch, -1)

    @staticmethod
    def backward(ctx, grad):
        index, values = ctx.saved_tensors
        steps, batch, channels = ctx.shape
        rows = steps * batch
        bags = _ColumnBags(index, values, channels, 0, rows, 1)  # the whole input: one chunk
        return bags.grad_t(0, grad.reshape(rows, -1)).t(), None, None, None


@torch.compiler.disable  # data-dependent shapes (the events)
def project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T``; for constant input with few events (spike data), at a cost per event.

    Each non-zero ``x[t, b, c]`` adds ``x[t, b, c] * weight[:, c]`` (an ``embedding_bag`` sum),
    and the weight gradient is likewise a sum over the events, so both scale with the number
    of input events instead of ``T * B * C``. Other input: a dense product.
    """
    events = Events.of(x)
    if events is None:
        return x @ weight.t()
    return _EventProjection.apply(weight, events.index, events.values, events)
