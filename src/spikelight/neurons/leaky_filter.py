"""The leaky readout's filter over time: two first-order stages, linear and time-invariant.

Per step ``i = a_syn i + x_t``, ``v = a_mem v + (1 - a_mem) i`` (:func:`filter_step`, the one
definition; :class:`~spikelight.network.LeakyReadout` steps with it). Being linear and
time-invariant, its adjoint is the same filter run backwards in time, so the backward pass
saves nothing. The C loop ``native.leaky_filter`` repeats :func:`filter_step`'s operations.
"""

from __future__ import annotations

import torch

from spikelight.neurons import native


def filter_step(x, i, v, a_syn: float, a_mem: float, out=None):
    """One step: ``(i, v)`` after input ``x`` (``v`` as one ``lerp``, written into ``out``)."""
    i = torch.add(x, i, alpha=a_syn)
    return i, torch.lerp(i, v, a_mem, out=out)


def run_filter(x, a_syn: float, a_mem: float, reverse: bool = False, c_loop: bool = False):
    """:func:`filter_step` over ``x [T, ...]`` from zero (backwards in time: ``reverse``); with
    ``c_loop``, by the C loop (``native.leaky_filter``)."""
    if c_loop:
        return native.leaky_filter(x, a_syn, a_mem, reverse)
    i = v = x.new_zeros(x.shape[1:])
    out = torch.empty_like(x)
    for t in reversed(range(x.shape[0])) if reverse else range(x.shape[0]):
        i, v = filter_step(x[t], i, v, a_syn, a_mem, out=out[t])
    return out


class _LeakyIntegrator(torch.autograd.Function):
    """A linear, time-invariant filter: its adjoint is the same filter run backwards in time."""

    @staticmethod
    def forward(ctx, x, a_syn, a_mem):
        ctx.coefficients = (float(a_syn), float(a_mem))
        ctx.c_loop = native.supports(x)  # the backward follows the forward's choice
        return run_filter(x, *ctx.coefficients, c_loop=ctx.c_loop)

    @staticmethod
    def backward(ctx, grad):
        return run_filter(grad, *ctx.coefficients, reverse=True, c_loop=ctx.c_loop), None, None


@torch.compiler.disable  # a Python time loop: torch.compile would unroll it
def leaky_integrate(x: torch.Tensor, a_syn: torch.Tensor, a_mem: torch.Tensor) -> torch.Tensor:
    """Membrane ``[T, B, K]`` of the non-spiking readout (fixed decays); saves nothing."""
    return _LeakyIntegrator.apply(x, a_syn.to(x.dtype), a_mem.to(x.dtype))
