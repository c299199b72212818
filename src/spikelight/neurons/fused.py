"""The whole time loop of a spiking layer in one autograd Function, with a hand-written BPTT.

Autograd through a per-step loop records ~10 small operations per time step and keeps every
intermediate for the backward pass. :func:`run_fused` instead runs the IF / LIF / ALIF
recurrences (optionally with a recurrent weight matrix) without recording, saves only the
pre-reset membrane ``u`` and the spikes as booleans (plus the adaptation ``b`` for ALIF, the
synaptic current ``i`` when a time constant learns), and derives every gradient in one reverse
sweep that works on one ``[B, N]`` time step at a time. The equations are
exactly those of the neuron classes' ``step`` (same arithmetic, same order), so spikes are
identical and gradients equal the autograd loop's to rounding (``tests/test_fused.py``).

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

import warnings
from dataclasses import dataclass

import torch
from torch.nn import functional as F

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


def _reset(d: Dynamics, u, z, theta, v_reset):
    """Post-reset membrane: ``Neuron.spike_and_reset``'s arithmetic (+ rectify)."""
    if d.reset == "subtract":
        v = torch.addcmul(u, z, theta, value=-1)  # u - z * theta
    elif d.reset == "zero":
        v = u - z * (u - v_reset)
    else:
        v = u
    return F.relu(v) if d.rectify else v


