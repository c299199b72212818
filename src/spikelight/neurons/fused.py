"""The whole time loop of a spiking layer in one autograd Function, with a generic BPTT.

Autograd through a per-step loop records ~15 small operations per time step and keeps every
intermediate for the backward pass. :func:`run_fused` instead runs any neuron's step of the
linear form (:mod:`.dynamics`), optionally with a recurrent weight matrix, without recording,
and derives every gradient in one reverse sweep. What it keeps for that sweep:

- the spikes: with the C loops the flat positions of the spike events (4 bytes per spike,
  listed every step for the recurrent sum, and reused by the weight gradients), else booleans;
  never the ``[T, B, N]`` membrane;
- the state at the start of each chunk of ``ceil(sqrt(T))`` steps. The backward recomputes one
  chunk's steps from its start state (the recurrent input from the saved spikes), then walks
  back through it;
- for sparse input (binned spike data) only the input events (:mod:`.events`): the input
  current ``x_t = W_in s_t`` is summed from them a chunk at a time, forwards and again
  backwards, and ``W_in``'s gradient is a sum over the same events.

The last hidden layer also projects its spikes onto the readout and receives that projection's
gradient a chunk at a time, so a training step holds no ``[T, B, N]`` tensor besides the spikes
it returns.

Walking back one step (:func:`_back_step`), with ``lam = dL/ds_t`` and ``in_t = x_t + W z_{t-1}``:
the post-spike update sends ``E^T lam`` to ``q`` and ``D . lam`` to ``z``; the reset, the
surrogate slope and the threshold give ``dL/dp``; the pre-spike update gives
``dL/ds_{t-1} = A^T dL/dp`` and ``dL/din_t = B . dL/dp``. Each coefficient's gradient is its
local derivative summed over batch and time; autograd carries it on to the neuron parameters.
On a CUDA device with ``triton`` installed the steps run as Triton kernels generated from the
neuron's form (:mod:`.fused_triton`; the spikes kept as booleans and the products dense, which
are cheap there, where listing spikes would wait for the device). On the CPU they run as C loops
(``native.py``, ``fused_native.c``) where a C compiler is available, else as the PyTorch loops
here (:func:`spikelight.neurons.dynamics.step`).

Under autocast (``trainer.precision=bf16-mixed`` / ``16-mixed``) the layer's input current
arrives in the lower precision; the layer runs in float32 (its state, surrogate, coefficients
and the readout projection) and gives float32 spikes.
"""

from __future__ import annotations

import math

import torch

from spikelight.neurons import dynamics, fused_triton, native
from spikelight.neurons.dynamics import Dynamics
from spikelight.neurons.events import Events, sparse_matrix


def chunk_steps(steps: int) -> int:
    """Time steps per chunk: ``ceil(sqrt(T))``.

    The forward keeps the state at each chunk start (``T / K`` of them) and the backward holds
    a few ``[K, B, N]`` buffers, so ``K ~ sqrt(T)`` keeps both at ``O(sqrt(T) B N)``.
    """
    return max(1, math.isqrt(max(steps - 1, 0)) + 1)


def c_loops_reason(surrogate, like: torch.Tensor, shape=None) -> str | None:
    """Why the C loops cannot run a layer with ``surrogate`` on tensors like ``like`` (spikes
    of ``shape``), or None when they can: built and enabled, a surrogate they have a formula
    for, and spike positions that fit in int32."""
    why = native.unavailable(like)
    if why is None and native.surrogate_kind(surrogate) is None:
        why = f"no C formula for {type(surrogate).__name__}"
    if why is None and shape is not None and math.prod(shape) >= 2**31:
        why = f"{math.prod(shape)} spike positions do not fit in int32"
    return why


