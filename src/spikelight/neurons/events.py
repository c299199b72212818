"""Sums over the events of sparse tensors: binned spike input and the spikes of a layer.

A spike tensor ``[T, B, C]`` is mostly zeros. Its product with a weight matrix, and the weight
gradient of that product, cost a few nanoseconds per event instead of per entry when they are
sums over the listed events (flat positions, ascending; 4 bytes each where they fit).
:class:`Events` lists a constant input; :func:`project` and :func:`project_spikes` are the
products the network uses outside the fused layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spikelight.neurons import native

#: Below this fraction of non-zero input entries the input is kept as events. Every event
#: costs a few hundred ns over a training step (listing, sums forwards and again backwards,
#: the weight gradient) against the dense product's fixed cost; measured on a 2-core CPU with
#: the C row sums (docs/benchmarks.md, "Sparse or dense input"), events still win by 1.2x at
#: 8 % density (recurrent 700-256-20, T=100, batch 64). SHD binned in 14 ms bins has about
#: 6 %, so its batches stay events.
SPARSE_DENSITY = 0.12


def is_sparse(x: torch.Tensor) -> bool:
    """Whether ``x [..., C]`` is below ``SPARSE_DENSITY``, judged on ~256 of its rows."""
    flat = x.reshape(-1, x.shape[-1])
    sample = flat[:: max(1, flat.shape[0] // 256)]
    return bool(torch.count_nonzero(sample) < SPARSE_DENSITY * sample.numel())


def sparse_matrix(index, values, width: int, rows: int, dtype) -> torch.Tensor:
    """The sparse ``S [rows, width]`` (COO) with entries at the ascending flat positions
    ``index`` (row-major, hence already coalesced) and ``values`` (None: ones)."""
    index = index.long()
    values = index.new_ones(index.shape, dtype=dtype) if values is None else values.to(dtype)
    return torch.sparse_coo_tensor(
        torch.stack([index // width, index % width]), values, (rows, width), is_coalesced=True,
        check_invariants=False,
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
        if not is_sparse(x):
            return None
        flat = x.reshape(-1)
        int32 = flat.numel() < 2**31  # positions in 4 bytes where they fit
        if native.supports(flat) and int32:
            index = native.nonzero(flat)
        else:
            index = flat.nonzero().squeeze(1).to(torch.int32 if int32 else torch.int64)
        values = flat.index_select(0, index)
        return cls(index, None if bool((values == 1).all()) else values, tuple(x.shape))

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
        return sparse_matrix(index, values, self.shape[2], r1 - r0, weight_t.dtype) @ weight_t


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
        # under autocast the product (and so its gradient) may be in a lower precision
        grad_z = grad @ weight.to(grad.dtype) if ctx.needs_input_grad[0] else None
        grad_w = spike_outer(grad, fired) if ctx.needs_input_grad[1] else None
        return grad_z, grad_w


@torch.compiler.disable
def project_spikes(z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``z @ weight.T`` for spikes that are exactly 0 or 1 (the fused layers' output)."""
    return _SpikeProjection.apply(z, weight)


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
        S = sparse_matrix(index, values, channels, rows, grad.dtype)
        return (S.t() @ grad.reshape(rows, -1)).t(), None, None, None


@torch.compiler.disable  # data-dependent shapes (the events)
def project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T``; for constant input with few events (spike data), at a cost per event.

    Each non-zero ``x[t, b, c]`` adds ``x[t, b, c] * weight[:, c]`` (a sparse product),
    and the weight gradient is likewise a sum over the events, so both scale with the number
    of input events instead of ``T * B * C``. Other input: a dense product.
    """
    events = Events.of(x)
    if events is None:
        return x @ weight.t()
    return _EventProjection.apply(weight, events.index, events.values, events)
