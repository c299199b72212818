"""The peer rows: snnTorch's, Norse's and SpikingJelly's own LIF modules at the benchmark's
sizes."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .cases import BETA, DT, READOUT_TAU_MEM, READOUT_TAU_SYN, TAU_MEM, TAU_SYN, THRESHOLD, Setup
from .registry import Bench, assign, dist_version, register, requires


@register("snnTorch", group="peer", available=requires("snntorch"))
def build_snntorch(setup: Setup) -> Bench:
    """snn.RSynaptic (snn.Synaptic feed-forward), fast_sigmoid(slope=beta), Synaptic readout.

    snnTorch's membrane integrates ``mem = beta mem + syn`` (no ``1 - beta`` factor), so the
    shared weights are scaled by ``1 - beta`` to give the same drive. The input projection runs
    over all time steps at once, as spikelight's does.
    """
    import snntorch as snn
    from snntorch import surrogate

    case = setup.case
    a_mem, a_syn = math.exp(-DT / TAU_MEM), math.exp(-DT / TAU_SYN)
    ro_a_mem, ro_a_syn = math.exp(-DT / READOUT_TAU_MEM), math.exp(-DT / READOUT_TAU_SYN)
    spike_grad = surrogate.fast_sigmoid(slope=BETA)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(case.inputs, case.hidden, bias=False)
            if case.recurrent:
                self.lif = snn.RSynaptic(
                    alpha=a_syn,
                    beta=a_mem,
                    linear_features=case.hidden,
                    threshold=THRESHOLD,
                    spike_grad=spike_grad,
                    reset_mechanism="subtract",
                )
            else:
                self.lif = snn.Synaptic(
                    alpha=a_syn,
                    beta=a_mem,
                    threshold=THRESHOLD,
                    spike_grad=spike_grad,
                    reset_mechanism="subtract",
                )
            self.fc_out = nn.Linear(case.hidden, case.classes, bias=False)
            self.readout = snn.Synaptic(
                alpha=ro_a_syn, beta=ro_a_mem, spike_grad=spike_grad, reset_mechanism="none"
            )

        def forward(self, x):
            current = self.fc(x)
            if case.recurrent:
                spk, syn, mem = self.lif.reset_mem()
            else:
                syn, mem = self.lif.reset_mem()
            spikes = []
            for current_t in current.unbind(0):
                if case.recurrent:
                    spk, syn, mem = self.lif(current_t, spk, syn, mem)
                else:
                    spk, syn, mem = self.lif(current_t, syn, mem)
                spikes.append(spk)
            spikes = torch.stack(spikes)
            ro_current = self.fc_out(spikes)
            syn, mem = self.readout.reset_mem()
            trace = []
            for current_t in ro_current.unbind(0):
                _, syn, mem = self.readout(current_t, syn, mem)
                trace.append(mem)
            return torch.stack(trace).max(0).values, spikes

    net = Net()
    params = {"w_in": net.fc.weight, "w_out": net.fc_out.weight}
    assign(net.fc.weight, setup.weights["w_in"].cpu() * (1 - a_mem))
    assign(net.fc_out.weight, setup.weights["w_out"].cpu() * (1 - ro_a_mem))
    if case.recurrent:
        params["w_rec"] = net.lif.recurrent.weight
        assign(net.lif.recurrent.weight, setup.weights["w_rec"].cpu() * (1 - a_mem))
        assign(net.lif.recurrent.bias, torch.zeros_like(net.lif.recurrent.bias))  # kept, at 0
    net = net.to(setup.device, setup.dtype)
    x, y = setup.x, setup.y

    def forward():
        logits, spikes = net(x)
        return F.cross_entropy(logits, y), spikes

    return Bench(net, forward, params, {"version": dist_version("snntorch")})


@register("Norse", group="peer", available=requires("norse"))
def build_norse(setup: Setup, compiled: bool = False) -> Bench:
    """norse.torch.LIFRecurrent (LIF feed-forward after a Linear), method="super", LI readout.

    ``LIFRecurrent`` holds the input weights and projects the input inside its time loop (its own
    design); autapses are allowed so the recurrent weights are the shared ones. ``compiled``:
    the same network from Norse's one-step cells, each in ``torch.compile``, stepped by a Python
    loop (compiling the whole sequence would unroll every time step into one graph).
    """
    import norse.torch as norse

    case = setup.case
    p = norse.LIFParameters(
        tau_syn_inv=torch.as_tensor(1 / TAU_SYN),
        tau_mem_inv=torch.as_tensor(1 / TAU_MEM),
        v_th=torch.as_tensor(THRESHOLD),
        method="super",
        alpha=torch.as_tensor(BETA),
    )
    p_out = norse.LIParameters(
        tau_syn_inv=torch.as_tensor(1 / READOUT_TAU_SYN),
        tau_mem_inv=torch.as_tensor(1 / READOUT_TAU_MEM),
    )

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            if case.recurrent:
                self.lif = norse.LIFRecurrent(
                    case.inputs,
                    case.hidden,
                    p=p,
                    dt=DT,
                    autapses=True,
                    input_weights=nn.Parameter(setup.weights["w_in"].cpu().clone()),
                    recurrent_weights=nn.Parameter(setup.weights["w_rec"].cpu().clone()),
                )
                self.fc = None
            else:
                self.fc = nn.Linear(case.inputs, case.hidden, bias=False)
                self.lif = norse.LIF(p=p, dt=DT)
            self.fc_out = nn.Linear(case.hidden, case.classes, bias=False)
            self.readout = norse.LI(p=p_out, dt=DT)

        def forward(self, x):
            if compiled:
                return self.forward_cells(x)
            spikes, _ = self.lif(x if self.fc is None else self.fc(x))
            v, _ = self.readout(self.fc_out(spikes))
            return v.max(0).values, spikes

        def forward_cells(self, x):
            state, spikes = None, []
            for x_t in x if self.fc is None else self.fc(x):
                z, state = self.lif_cell(x_t, state)
                spikes.append(z)
            spikes = torch.stack(spikes)
            state, trace = None, []
            for current_t in self.fc_out(spikes):
                v, state = self.readout_cell(current_t, state)
                trace.append(v)
            return torch.stack(trace).max(0).values, spikes

    net = Net()
    if compiled:  # the cells share the modules' weights and parameters
        if case.recurrent:
            cell = norse.LIFRecurrentCell(case.inputs, case.hidden, p=p, dt=DT, autapses=True)
            cell.input_weights, cell.recurrent_weights = (
                net.lif.input_weights, net.lif.recurrent_weights
            )  # fmt: skip
        else:
            cell = norse.LIFCell(p=p, dt=DT)
        net.lif_cell = torch.compile(cell)
        net.readout_cell = torch.compile(norse.LICell(p=p_out, dt=DT))
    assign(net.fc_out.weight, setup.weights["w_out"].cpu())
    if case.recurrent:
        params = {"w_in": net.lif.input_weights, "w_rec": net.lif.recurrent_weights}
    else:
        assign(net.fc.weight, setup.weights["w_in"].cpu())
        params = {"w_in": net.fc.weight}
    params["w_out"] = net.fc_out.weight
    net = net.to(setup.device, setup.dtype)
    x, y = setup.x, setup.y

    def forward():
        logits, spikes = net(x)
        return F.cross_entropy(logits, y), spikes

    info = {"version": dist_version("norse"), "compiled": compiled}
    return Bench(net, forward, params, info)


@register("Norse (compiled)", group="peer", available=requires("norse"))
def build_norse_compiled(setup: Setup) -> Bench:
    return build_norse(setup, compiled=True)


def spikingjelly_backend(device: torch.device) -> str:
    """SpikingJelly's CuPy kernels on a CUDA device where CuPy imports, else its torch loop."""
    if device.type != "cuda":
        return "torch"
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "torch"
    return "cupy"