def describe(neuron, like: torch.Tensor) -> str:
    """The time loop a layer of ``neuron`` runs on tensors like ``like``, in words (the model
    summary shows it for every layer, so that no layer falls back silently)."""
    reason = neuron.fused_reason()
    if reason is not None:
        return f"autograd loop ({reason})"
    like = like.to(compute_dtype(like.dtype))
    no_triton = fused_triton.unavailable(neuron.surrogate, like)
    if no_triton is None:
        return "fused, Triton kernels"
    why = c_loops_reason(neuron.surrogate, like)
    if why is None:
        return "fused, C loops"
    return f"fused, PyTorch loops ({why}; Triton: {no_triton})"


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a fused layer computes in: float32 for half-precision input (autocast)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _back_step(d: Dynamics, need: dict, sums: dict, lam, grad_z, p, z, s_prev, x_in, beta):
    """One step back through :func:`dynamics.step`: ``(dL/ds_{t-1}, dL/din_t, dL/dz_t)``.

    ``lam``: ``dL/ds_t`` rows; ``grad_z``: ``dL/dz_t`` from outside the neuron; ``p``: the
    pre-spike update; ``s_prev``, ``x_in``: the step's state and input (for the gradients of
    ``A`` and ``B``). The coefficients' local gradients are added into ``sums`` by slot.
    """
    form, m = d.form, d.form.membrane

    def add(slot, value):
        sums[slot] = value if slot not in sums else sums[slot] + value

    theta = dynamics.theta_of(d, p)
    q = list(p)
    q[m] = dynamics.reset(d, p[m], z, theta)
    grad_q = [None if j in form.post_rows else lam[j] for j in range(len(p))]
    for (j, col), e in d.post.items():  # s'_j = sum E q + D z
        grad_q[col] = e * lam[j] if grad_q[col] is None else grad_q[col] + e * lam[j]
        if need[("post", (j, col))]:
            add(("post", (j, col)), lam[j] * q[col])
    for j, spike_gain in d.post_spike.items():
        grad_z = grad_z + spike_gain * lam[j]
        if need[("post_spike", j)]:
            add(("post_spike", j), lam[j] * z)
    g = grad_q[m] if grad_q[m] is not None else torch.zeros_like(p[m])
    if form.rectify:
        g = g * (q[m] > 0)
    grad_theta = None
    if form.reset == "subtract":  # q_m = p_m - r theta
        grad_p = g
        grad_theta = -z * g
        if not form.detach_reset:
            grad_z = grad_z - theta * g
    elif form.reset == "zero":  # q_m = p_m - r (p_m - v_reset)
        grad_p = g * (1 - z)
        if need[("v_reset", None)]:
            add(("v_reset", None), z * g)
        if not form.detach_reset:
            grad_z = grad_z + (d.v_reset - p[m]) * g
    else:
        grad_p = g
    through = grad_z * form.surrogate.derivative(p[m] - theta, beta)  # z = H(p_m - theta)
    grad_p = grad_p + through
    grad_theta = -through if grad_theta is None else grad_theta - through
    if need[("threshold", None)]:
        add(("threshold", None), grad_theta)
    grad_p_rows = list(grad_q)
    grad_p_rows[m] = grad_p
    if form.adaptive is not None:  # theta = threshold + p_a
        a = form.adaptive
        grad_p_rows[a] = grad_theta if grad_p_rows[a] is None else grad_p_rows[a] + grad_theta
    zero = torch.zeros_like(grad_p)
    grad_p_rows = [zero if g is None else g for g in grad_p_rows]
    grad_in = None
    for j, gain in d.inputs.items():  # p = A s + B x + c
        grad_in = gain * grad_p_rows[j] if grad_in is None else grad_in + gain * grad_p_rows[j]
        if need[("inputs", j)]:
            add(("inputs", j), grad_p_rows[j] * x_in)
    for j in d.constants:
        if need[("constants", j)]:
            add(("constants", j), grad_p_rows[j])
    lam_prev = [zero] * len(p)
    for (j, col), a in d.pre.items():
        lam_prev[col] = lam_prev[col] + a * grad_p_rows[j]
        if need[("pre", (j, col))]:
            add(("pre", (j, col)), grad_p_rows[j] * s_prev[col])
    return lam_prev, zero if grad_in is None else grad_in, grad_z


