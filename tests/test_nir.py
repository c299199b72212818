"""NIR export and import (spikelight.nir) against independent truth.

- round trip: export -> nir.write -> nir.read -> import gives the same spikes and readout;
- NIR's own equations: the exported graph run by a NumPy simulator written here from NIR's
  definitions of CubaLIF / CubaLI / IF (and the discrete-time rule spikelight.nir.mapping
  states), which reads r, w_in and the graph's edges literally;
- Norse: its NIR importer (norse.torch.from_nir) runs the exported graph. Norse integrates by
  forward Euler (decay 1 - dt/tau, spikelight: exp(-dt/tau)), so it is run with the time step
  dt_norse = tau (1 - exp(-dt/tau)) that makes its decay spikelight's, which exists for one time
  constant: the LIF test has tau_syn = tau_mem = the readout's. Its importer also ignores
  v_reset (uses 0) and adds v_leak to the synapse, so those are 0 there;
- what NIR cannot express fails naming the feature and the alternative.
snnTorch 1.0.0's importer cannot run these graphs (fixed dt = 1e-4, asserts r = tau_mem/1e-4,
no CubaLI, IF imported as a leaky neuron), so it is not a reference here.
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from spikelight.network import SpikingNetwork  # noqa: E402
from spikelight.neurons import ALIF, IF, LIF, AdLIF  # noqa: E402
from spikelight.nir import export_network, import_network, write_graph  # noqa: E402
from spikelight.surrogates import SuperSpike  # noqa: E402
from spikelight.weight_init import ScaledNormal  # noqa: E402

DT = 1e-3
T, B, C, K = 60, 3, 16, 4


def build(neuron, recurrent, decoding="max_membrane", hidden=(12, 10), scale=6.0, **readout):
    torch.manual_seed(0)
    return SpikingNetwork(
        num_inputs=C,
        num_classes=K,
        hidden=list(hidden),
        neuron=neuron,
        surrogate=SuperSpike(),
        recurrent=recurrent,
        decoding=decoding,
        weight_init=ScaledNormal(scale),
        **readout,
    )


def heterogeneous(network, seed=1):
    """Every neuron its own parameters, so a transposed or shuffled array cannot pass."""
    g = torch.Generator().manual_seed(seed)
    populations = [layer.neuron for layer in network.layers]
    if isinstance(network.readout, LIF | IF):
        populations.append(network.readout)
    for neuron in populations:
        n = neuron.size

        def uniform(lo, hi, n=n):
            return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)

        neuron.set("threshold", uniform(0.8, 1.2))
        neuron.set("v_reset", uniform(-0.3, 0.1))
        if isinstance(neuron, LIF):
            neuron.set("tau_mem", uniform(5e-3, 30e-3))
            neuron.set("tau_syn", uniform(2e-3, 10e-3))
            neuron.set("v_leak", uniform(-0.2, 0.2))
    return network


def run(net, x):
    with torch.no_grad():
        return net(x)


def spikes_in(seed=2, rate=0.15):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, C, generator=g, dtype=torch.float64) < rate).double()


def assert_active(out):
    """Each layer fires, but not always: the comparisons below can fail."""
    for name, z in out.spikes.items():
        assert 0.01 < z.mean().item() < 0.6, (name, z.mean().item())


def written_and_read(graph, tmp_path):
    path = tmp_path / "net.nir"
    write_graph(graph, path)
    return nir.read(path)


LIF_ZERO = functools.partial(LIF, reset="zero", dt=DT)
IF_ZERO = functools.partial(IF, reset="zero", dt=DT)
CASES = {
    "lif": (LIF_ZERO, False, "max_membrane"),
    "lif_recurrent": (LIF_ZERO, True, "mean_membrane"),
    "if": (IF_ZERO, False, "max_membrane"),
    "if_recurrent": (IF_ZERO, True, "max_membrane"),
    "lif_recurrent_spiking_readout": (LIF_ZERO, True, "spike_count"),
}


@pytest.mark.parametrize("case", CASES)
def test_round_trip_gives_identical_spikes_and_outputs(case, float64, tmp_path):
    neuron, recurrent, decoding = CASES[case]
    net = heterogeneous(build(neuron, recurrent, decoding))
    graph = written_and_read(export_network(net), tmp_path)
    back = import_network(graph)

    assert back.dt == DT and back.decoding == decoding
    assert type(back.layers[0].neuron) is type(net.layers[0].neuron)
    assert [layer.rec is not None for layer in back.layers] == [recurrent] * 2
    for mine, theirs in zip(net.state_dict().items(), back.state_dict().items(), strict=True):
        assert mine[0] == theirs[0]
        if "weight" in mine[0]:
            assert torch.equal(mine[1], theirs[1]), mine[0]  # bit for bit
        else:
            torch.testing.assert_close(theirs[1], mine[1], rtol=1e-13, atol=1e-15)
    x = spikes_in()
    out, out_back = run(net, x), run(back, x)
    assert_active(out)
    for name, z in out.spikes.items():
        assert torch.equal(out_back.spikes[name], z), name
    torch.testing.assert_close(out_back.readout, out.readout, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_back.logits, out.logits, rtol=1e-12, atol=1e-12)


# -- NIR's equations, written from the NIR definitions ------------------------------------------


def simulate_nir(graph, x: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """Each node's output ``[T, B, n]`` for input ``x [T, B, C]``.

    Discrete-time rule: input held over the step; each ODE integrated exactly with its input
    held (synapse first, the membrane with the new current); spike ``v > v_threshold`` then
    ``v -> v_reset``; an edge back to an earlier node (a cycle) carries the previous step.
    """
    succ, pred = defaultdict(list), defaultdict(list)
    for a, b in graph.edges:
        succ[a].append(b)
        pred[b].append(a)
    (start,) = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    order = [start]
    for name in order:  # breadth first: what a node's forward inputs are comes before it
        order += [s for s in succ[name] if s not in order]
    position = {name: k for k, name in enumerate(order)}
    size = {n: int(np.prod(node.output_type["output"])) for n, node in graph.nodes.items()}
    previous = {n: np.zeros((x.shape[1], size[n])) for n in order}
    state, trace = {}, defaultdict(list)
    for x_t in x:
        current = {}
        for name in order:
            node = graph.nodes[name]
            inputs = [
                current[p] if position[p] < position[name] else previous[p] for p in pred[name]
            ]
            s = x_t if isinstance(node, nir.Input) else sum(inputs)
            if isinstance(node, nir.Linear | nir.Affine):
                y = s @ np.asarray(node.weight).T + getattr(node, "bias", 0.0)
            elif isinstance(node, nir.CubaLIF | nir.CubaLI):
                i, v = state.get(name, (0.0, np.asarray(node.v_leak)))
                a_syn, a_mem = np.exp(-dt / node.tau_syn), np.exp(-dt / node.tau_mem)
                i = a_syn * i + (1 - a_syn) * node.w_in * s
                v = node.v_leak + a_mem * (v - node.v_leak) + (1 - a_mem) * node.r * i
                y = v
                if isinstance(node, nir.CubaLIF):
                    y = (v > node.v_threshold).astype(float)
                    v = np.where(y > 0, node.v_reset, v)
                state[name] = (i, v)
            elif isinstance(node, nir.IF):
                v = state.get(name, 0.0) + dt * node.r * s
                y = (v > node.v_threshold).astype(float)
                state[name] = np.where(y > 0, node.v_reset, v)
            else:  # Input, Output
                y = s
            current[name] = y
            trace[name].append(y)
        previous = current
    return {name: np.stack(values) for name, values in trace.items()}


@pytest.mark.parametrize("case", CASES)
def test_exported_graph_follows_nir_equations(case, float64, tmp_path):
    neuron, recurrent, decoding = CASES[case]
    net = heterogeneous(build(neuron, recurrent, decoding))
    graph = written_and_read(export_network(net), tmp_path)
    x = spikes_in()
    out = run(net, x)
    assert_active(out)
    reference = simulate_nir(graph, x.numpy(), float(graph.metadata["dt"]))
    for name, z in out.spikes.items():
        np.testing.assert_array_equal(reference[name], z.numpy(), err_msg=name)
    np.testing.assert_allclose(reference["output"], out.readout.numpy(), rtol=1e-10, atol=1e-12)


def test_import_folds_a_foreign_input_gain_into_the_weights(float64):
    """A graph whose r * w_in is not spikelight's (here: snnTorch's r = tau_mem/dt with w_in =
    tau_syn/tau_mem, so r w_in (1 - a_syn) = 0.78..0.95, and a readout with r = 2) imports to the
    spikes NIR's equations give."""
    net = heterogeneous(build(LIF_ZERO, recurrent=True))
    graph = export_network(net)
    for name in ("hidden0", "hidden1"):
        node = graph.nodes[name]
        node.r, node.w_in = node.tau_mem / DT, node.tau_syn / node.tau_mem
    graph.nodes["readout"].r = np.full(K, 2.0)
    x = spikes_in()
    reference = simulate_nir(graph, x.numpy(), DT)
    out = run(import_network(graph), x)
    assert_active(out)
    for name, z in out.spikes.items():
        np.testing.assert_array_equal(reference[name], z.numpy(), err_msg=name)
    np.testing.assert_allclose(reference["output"], out.readout.numpy(), rtol=1e-10, atol=1e-12)
    # and the gain changed the dynamics: the original network's spikes differ
    assert not torch.equal(run(net, x).spikes["hidden0"], out.spikes["hidden0"])