class _FusedLayer(torch.autograd.Function):
    """``(x [T,B,N], W, coefficients..., beta) -> spikes [T,B,N]``; see the module docstring."""

    @staticmethod
    def forward(ctx, x, rec_weight, a_syn, a_mem, v_leak, threshold, v_reset, a_adapt, beta, d):
        steps, batch, size = x.shape
        zeros = x.new_zeros(batch, size)
        i, b, z = zeros, zeros, zeros
        v = v_leak.expand(batch, size) if d.leaky else zeros
        gain = 1 - a_mem if d.leaky else None
        # i is only needed backwards for the gradient of a time constant
        keep_i = d.synapse and (ctx.needs_input_grad[2] or ctx.needs_input_grad[3])
        spikes, u_all = torch.empty_like(x), torch.empty_like(x)
        fired = torch.empty(x.shape, dtype=torch.bool, device=x.device)  # saved: 1 byte/spike
        b_all = torch.empty_like(x) if d.adaptive else None  # b_{t-1}: part of theta_t
        i_all = torch.empty_like(x) if keep_i else None
        w_t = rec_weight.t() if rec_weight is not None else None
        for t in range(steps):
            current = x[t] if w_t is None else torch.addmm(x[t], z, w_t)
            i = torch.addcmul(current, a_syn, i) if d.synapse else current
            u = u_all[t]
            if d.leaky:  # v_leak + a_mem (v - v_leak) + (1 - a_mem) i
                torch.addcmul(torch.addcmul(v_leak, a_mem, v - v_leak), gain, i, out=u)
            else:
                torch.add(v, i, out=u)
            theta = threshold + b if d.adaptive else threshold
            z = spikes[t].copy_(torch.gt(u, theta, out=fired[t]))  # <=> u - theta > 0, exactly
            v = _reset(d, u, z, theta, v_reset)
            if d.adaptive:
                b_all[t] = b
                b = torch.add(a_adapt * b, z, alpha=d.adapt_jump)
            if keep_i:
                i_all[t] = i
        ctx.d = d
        ctx.save_for_backward(
            fired, u_all, b_all, i_all, rec_weight, a_syn, a_mem, v_leak, threshold, v_reset,
            a_adapt, beta,
        )  # fmt: skip
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        d = ctx.d
        (fired, u_all, b_all, i_all, rec_weight, a_syn, a_mem, v_leak, threshold, v_reset,
         a_adapt, beta) = ctx.saved_tensors  # fmt: skip
        names = ("x", "w", "a_syn", "a_mem", "v_leak", "threshold", "v_reset", "a_adapt", "beta")
        need = dict(zip(names, ctx.needs_input_grad, strict=False))
        steps = u_all.shape[0]
        gain = 1 - a_mem if d.leaky else None
        beta_ = beta.to(u_all.dtype)
        need_theta = need["threshold"] or d.adaptive

        def theta_at(t):
            return threshold + b_all[t] if d.adaptive else threshold

        def v_at(t):  # post-reset membrane, recomputed with the forward's arithmetic
            return _reset(d, u_all[t], fired[t].to(u_all.dtype), theta_at(t), v_reset)

        sums = {}  # per-neuron gradients, summed over time here and over the batch at the end

        def accumulate(name, value):
            sums[name] = value if name not in sums else sums[name] + value

        # Everything below is per step on [B, N] slices: no [T, B, N] temporaries but grad_in.
        lam_v = lam_i = lam_b = torch.zeros_like(u_all[0])  # dL/dv_t, dL/di_t, dL/db_t
        grad_in = torch.empty_like(u_all)
        grad_z_all = torch.empty_like(u_all) if need["beta"] else None
        grad_z = grad_spikes[steps - 1]
        v_before = v_at(steps - 1) if d.rectify or need["a_mem"] else None
        for t in range(steps - 1, -1, -1):
            z, u, theta = fired[t].to(u_all.dtype), u_all[t], theta_at(t)
            v, v_before = v_before, (v_at(t - 1) if t > 0 and v_before is not None else None)
            if d.adaptive:  # b_t = a_adapt b_{t-1} + adapt_jump z_t
                grad_z = torch.add(grad_z, lam_b, alpha=d.adapt_jump)
            grad_v = lam_v * (v > 0) if d.rectify else lam_v  # before rectification
            grad_theta, grad_r = 0.0, None
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
                    grad_r = (v_reset - u) * grad_v
            else:
                grad_u = grad_v
            if grad_r is not None:
                grad_z = grad_z + grad_r
            if grad_z_all is not None:
                grad_z_all[t] = grad_z
            grad_x = grad_z * d.surrogate.derivative(u - theta, beta_)  # z = H(u - theta)
            grad_u = grad_u + grad_x
            if need_theta:
                grad_theta = grad_theta - grad_x
                if need["threshold"]:
                    accumulate("threshold", grad_theta)
            if d.adaptive:  # theta_t = threshold + b_{t-1}
                if need["a_adapt"]:
                    accumulate("a_adapt", lam_b * b_all[t])
                lam_b = torch.addcmul(grad_theta, a_adapt, lam_b)
            if d.leaky:  # u = v_leak + a_mem (v_{t-1} - v_leak) + (1 - a_mem) i_t
                if need["a_mem"]:
                    v_prev = v_before if t > 0 else v_leak
                    accumulate("a_mem", grad_u * (v_prev - v_leak - i_all[t]))
                if need["v_leak"]:
                    accumulate("v_leak", grad_u)  # times (1 - a_mem), applied once below
                grad_i = torch.addcmul(lam_i, gain, grad_u, out=grad_in[t])
                lam_v = a_mem * grad_u
            else:  # u = v_{t-1} + i_t
                grad_i = torch.add(lam_i, grad_u, out=grad_in[t])
                lam_v = grad_u
            if d.synapse:  # i_t = a_syn i_{t-1} + in_t
                if need["a_syn"] and t > 0:
                    accumulate("a_syn", grad_i * i_all[t - 1])
                lam_i = a_syn * grad_i
            if t > 0:  # in_t = x_t + W z_{t-1}
                grad_z = grad_spikes[t - 1]
                if rec_weight is not None:
                    grad_z = torch.addmm(grad_z, grad_i, rec_weight)

        if need["v_leak"]:  # v_{-1} = v_leak
            sums["v_leak"] = sums["v_leak"] * gain + lam_v
        grad_w = None
        if need["w"]:
            grad_w = spike_outer(grad_in[1:], fired[:-1])
        grad_beta = None
        if need["beta"]:  # d(spike)/d(beta) from the surrogate's primitive, as _SpikeFunction
            with torch.enable_grad():
                b = beta.detach().requires_grad_(True)
                theta_all = threshold + b_all if d.adaptive else threshold
                smooth = d.surrogate.primitive(u_all - theta_all, b.to(u_all.dtype))
                (grad_beta,) = torch.autograd.grad(smooth, b, grad_z_all)
        zero = torch.zeros_like(u_all[0, 0])  # e.g. a_syn's gradient over a single step
        coefficient_grads = [
            sums.get(name, zero).sum(0) if need[name] else None
            for name in ("a_syn", "a_mem", "v_leak", "threshold", "v_reset", "a_adapt")
        ]
        return (grad_in if need["x"] else None, grad_w, *coefficient_grads, grad_beta, None)