class _FusedLayer(torch.autograd.Function):
    """``(input, W_in, b_in, W_rec, W_out, beta, form, events, coefficients...) -> spikes``
    ``[T, B, N]`` (and, with ``W_out``, the next layer's current); see the module docstring.

    The input is either a current ``[T, B, N]`` (``W_in`` None) or ``Events`` projected by
    ``W_in`` inside, plus the bias ``b_in [N]`` (or None) at every step. The forward saves the
    spikes (events or booleans, see the module) and the state at the start of each chunk of
    time steps; the backward walks the chunks from last to first, recomputing each chunk's steps
    from its start state before differentiating them.
    """

    @staticmethod
    def forward(ctx, current, w_in, b_in, rec_weight, w_out, beta, form, events, *coefficients):
        d = Dynamics.of(form, coefficients)
        like = w_in if events is not None else current
        steps, batch = events.shape[:2] if events is not None else current.shape[:2]
        size = w_in.shape[0] if events is not None else current.shape[2]
        chunk = chunk_steps(steps)
        starts = list(range(0, steps, chunk))
        state = torch.stack(d.initial_state(batch, like))  # [k, B, N]
        spikes = like.new_empty(steps, batch, size)
        ptr = events.bounds([t * batch for t in [*starts, steps]]) if events is not None else None
        w_in_t = w_in.t().contiguous() if events is not None else None
        w_t = rec_weight.t().contiguous() if rec_weight is not None else None
        kernel, c_loops = None, native.supports(like)  # the backward follows these choices
        triton_kernel = None
        if fused_triton.unavailable(form.surrogate, like, spikes.shape) is None:
            triton_kernel = fused_triton.Kernel(d, batch, size, beta)
            current = current.contiguous() if current is not None else None
        elif c_loops_reason(form.surrogate, like, spikes.shape) is None:
            kernel = native.Kernel(d, batch, size, like.dtype, w_t, float(beta.to(like.dtype)))
            current = current.contiguous() if current is not None else None
        spike_index, spike_ptr = [], [0]  # the C loops' spike positions, by time step
        chunk_states = []
        z = like.new_zeros(batch, size)
        for c, t0 in enumerate(starts):
            t1 = min(t0 + chunk, steps)
            chunk_states.append(state.clone())
            if events is not None:
                x = events.project(w_in_t, t0 * batch, t1 * batch, *ptr[c : c + 2], c_loops)
                x = x.view(t1 - t0, batch, size)
                if b_in is not None:
                    x = x + b_in
            else:
                x = current[t0:t1]
            if kernel is not None:  # the state advances in place
                previous = spikes[t0 - 1] if t0 > 0 and w_t is not None else None
                index, counts = kernel.run(x, spikes[t0:t1], state, previous, decide=True)
                spike_index.append(index + t0 * batch * size)  # over [T, B, N]: int32
                spike_ptr.extend((spike_ptr[-1] + counts.cumsum(0)).tolist())
                continue
            if triton_kernel is not None and w_t is None:  # the whole chunk in one launch
                triton_kernel.run(x.contiguous(), spikes[t0:t1], state, decide=True)
                continue
            if triton_kernel is not None and triton_kernel.recurrent:  # W z inside, too
                before = spikes[t0 - 1] if t0 > 0 else z
                triton_kernel.run(x.contiguous(), spikes[t0:t1], state, decide=True, w_t=w_t,
                                  z_prev=before)  # fmt: skip
                continue
            if triton_kernel is not None:  # one step per launch, after the recurrent product
                for t in range(t0, t1):
                    x_t = torch.addmm(x[t - t0], z, w_t)
                    triton_kernel.run(x_t[None], spikes[t : t + 1], state, decide=True)
                    z = spikes[t]
                continue
            rows = tuple(state.unbind(0))
            for t in range(t0, t1):
                x_t = x[t - t0] if w_t is None else torch.addmm(x[t - t0], z, w_t)
                z, _, rows = dynamics.step(
                    d, x_t, rows, spike=lambda u, theta, t=t: torch.gt(u, theta, out=spikes[t])
                )  # 0./1. <=> u - theta > 0, exactly
            state = torch.stack(rows)
        ctx.form, ctx.starts, ctx.chunk, ctx.ptr, ctx.c_loops = form, starts, chunk, ptr, c_loops
        ctx.triton, ctx.dtype = triton_kernel is not None, like.dtype
        ctx.event_shape = events.shape if events is not None else None
        ctx.spike_ptr = spike_ptr if kernel is not None else None  # None: the PyTorch loops
        # the spikes kept: flat positions over [T, B, N], or booleans (a quarter of floats)
        fired = torch.cat(spike_index) if kernel is not None else spikes.bool()
        ctx.save_for_backward(
            fired, torch.stack(chunk_states), current if events is None else None, w_in, b_in,
            rec_weight, w_out, beta,
            *((events.index, events.values) if events is not None else (None, None)),
            *coefficients,
        )  # fmt: skip
        ctx.shape = (steps, batch, size)
        ctx.set_materialize_grads(False)  # unused outputs (often the spikes) get no gradient
        if w_out is None:
            return spikes
        if kernel is not None:  # the next layer's input current, summed over the spike events
            out = native.gather_rows(fired, None, size, 0, steps * batch, w_out.t().contiguous())
        else:
            out = spikes.view(-1, size) @ w_out.t()
        return spikes, out.view(steps, batch, -1)

    @staticmethod
    def backward(ctx, grad_spikes, grad_out=None):
        form, chunk, starts, spike_ptr = ctx.form, ctx.chunk, ctx.starts, ctx.spike_ptr
        (fired, chunk_states, current, w_in, b_in, rec_weight, w_out, beta, event_index,
         event_values, *coefficients) = ctx.saved_tensors  # fmt: skip
        d = Dynamics.of(form, coefficients)
        events = None if ctx.event_shape is None else Events(event_index, event_values,
                                                             ctx.event_shape)  # fmt: skip
        need = dict(
            zip(("x", "w_in", "b_in", "w", "w_out", "beta"), ctx.needs_input_grad, strict=False)
        )
        need.update(zip(form.slots, ctx.needs_input_grad[8:], strict=True))
        need["w_out"] = need["w_out"] and grad_out is not None
        steps, batch, size = ctx.shape
        k_states = len(form.states)
        plane = batch * size  # elements per time step
        dtype = ctx.dtype  # the forward's (float32 under autocast, whatever the gradients')
        grad_spikes = None if grad_spikes is None else grad_spikes.to(dtype)
        grad_out = None if grad_out is None else grad_out.to(dtype)
        like = grad_spikes if grad_spikes is not None else grad_out
        beta_ = beta.to(dtype)
        keep_s = any(need[("pre", e)] for e in form.pre)  # the state before each step
        keep_in = any(need[("inputs", j)] for j in form.inputs)  # each step's input
        w_in_t = w_in.t().contiguous() if events is not None else None
        w_rec_t = rec_weight.t().contiguous() if rec_weight is not None else None
        n_chunks = len(starts)
        sums = {}  # per-neuron gradients by slot, summed over time here, over the batch at the end
        kernel = None
        if spike_ptr is not None:  # the C loops: the coefficients' gradients summed over B and T
            kernel = native.Kernel(d, batch, size, dtype, w_rec_t, float(beta_))
            c_sums = {slot: like.new_zeros(size, dtype=torch.float64)
                      for slot in form.slots if need[slot] and slot[0] != "initial"}  # fmt: skip
        triton_kernel = None
        if ctx.triton:  # the coefficients' gradients summed over T here, over B at the end
            triton_kernel = fused_triton.Kernel(d, batch, size, beta_, need)
            t_sums = triton_kernel.new_sums(like)
        if kernel is not None or triton_kernel is not None:
            rec = like.new_empty(batch, size)  # dL/dz_t through the recurrence, once known
            rec_known = False
        # W_in's gradient as a sum over the events in C (no sort), where the positions are int32
        scatter_in = kernel is not None and need["w_in"] and events.index.dtype == torch.int32

        buffers = {}  # scratch reused by every chunk (fresh memory costs page faults)

        def scratch(name: str, k: int, rows: int = 0) -> torch.Tensor:
            if name not in buffers:
                buffers[name] = like.new_empty(chunk, *((rows,) if rows else ()), batch, size)
            return buffers[name][:k]

        grad_x = torch.empty_like(current) if need["x"] else None
        grad_w_in_t = grad_b_in = grad_w_t = grad_w_out_t = grad_beta = None
        lam = like.new_zeros(k_states, batch, size)  # dL/ds_t (the C loops update it in place)
        lam_rows = tuple(lam.unbind(0))
        carry = None  # dL/dz_{t0-1} from the recurrence, across chunks (PyTorch loops)
        for c in range(n_chunks - 1, -1, -1):
            t0 = starts[c]
            t1 = min(t0 + chunk, steps)
            k = t1 - t0
            # -- recompute the chunk's input and steps from its start state ------------------
            if events is not None:
                x = events.project(w_in_t, t0 * batch, t1 * batch, *ctx.ptr[c : c + 2],
                                   ctx.c_loops)  # fmt: skip
                x = x.view(k, batch, size)
                if b_in is not None:
                    x = x + b_in
            else:
                x = current[t0:t1]
            p_hist = scratch("p", k, k_states)
            s_hist = scratch("s", k, k_states) if keep_s else None
            previous = None  # z_{t0-1} .. z_{t1-2} as floats (PyTorch loops, recurrent)
            if kernel is not None:  # the spikes from their positions; the C loop adds W z_{t-1}
                own = fired[spike_ptr[t0] : spike_ptr[t1]].long() - t0 * plane
                z_chunk = scratch("z", k).zero_()
                z_chunk.view(-1).index_fill_(0, own, 1)
                z_prev = None  # z_{t0-1} [B, N], the recurrent input of the chunk's first step
                if rec_weight is not None and t0 > 0:
                    before = fired[spike_ptr[t0 - 1] : spike_ptr[t0]].long() - (t0 - 1) * plane
                    z_prev = like.new_zeros(batch, size).view(-1).index_fill_(0, before, 1)
                    z_prev = z_prev.view(batch, size)
                in_hist = scratch("in", k) if keep_in else None
                kernel.run(x, z_chunk, chunk_states[c].clone(), z_prev, p_hist=p_hist,
                           s_hist=s_hist, in_hist=in_hist)  # fmt: skip
            else:
                z_chunk = fired[t0:t1].view(torch.uint8).to(dtype)
                if rec_weight is not None:
                    previous = fired[max(t0 - 1, 0) : t1 - 1].view(torch.uint8).to(dtype)
                    if t0 == 0:
                        previous = torch.cat([torch.zeros_like(previous[:1]), previous])
                    x = x + (previous.view(-1, size) @ w_rec_t).view(k, batch, size)
                in_hist = x = x.contiguous()
                rows = tuple(chunk_states[c].unbind(0))
                if triton_kernel is not None:
                    triton_kernel.run(x, z_chunk, chunk_states[c].clone(), decide=False,
                                      p_hist=p_hist, s_hist=s_hist)  # fmt: skip
                else:
                    for s in range(k):
                        if s_hist is not None:
                            s_hist[s] = torch.stack(rows)
                        _, p, rows = dynamics.step(d, x[s], rows, spike=z_chunk[s])
                        p_hist[s] = torch.stack(p)
            grad_z_chunk = scratch("grad_z", k) if need["beta"] else None
            grad_in = grad_x[t0:t1] if grad_x is not None else scratch("grad_in", k)
            # dL/dz_t from outside: the spikes' own gradient and the next layer's, through W_out
            outside = None if grad_spikes is None else grad_spikes[t0:t1]
            if grad_out is not None:
                through = scratch("through", k)
                torch.mm(grad_out[t0:t1].reshape(k * batch, -1), w_out, out=through.view(-1, size))
                outside = through if outside is None else through + outside
            if kernel is not None:
                back = kernel.backward(
                    outside=None if outside is None else outside.contiguous(), p=p_hist,
                    z=z_chunk, s_hist=s_hist, in_hist=in_hist, lam=lam, grad_in=grad_in,
                    grad_z=grad_z_chunk, sums=c_sums,
                )  # fmt: skip
                for s in range(k - 1, -1, -1):
                    kernel.step(back, s, rec if rec_known else None)
                    if rec_weight is not None and t0 + s > 0:  # in_t = x_t + W z_{t-1}
                        torch.mm(grad_in[s], rec_weight, out=rec)
                        rec_known = True
            elif triton_kernel is not None:
                walk = dict(p=p_hist, z=z_chunk, lam=lam, grad_in=grad_in, sums=t_sums,
                            outside=None if outside is None else outside.contiguous(),
                            s_hist=s_hist, in_hist=in_hist, grad_z=grad_z_chunk)  # fmt: skip
                if rec_weight is None:  # the whole chunk in one launch
                    triton_kernel.back(s_hi=k, steps=k, **walk)
                elif triton_kernel.recurrent:  # with dL/dz through the recurrence inside
                    triton_kernel.back(s_hi=k, steps=k, rec=rec, w=rec_weight.contiguous(),
                                       rec_known=rec_known, **walk)  # fmt: skip
                    rec_known = True
                recurrent_steps = rec_weight is not None and not triton_kernel.recurrent
                for s in range(k - 1, -1, -1) if recurrent_steps else ():
                    triton_kernel.back(s_hi=s + 1, steps=1, rec=rec if rec_known else None,
                                       **walk)  # fmt: skip
                    if t0 + s > 0:  # in_t = x_t + W z_{t-1}
                        torch.mm(grad_in[s], rec_weight, out=rec)
                        rec_known = True
            else:
                if outside is None:  # only the recurrence carries gradient into these spikes
                    outside = like.new_zeros(1, 1, 1).expand(k, batch, size)
                grad_z = outside[k - 1] if carry is None else outside[k - 1] + carry
                for s in range(k - 1, -1, -1):  # walk back through the chunk
                    s_prev = None if s_hist is None else tuple(s_hist[s].unbind(0))
                    lam_rows, grad_in[s], grad_z = _back_step(
                        d, need, sums, lam_rows, grad_z, tuple(p_hist[s].unbind(0)), z_chunk[s],
                        s_prev, in_hist[s], beta_,
                    )  # fmt: skip
                    if grad_z_chunk is not None:
                        grad_z_chunk[s] = grad_z
                    if s > 0:  # in_t = x_t + W z_{t-1}
                        grad_z = outside[s - 1]
                        if rec_weight is not None:
                            grad_z = torch.addmm(grad_z, grad_in[s], rec_weight)
                    elif rec_weight is not None and t0 > 0:
                        carry = grad_in[s] @ rec_weight
            del x
            # -- the chunk's weight gradients: sums over the events (C), or dense products ---
            flat_grad = grad_in.reshape(k * batch, size)
            if need["b_in"]:  # in_t = W_in s_t + b_in + W z_{t-1}
                g = flat_grad.sum(0)
                grad_b_in = g if grad_b_in is None else grad_b_in + g
            if need["w_in"]:
                lo, hi = ctx.ptr[c : c + 2]
                index, width = events.index[lo:hi], events.shape[2]
                values = None if events.values is None else events.values[lo:hi]
                if grad_w_in_t is None:
                    grad_w_in_t = like.new_zeros(width, size)
                if scatter_in:
                    native.scatter_rows(grad_w_in_t, index, values, width, 0, t0 * batch,
                                        flat_grad)  # fmt: skip
                else:
                    index = index.long() - t0 * batch * width
                    S = sparse_matrix(index, values, width, k * batch, dtype)
                    grad_w_in_t += S.t() @ flat_grad
            if need["w"] and kernel is not None:  # spike z_s feeds step s + 1
                if grad_w_t is None:
                    grad_w_t = like.new_zeros(size, size)
                fed = fired[spike_ptr[max(t0 - 1, 0)] : spike_ptr[t1 - 1]]
                native.scatter_rows(grad_w_t, fed, None, size, batch, t0 * batch, flat_grad)
            elif need["w"]:
                g = previous.view(-1, size).t() @ flat_grad
                grad_w_t = g if grad_w_t is None else grad_w_t + g
            if need["w_out"]:
                g_out = grad_out[t0:t1].reshape(k * batch, -1)
                if kernel is not None:
                    if grad_w_out_t is None:
                        grad_w_out_t = like.new_zeros(size, g_out.shape[1])
                    here = fired[spike_ptr[t0] : spike_ptr[t1]]
                    native.scatter_rows(grad_w_out_t, here, None, size, 0, t0 * batch,
                                        g_out.contiguous())  # fmt: skip
                else:
                    g = z_chunk.view(-1, size).t() @ g_out  # [N, K]: small for a readout
                    grad_w_out_t = g if grad_w_out_t is None else grad_w_out_t + g
            if need["beta"]:  # d(spike)/d(beta) via the surrogate's primitive, as _SpikeFunction
                u, theta = p_hist[:, form.membrane], dynamics.theta_of(d, p_hist.unbind(1))
                with torch.enable_grad():
                    beta_leaf = beta.detach().requires_grad_(True)
                    smooth = form.surrogate.primitive(u - theta, beta_leaf.to(dtype))
                    (g,) = torch.autograd.grad(smooth, beta_leaf, grad_z_chunk)
                grad_beta = g if grad_beta is None else grad_beta + g

        if kernel is not None:
            sums = {slot: value.to(dtype) for slot, value in c_sums.items()}
            lam_rows = tuple(lam.unbind(0))
        elif triton_kernel is not None:
            sums = triton_kernel.slot_sums(t_sums, batch)
            lam_rows = tuple(lam.unbind(0))
        else:
            sums = {slot: value.sum(0) for slot, value in sums.items()}  # over the batch
        for j in form.initial:  # s_{-1}: the initial state
            sums[("initial", j)] = lam_rows[j].sum(0)
        zero = like.new_zeros(size)  # e.g. a coefficient whose local derivative never appeared
        coefficient_grads = [sums.get(slot, zero) if need[slot] else None for slot in form.slots]
        return (
            grad_x,
            None if grad_w_in_t is None else grad_w_in_t.t(),
            grad_b_in,
            None if grad_w_t is None else grad_w_t.t(),
            None if grad_w_out_t is None else grad_w_out_t.t(),
            grad_beta,
            None,
            None,
            *coefficient_grads,
        )