# -- Norse --------------------------------------------------------------------------------------


def run_norse(module, x):
    """Norse's module step by step: every node's output and the readout's membrane."""
    state, cache, readout_v = None, defaultdict(list), []
    for x_t in x:
        with torch.no_grad():
            _, state = module(x_t, state)
        for name, value in state.cache.items():
            cache[name].append(value)
        ((_, membrane),) = state.state["readout"]  # (synapse state, LIF box state)
        readout_v.append(membrane.v)
    return {k: torch.stack(v) for k, v in cache.items()}, torch.stack(readout_v)


@pytest.mark.parametrize("kind", ["lif_recurrent", "if_recurrent"])
def test_norse_runs_the_exported_graph_to_the_same_spikes(kind, float64, tmp_path):
    norse = pytest.importorskip("norse.torch")
    tau = 10e-3  # every time constant, the readout's included
    dt_norse = tau * -math.expm1(-DT / tau)  # Norse's decay 1 - dt_norse/tau = exp(-DT/tau)
    if kind == "lif_recurrent":
        neuron = functools.partial(LIF, reset="zero", dt=DT, tau_mem=tau, tau_syn=tau)
    else:
        neuron = IF_ZERO  # Norse's IF ignores dt (and r): v <- v + input
    net = build(neuron, recurrent=True, scale=3.0, readout_tau_mem=tau, readout_tau_syn=tau)
    g = torch.Generator().manual_seed(3)
    for layer in net.layers:  # per-neuron thresholds, exact in float32 (Norse's dtype)
        layer.neuron.set("threshold", torch.randint(3, 6, (layer.neuron.size,), generator=g) / 4)
    graph = written_and_read(export_network(net), tmp_path)
    # NIR's CubaLI is a CubaLIF that never fires; Norse maps only the latter
    li = graph.nodes["readout"]
    graph.nodes["readout"] = nir.CubaLIF(
        tau_syn=li.tau_syn,
        tau_mem=li.tau_mem,
        r=li.r,
        v_leak=li.v_leak,
        v_threshold=np.full(K, np.inf),
        w_in=li.w_in,
    )
    module = norse.from_nir(graph, dt=dt_norse, ignore_warnings=True).double()

    x = spikes_in()
    out = run(net, x)
    assert_active(out)
    theirs, readout_v = run_norse(module, x)
    for name, z in out.spikes.items():
        assert torch.equal(theirs[name].double(), z), name
    # Norse holds its parameters in float32: the membrane agrees to float32 rounding
    torch.testing.assert_close(readout_v.double(), out.readout, rtol=1e-5, atol=1e-5)