@torch.compiler.disable  # a Python time loop: torch.compile would unroll it
def run_fused(neuron, current: torch.Tensor, rec_weight: torch.Tensor | None = None):
    """Spikes ``[T, B, N]`` of ``neuron`` driven by ``current`` (+ recurrent ``rec_weight``)."""
    d = neuron.fused_dynamics()
    c = neuron.coefficients()
    dtype = current.dtype

    def coefficient(name):
        value = c.get(name)
        return None if value is None else value.to(dtype)

    beta = d.surrogate.beta.to(current.device)
    return _FusedLayer.apply(
        current,
        rec_weight,
        coefficient("a_syn"),
        coefficient("a_mem"),
        coefficient("v_leak"),
        coefficient("threshold"),
        coefficient("v_reset"),
        coefficient("a_adapt"),
        beta,
        d,
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


def _filter(x, a_syn, a_mem):
    """The leaky readout's two first-order stages over time, without recording."""
    i = v = x.new_zeros(x.shape[1:])
    out = torch.empty_like(x)
    for t in range(x.shape[0]):
        i = a_syn * i + x[t]
        v = a_mem * v + (1 - a_mem) * i
        out[t] = v
    return out


class _LeakyIntegrator(torch.autograd.Function):
    """A linear, time-invariant filter: its adjoint is the same filter run backwards in time."""

    @staticmethod
    def forward(ctx, x, a_syn, a_mem):
        ctx.coefficients = (a_syn, a_mem)
        return _filter(x, a_syn, a_mem)

    @staticmethod
    def backward(ctx, grad):
        return _filter(grad.flip(0), *ctx.coefficients).flip(0), None, None


@torch.compiler.disable  # a Python time loop: torch.compile would unroll it
def leaky_integrate(x: torch.Tensor, a_syn: torch.Tensor, a_mem: torch.Tensor) -> torch.Tensor:
    """Membrane ``[T, B, K]`` of the non-spiking readout (fixed decays); saves nothing."""
    return _LeakyIntegrator.apply(x, a_syn.to(x.dtype), a_mem.to(x.dtype))


def _csr(rows, cols, values, shape):
    """A CSR matrix from events sorted by row."""
    counts = torch.bincount(rows, minlength=shape[0])
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we use only the matmul
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape)


class _EventProjection(torch.autograd.Function):
    """``x @ weight.T`` for a constant, mostly-zero ``x [R, C]``; saves only the events."""

    @staticmethod
    def forward(ctx, x, weight):
        flat = x.view(-1)
        index = flat.nonzero().squeeze(1)  # row-major: sorted by row
        rows, cols, values = index // x.shape[1], index % x.shape[1], flat[index]
        compact = torch.int32 if flat.numel() < 2**31 else torch.int64
        ctx.save_for_backward(index.to(compact), values)  # 8 bytes per event
        ctx.shape = x.shape
        return _csr(rows, cols, values, x.shape) @ weight.t()

    @staticmethod
    def backward(ctx, grad):
        index, values = ctx.saved_tensors
        channels = ctx.shape[1]
        index = index.long()
        rows, cols = index // channels, index % channels
        order = torch.argsort(cols * ctx.shape[0] + rows)  # the events of x.T in CSR order
        x_t = _csr(cols[order], rows[order], values[order], ctx.shape[::-1])
        return None, (x_t @ grad).t()


#: below this fraction of non-zero input entries the event path beats a dense matmul
SPARSE_DENSITY = 0.1


@torch.compiler.disable  # data-dependent shapes (the events)
def project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T``; for constant input with few events (spike data), at a cost per event.

    Each non-zero ``x[r, c]`` adds ``x[r, c] * weight[:, c]`` (a sparse-dense product), and the
    weight gradient is likewise a sum over the events, so both scale with the number of input
    events instead of ``T * B * C``.
    """
    if x.requires_grad or x.numel() == 0 or x.layout != torch.strided:
        return x @ weight.t()
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    sample = flat[:: max(1, flat.shape[0] // 256)]  # the density of ~256 rows decides the path
    if torch.count_nonzero(sample) >= SPARSE_DENSITY * sample.numel():
        return x @ weight.t()
    return _EventProjection.apply(flat, weight).reshape(*x.shape[:-1], weight.shape[0])