@torch.compiler.disable  # a Python time loop: torch.compile would unroll it
def run_fused(
    neuron,
    source: torch.Tensor | Events,
    rec_weight: torch.Tensor | None = None,
    in_weight: torch.Tensor | None = None,
    out_weight: torch.Tensor | None = None,
    in_bias: torch.Tensor | None = None,
):
    """Spikes ``[T, B, N]`` of ``neuron`` driven by a current ``source [T, B, N]``, or by
    ``Events`` through ``in_weight [N, C]`` (plus ``in_bias [N]`` at every step, or None),
    plus the recurrent ``rec_weight [N, N]``.

    With ``out_weight [K, N]`` it returns ``(spikes, spikes @ out_weight.T)``: the next layer's
    input current, computed from the spike events, and its gradient taken one chunk of time
    steps at a time, so that no ``[T, B, N]`` spike gradient is needed when only it is used.
    """
    reason = neuron.fused_reason()
    if reason is not None:
        raise ValueError(f"run_fused cannot run {type(neuron).__name__}: {reason}")
    events = source if isinstance(source, Events) else None
    if (events is None) != (in_weight is None):
        raise ValueError("run_fused takes in_weight exactly when the source is Events")
    if in_bias is not None and events is None:
        raise ValueError("run_fused takes in_bias only with Events (add it to a current)")
    like = in_weight if events is not None else source
    dtype = compute_dtype(like.dtype)
    if events is None:
        source = source.to(dtype)  # a half-precision current (autocast): the state is float32
    rec_weight, in_weight, out_weight, in_bias = (
        None if w is None else w.to(dtype) for w in (rec_weight, in_weight, out_weight, in_bias)
    )
    d = neuron.dynamics().map(lambda t: t.to(dtype))
    beta = d.form.surrogate.beta.to(like.device)
    with torch.autocast(like.device.type, enabled=False):  # the loop's products in its dtype
        return _FusedLayer.apply(
            None if events is not None else source, in_weight, in_bias, rec_weight, out_weight,
            beta, d.form, events, *d.tensors(),
        )  # fmt: skip