# -- what NIR cannot express ---------------------------------------------------------------------


UNSUPPORTED = {
    "lif_subtract": (
        functools.partial(LIF, reset="subtract"),
        re.escape(
            "neuron.reset=subtract cannot be expressed in NIR's CubaLIF (reset to v_reset); "
            "train with neuron.reset=zero"
        ),
    ),
    "if_subtract": (
        functools.partial(IF, reset="subtract"),
        "neuron.reset=subtract cannot be expressed in NIR's IF .*neuron.reset=zero",
    ),
    "no_reset": (functools.partial(LIF, reset="none"), "neuron.reset=none .*neuron.reset=zero"),
    "rectify": (
        functools.partial(IF, reset="zero", rectify=True),
        r"neuron.rectify=true .*train with neuron.rectify=false",
    ),
    "alif": (
        functools.partial(ALIF, reset="zero"),
        r"neuron=alif \(adaptive threshold\) cannot .*train with neuron=lif .*or neuron=if",
    ),
    "adlif": (
        functools.partial(AdLIF, reset="zero"),
        r"neuron=adlif \(adaptation current\) .*neuron=lif",
    ),
}


@pytest.mark.parametrize("case", UNSUPPORTED)
def test_export_names_what_nir_cannot_express(case):
    neuron, message = UNSUPPORTED[case]
    net = build(neuron, recurrent=False)
    with pytest.raises(ValueError, match=f"^layer hidden0: {message}"):
        export_network(net)