@register("SpikingJelly", group="peer", available=requires("spikingjelly"))
def build_spikingjelly(setup: Setup) -> Bench:
    """activation_based.neuron.LIFNode, multi-step, CuPy backend where it runs (see
    :func:`spikingjelly_backend`), soft reset (subtract) of the detached spike, sigmoid surrogate.

    SpikingJelly's LIF has one state, ``v = v + (x - v) / tau`` (no synaptic current): the
    benchmarked LIF without its synapse, ``tau`` (in steps) giving the same membrane decay
    ``1 - 1/tau = exp(-dt / tau_mem)``, and the shared weights times the synapse's gain at rest
    ``1 / (1 - exp(-dt / tau_syn))`` so that it fires in the same range. The recurrent case
    steps a single-step LIFNode (SpikingJelly's multi-step kernels take no recurrence; its
    single steps run on the torch backend). The readout is a LIFNode with a threshold it never
    reaches (its membrane, max over time; an infinite one would make the soft reset 0 * inf).
    Its equations differ most from the others'; not checked.
    """
    from spikingjelly.activation_based import layer, neuron, surrogate

    case = setup.case
    backend = spikingjelly_backend(setup.device) if not case.recurrent else "torch"
    tau = 1 / (1 - math.exp(-DT / TAU_MEM))
    ro_tau = 1 / (1 - math.exp(-DT / READOUT_TAU_MEM))
    gain = 1 / (1 - math.exp(-DT / TAU_SYN))
    ro_gain = 1 / (1 - math.exp(-DT / READOUT_TAU_SYN))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = layer.Linear(case.inputs, case.hidden, bias=False, step_mode="m")
            self.lif = neuron.LIFNode(
                tau=tau, v_threshold=THRESHOLD, v_reset=None, detach_reset=True,
                surrogate_function=surrogate.Sigmoid(),
                step_mode="s" if case.recurrent else "m", backend=backend,
            )  # fmt: skip
            if case.recurrent:
                self.rec = nn.Linear(case.hidden, case.hidden, bias=False)
            self.fc_out = layer.Linear(case.hidden, case.classes, bias=False, step_mode="m")
            self.readout = neuron.LIFNode(
                tau=ro_tau, v_threshold=1e9, v_reset=None, step_mode="m",
                backend=spikingjelly_backend(setup.device), store_v_seq=True,
            )  # fmt: skip

        def forward(self, x):
            for module in (self.lif, self.readout):
                module.reset()
            current = self.fc(x)
            if case.recurrent:
                z, spikes = None, []
                for current_t in current:
                    z = self.lif(current_t if z is None else current_t + self.rec(z))
                    spikes.append(z)
                spikes = torch.stack(spikes)
            else:
                spikes = self.lif(current)
            self.readout(self.fc_out(spikes))
            return self.readout.v_seq.max(0).values, spikes

    net = Net()
    params = {"w_in": net.fc.weight, "w_out": net.fc_out.weight}
    assign(net.fc.weight, setup.weights["w_in"].cpu() * gain)
    assign(net.fc_out.weight, setup.weights["w_out"].cpu() * ro_gain)
    if case.recurrent:
        params["w_rec"] = net.rec.weight
        assign(net.rec.weight, setup.weights["w_rec"].cpu() * gain)
    net = net.to(setup.device, setup.dtype)
    x, y = setup.x, setup.y

    def forward():
        logits, spikes = net(x)
        return F.cross_entropy(logits, y), spikes

    info = {"version": dist_version("spikingjelly"), "backend": backend}
    return Bench(net, forward, params, info)
