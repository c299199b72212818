"""The ``reference`` row: spikelight's equations as the obvious PyTorch loop, checked against."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .cases import (
    BETA,
    DT,
    READOUT_TAU_MEM,
    READOUT_TAU_SYN,
    TAU_MEM,
    TAU_SYN,
    THRESHOLD,
    Setup,
)
from .registry import Bench, register


class SuperSpikeFn(torch.autograd.Function):
    """Heaviside forward; SuperSpike derivative ``1 / (beta |x| + 1)^2`` backward."""

    @staticmethod
    def forward(ctx, x, beta):
        ctx.save_for_backward(x)
        ctx.beta = beta
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (ctx.beta * x.abs() + 1.0) ** 2, None


class ReferenceSNN(nn.Module):
    """spikelight's LIF network as a plain PyTorch loop (the equations of ``neurons/lif.py``).

    Hidden layer, per step: ``i = a_syn i + W_in x_t + W_rec z_{t-1}``;
    ``v = a_mem v + (1 - a_mem) i``; ``z = H(v - thr)`` (SuperSpike backward);
    ``v = v - detach(z) thr``. Readout: ``i = a_syn i + W_out z_t``; ``v = a_mem v + (1 - a_mem) i``
    (no threshold); class scores = max over time of ``v``. Keyword arguments change the equations
    (used to check that the agreement check notices).
    """

    def __init__(
        self,
        weights: dict[str, torch.Tensor],
        tau_mem: float = TAU_MEM,
        tau_syn: float = TAU_SYN,
        readout_tau_mem: float = READOUT_TAU_MEM,
        readout_tau_syn: float = READOUT_TAU_SYN,
        threshold: float = THRESHOLD,
        beta: float = BETA,
        detach_reset: bool = True,
    ) -> None:
        super().__init__()
        self.w_in = nn.Parameter(weights["w_in"].clone())
        self.w_rec = nn.Parameter(weights["w_rec"].clone()) if "w_rec" in weights else None
        self.w_out = nn.Parameter(weights["w_out"].clone())
        self.a_mem, self.a_syn = math.exp(-DT / tau_mem), math.exp(-DT / tau_syn)
        self.ro_a_mem = math.exp(-DT / readout_tau_mem)
        self.ro_a_syn = math.exp(-DT / readout_tau_syn)
        self.threshold, self.beta, self.detach_reset = threshold, beta, detach_reset

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [T, B, C]`` -> (class scores [B, K], hidden spikes [T, B, H])."""
        current = F.linear(x, self.w_in)
        i = v = z = current.new_zeros(current.shape[1:])
        spikes = []
        for current_t in current.unbind(0):
            if self.w_rec is not None:
                current_t = current_t + F.linear(z, self.w_rec)
            i = self.a_syn * i + current_t
            v = self.a_mem * v + (1 - self.a_mem) * i
            z = SuperSpikeFn.apply(v - self.threshold, self.beta)
            v = v - (z.detach() if self.detach_reset else z) * self.threshold
            spikes.append(z)
        spikes = torch.stack(spikes)
        ro_current = F.linear(spikes, self.w_out)
        i = v = ro_current.new_zeros(ro_current.shape[1:])
        trace = []
        for current_t in ro_current.unbind(0):
            i = self.ro_a_syn * i + current_t
            v = self.ro_a_mem * v + (1 - self.ro_a_mem) * i
            trace.append(v)
        return torch.stack(trace).max(0).values, spikes


def reference_bench(setup: Setup, **equation_changes) -> Bench:
    net = ReferenceSNN(setup.weights, **equation_changes).to(setup.device, setup.dtype)
    x, y = setup.x, setup.y

    def forward():
        logits, spikes = net(x)
        return F.cross_entropy(logits, y), spikes

    params = {"w_in": net.w_in, "w_out": net.w_out}
    if net.w_rec is not None:
        params["w_rec"] = net.w_rec
    return Bench(net, forward, params, dict(equation_changes))


@register("reference", group="reference")
def build_reference(setup: Setup) -> Bench:
    return reference_bench(setup)
