"""The spikelight rows: :class:`spikelight.network.SpikingNetwork` through its public API."""

from __future__ import annotations

import contextlib
import functools
import inspect
import shutil
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from .cases import BETA, DT, READOUT_TAU_MEM, READOUT_TAU_SYN, TAU_MEM, TAU_SYN, THRESHOLD, Setup
from .registry import Bench, assign, register


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default dtype set to ``dtype`` inside (neuron parameters are created in it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def spikelight_network(setup: Setup, **kwargs) -> nn.Module:
    """The benchmarked network, built through spikelight's public constructor, in setup.dtype."""
    from spikelight.network import SpikingNetwork
    from spikelight.neurons import LIF
    from spikelight.surrogates import SuperSpike
    from spikelight.weight_init import ScaledNormal

    case = setup.case
    with default_dtype(setup.dtype):  # neuron parameters are created in the default dtype
        net = SpikingNetwork(
            num_inputs=case.inputs,
            num_classes=case.classes,
            hidden=[case.hidden],
            neuron=functools.partial(
                LIF, dt=DT, tau_mem=TAU_MEM, tau_syn=TAU_SYN, threshold=THRESHOLD
            ),
            surrogate=SuperSpike(beta=BETA),
            recurrent=case.recurrent,
            decoding="max_membrane",
            readout_tau_mem=READOUT_TAU_MEM,
            readout_tau_syn=READOUT_TAU_SYN,
            weight_init=ScaledNormal(),  # plain weights: overwritten with the shared ones
            **kwargs,
        )
    return net.to(setup.device, setup.dtype)


def spikelight_params(net: nn.Module, recurrent: bool) -> dict[str, torch.Tensor]:
    named = dict(net.named_parameters())
    params = {"w_in": named["layers.0.fc.weight"], "w_out": named["readout_fc.weight"]}
    if recurrent:
        params["w_rec"] = named["layers.0.rec.weight"]
    return params


def spikelight_bench(
    setup: Setup, wrap: Callable[[nn.Module], Callable] | None = None, **kwargs
) -> Bench:
    """A spikelight row: constructor ``kwargs``; ``wrap`` (e.g. ``torch.compile``) the module."""
    from spikelight.network import SpikingNetwork

    net = spikelight_network(setup, **kwargs)
    params = spikelight_params(net, setup.case.recurrent)
    for name, p in params.items():
        assign(p, setup.weights[name])
    model = net if wrap is None else wrap(net)
    x, y = setup.x, setup.y

    def forward():
        out = model(x)
        return F.cross_entropy(out.logits, y), out.spikes["hidden0"]

    info = dict(kwargs)
    if "time_loop" not in info:  # record the default a user gets
        info["time_loop"] = inspect.signature(SpikingNetwork).parameters["time_loop"].default
    info["layers"] = net.time_loops()  # e.g. "fused, Triton kernels" on a GPU
    return Bench(net, forward, params, info)


@register("spikelight", group="spikelight", check=True)
def build_spikelight(setup: Setup) -> Bench:
    """The constructor's defaults: what a user gets."""
    return spikelight_bench(setup)


@register("spikelight (autograd loop)", group="spikelight", check=True)
def build_spikelight_autograd(setup: Setup) -> Bench:
    return spikelight_bench(setup, time_loop="autograd")


@register("spikelight (PyTorch loops)", group="spikelight", check=True)
def build_spikelight_pytorch_loops(setup: Setup) -> Bench:
    """What runs without a C compiler or triton (``SPIKELIGHT_NATIVE=0``,
    ``SPIKELIGHT_TRITON=0``): the fused layer's loops issued as PyTorch operations, dense on a
    GPU. The forward pass picks the loops; backward follows."""
    from spikelight.neurons import fused_triton, native

    bench = spikelight_bench(setup)
    forward = bench.forward

    def forward_without_c_loops():
        previous = native.set_enabled(False), fused_triton.set_enabled(False)
        try:
            return forward()
        finally:
            native.set_enabled(previous[0])
            fused_triton.set_enabled(previous[1])

    bench.forward = forward_without_c_loops
    return bench


@register("spikelight (dense input)", group="spikelight", check=True)
def build_spikelight_dense_input(setup: Setup) -> Bench:
    """The default network with its input product always dense (one BLAS call for the whole
    sequence) instead of summed per event below ``events.SPARSE_DENSITY``: the other side of
    that crossover, measured at each case's density."""
    from spikelight.neurons import events

    bench = spikelight_bench(setup)
    forward = bench.forward

    def forward_dense_input():
        previous, events.SPARSE_DENSITY = events.SPARSE_DENSITY, 0.0
        try:
            return forward()
        finally:
            events.SPARSE_DENSITY = previous

    bench.forward = forward_dense_input
    return bench


@register(
    "spikelight (compiled)",
    group="spikelight",
    check=True,
    available=lambda: None if shutil.which("cc") else "torch.compile on CPU needs a C compiler",
)
def build_spikelight_compiled(setup: Setup) -> Bench:
    """``model.compile=true``: torch.compile around the network (fused loops stay eager)."""
    return spikelight_bench(setup, wrap=torch.compile)