@pytest.mark.parametrize(
    "option, message",
    [
        ({"bias": True}, "model.network.bias=true"),
        ({"readout_tau_syn": None}, "model.network.readout_tau_syn=null"),
        ({"ignore_steps": 3}, "model.network.ignore_steps=3"),
    ],
    ids=["bias", "readout_without_synapse", "ignore_steps"],
)
def test_export_names_the_network_options_it_does_not_write(option, message):
    net = build(LIF_ZERO, recurrent=False, **option)
    with pytest.raises(ValueError, match=f"^{message}"):
        export_network(net)


def test_softmax_sum_decoding_round_trips_by_name():
    graph = export_network(build(LIF_ZERO, recurrent=False, decoding="softmax_sum"))
    assert import_network(graph).decoding == "softmax_sum"


def test_export_refuses_a_smooth_forward_pass():
    torch.manual_seed(0)
    net = SpikingNetwork(C, K, [8], LIF_ZERO, SuperSpike(smooth_forward=True))
    with pytest.raises(ValueError, match="surrogate.smooth_forward=true .*=false"):
        export_network(net)


def test_spiking_readout_must_be_expressible_too():
    """decoding=spike_count makes the readout a neuron: its reset is checked as well."""
    net = build(functools.partial(LIF, reset="zero"), recurrent=False, decoding="spike_count")
    net.readout.reset = "subtract"
    with pytest.raises(ValueError, match=r"^the spiking readout \(spike_count\): neuron.reset"):
        export_network(net)


def _graph():
    return export_network(build(LIF_ZERO, recurrent=True))


def _without_dt(graph):
    graph.metadata = {}
    return graph


def _with_node(name, node):
    def change(graph):
        graph.nodes[name] = node(graph.nodes[name])
        return graph

    return change


def _one_layer_recurrent(graph):
    graph.nodes.pop("hidden1_rec")
    graph.edges = [e for e in graph.edges if "hidden1_rec" not in e]
    return graph


BAD_GRAPHS = {
    "no_dt": (_without_dt, "metadata has no 'dt' .*pass dt=<time step in seconds>"),
    "lif_without_synapse": (
        _with_node(
            "hidden0",
            lambda n: nir.LIF(n.tau_mem, n.r, n.v_leak, n.v_threshold, n.v_reset),
        ),
        "'hidden0' is LIF \\(NIR's LIF has no synaptic current",
    ),
    "delay": (
        _with_node("hidden1_fc", lambda n: nir.Delay(np.ones(n.weight.shape[0]))),
        "'hidden1_fc' is Delay \\(spikelight's synapses have no delays\\)",
    ),
    "bias": (
        _with_node("hidden0_fc", lambda n: nir.Affine(n.weight, np.full(n.weight.shape[0], 0.5))),
        "'hidden0_fc' is an Affine with a non-zero bias",
    ),
    "partial_recurrence": (_one_layer_recurrent, "only layers \\['hidden0'\\] .* recurrent"),
    "heterogeneous_readout": (
        _with_node(
            "readout",
            lambda n: nir.CubaLI(n.tau_syn, n.tau_mem * np.linspace(1, 2, K), n.r, n.v_leak),
        ),
        "'readout' \\(the CubaLI readout\\): tau_mem differs between neurons",
    ),
}


@pytest.mark.parametrize("case", BAD_GRAPHS)
def test_import_names_what_spikelight_cannot_run(case):
    change, message = BAD_GRAPHS[case]
    with pytest.raises(ValueError, match=message):
        import_network(change(_graph()))


def test_import_of_a_graph_without_dt_takes_it_as_an_argument(float64):
    net = build(LIF_ZERO, recurrent=False)
    graph = _without_dt(export_network(net))
    back = import_network(graph, dt=DT)
    x = spikes_in()
    assert torch.equal(run(back, x).spikes["hidden1"], run(net, x).spikes["hidden1"])


def test_neuron_set_is_the_inverse_of_get(float64):
    """What import writes a parameter with: ``set`` then ``get`` returns the values."""
    neuron = LIF(4, SuperSpike(), trainable=["tau_mem"])
    values = torch.tensor([2e-3, 10e-3, 40e-3, 0.3])
    neuron.set("tau_mem", values)
    torch.testing.assert_close(neuron.get("tau_mem"), values, rtol=1e-13, atol=0)
    assert isinstance(neuron.tau_mem_raw, torch.nn.Parameter)  # still trainable
    neuron.set("v_leak", -0.5)  # a scalar applies to every neuron
    assert neuron.get("v_leak").tolist() == [-0.5] * 4
    with pytest.raises(ValueError, match=r"^neuron.tau_mem: value outside bounds \[0.001, 0.5\]"):
        neuron.set("tau_mem", torch.tensor([1.0, 1e-2, 1e-2, 1e-2]))
