"""A :class:`~spikelight.network.SpikingNetwork` as a NIR graph, and back.

The graph of a network with hidden layers ``hidden0 .. hidden{L-1}``::

    input -> hidden0_fc -> hidden0 -> hidden1_fc -> hidden1 ... -> readout_fc -> readout -> output
                            |    ^
                            v    |        (recurrent networks: a Linear from each hidden layer
                         hidden0_rec       back onto itself, a cycle in the graph)

``*_fc``/``*_rec`` are ``Linear`` nodes with the effective weights, ``hidden*`` CubaLIF (LIF)
or IF nodes, ``readout`` a CubaLI (membrane decodings: the output is the readout membrane) or
a spiking node (spike decodings: the output is the readout's spikes). The output is
``NetworkOutput.readout`` over time; the decoding over time (max, mean, count) is not a NIR
node and is kept in ``metadata["decoding"]``, with ``dt`` in ``metadata["dt"]``. The neuron
correspondence and what it leaves approximate: :mod:`spikelight.nir.mapping`.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict

import numpy as np
import torch

from spikelight.network import DECODINGS, LeakyReadout, SpikingNetwork, hidden_name
from spikelight.neurons import LIF
from spikelight.nir import require_nir
from spikelight.nir.mapping import (
    NEURON_NODES,
    _array,
    input_gain,
    neuron_node,
    neuron_parameters,
    readout_node,
)
from spikelight.surrogates import SuperSpike
from spikelight.weight_init import ScaledNormal

nir = require_nir()

#: what :func:`import_network` reads, for its error messages
IMPORTABLE = (
    "Input -> (Linear | Affine with zero bias -> CubaLIF | IF, optionally with a recurrent "
    "Linear from the neuron node onto itself) for each hidden layer -> Linear -> "
    "CubaLI | CubaLIF | IF -> Output"
)
SPIKE_DECODINGS = ("spike_count", "spike_rate")
MEMBRANE_DECODINGS = tuple(d for d in DECODINGS if d not in SPIKE_DECODINGS)
#: LIF's default time-constant bounds; imported values widen them (strictly: a value on a bound
#: would be moved inside it by the constraint)
DEFAULT_TAU_BOUNDS = (1e-3, 0.5)


def export_network(network: SpikingNetwork) -> nir.NIRGraph:
    """The NIR graph of ``network`` (raises ``ValueError`` naming what NIR cannot express)."""
    _check_exportable(network)
    fan_in = network.layers[0].fc.in_features
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array([fan_in]))}
    edges: list[tuple[str, str]] = []
    previous = "input"
    for k, layer in enumerate(network.layers):
        name = hidden_name(k)
        nodes[f"{name}_fc"] = nir.Linear(weight=_array(layer.fc.weight))
        nodes[name] = neuron_node(layer.neuron, f"layer {name}")
        edges += [(previous, f"{name}_fc"), (f"{name}_fc", name)]
        if layer.rec is not None:
            nodes[f"{name}_rec"] = nir.Linear(weight=_array(layer.rec.weight))
            edges += [(name, f"{name}_rec"), (f"{name}_rec", name)]
        previous = name
    nodes["readout_fc"] = nir.Linear(weight=_array(network.readout_fc.weight))
    if isinstance(network.readout, LeakyReadout):
        nodes["readout"] = readout_node(network.readout)
    else:
        nodes["readout"] = neuron_node(network.readout, f"the spiking readout ({network.decoding})")
    nodes["output"] = nir.Output(output_type=np.array([network.readout_fc.out_features]))
    edges += [(previous, "readout_fc"), ("readout_fc", "readout"), ("readout", "output")]
    metadata = {"source": "spikelight", "dt": float(network.dt), "decoding": network.decoding}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _check_exportable(network: SpikingNetwork) -> None:
    """The network options this export does not write (it writes ``Linear`` nodes and a
    CubaLI readout, and keeps only the decoding's name)."""
    if network.delayed_projections():
        raise ValueError(
            "the network has synaptic delays (model.network.delays), one per synapse; "
            "a NIR Linear node has none and NIR's Delay delays whole channels, so the graph "
            "would run another network: export a network without delays"
        )
    if network.readout_fc.bias is not None:
        raise ValueError(
            "model.network.bias=true cannot be exported: spikelight writes Linear nodes "
            "without bias; train with model.network.bias=false"
        )
    if isinstance(network.readout, LeakyReadout) and float(network.readout.a_syn) == 0:
        raise ValueError(
            "model.network.readout_tau_syn=null (no synaptic filter) cannot be exported as "
            "the CubaLI readout; train with a readout_tau_syn > dt"
        )
    if network.ignore_steps:
        raise ValueError(
            f"model.network.ignore_steps={network.ignore_steps} is not part of a NIR graph; "
            "train with model.network.ignore_steps=0"
        )


def import_network(
    graph: nir.NIRGraph,
    dt: float | None = None,
    surrogate=None,
    trainable=("weights",),
    time_loop: str = "fused",
) -> SpikingNetwork:
    """A :class:`SpikingNetwork` running ``graph`` (of the form :data:`IMPORTABLE`).

    ``dt``: the time step in seconds (default: the graph's ``metadata["dt"]``, which spikelight
    writes). ``surrogate`` (default ``SuperSpike(10)``) and ``trainable`` only matter for further
    training. The weights are the graph's (the initialisation is ``ScaledNormal``, whose
    ``calibrate`` leaves them alone). Neurons spike with ``reset="zero"``, NIR's reset.
    """
    dt = _time_step(graph, dt)
    chain = _chain(graph)
    *hidden, (readout_fc, readout_name, readout_rec) = chain
    if not hidden:
        raise ValueError(f"the NIR graph has no hidden layer; spikelight imports {IMPORTABLE}")
    if readout_rec is not None:
        raise ValueError(
            f"NIR node {readout_name!r} (the readout) has a recurrent Linear {readout_rec!r}; "
            "spikelight's readout is not recurrent"
        )
    kind = _neuron_kind(graph, hidden)
    recurrent = _recurrence(hidden)
    readout = graph.nodes[readout_name]
    spiking_readout = not isinstance(readout, nir.CubaLI)
    if spiking_readout and NEURON_NODES.get(type(readout)) is not kind:
        raise ValueError(
            f"NIR node {readout_name!r} (the readout) is {type(readout).__name__}: spikelight's "
            f"readout is a CubaLI or a spiking node of the hidden layers' kind "
            f"({_node_name(kind)})"
        )
    decoding = _decoding(graph, spiking_readout)
    populations = [name for _, name, _ in hidden] + ([readout_name] if spiking_readout else [])
    values = {name: neuron_parameters(graph.nodes[name]) for name in populations}
    for name in populations:
        _check_parameters(name, values[name], dt)
    readout_tau = {} if spiking_readout else _readout_time_constants(readout_name, readout, dt)

    neuron = functools.partial(
        kind, dt=dt, reset="zero", **_factory_parameters(values, kind is LIF)
    )
    network = SpikingNetwork(
        num_inputs=_weight(graph, hidden[0][0]).shape[1],
        num_classes=_weight(graph, readout_fc).shape[0],
        hidden=[graph.nodes[name].v_threshold.size for _, name, _ in hidden],
        neuron=neuron,
        surrogate=SuperSpike() if surrogate is None else surrogate,
        trainable=trainable,
        recurrent=recurrent,
        decoding=decoding,
        weight_init=ScaledNormal(),
        time_loop=time_loop,
        **readout_tau,
    )
    sizes = [network.layers[0].fc.in_features] + [layer.neuron.size for layer in network.layers]
    for k, (layer, (fc, name, rec)) in enumerate(zip(network.layers, hidden, strict=True)):
        gain = input_gain(graph.nodes[name], dt)
        _load_weight(layer.fc, graph, fc, gain, (sizes[k + 1], sizes[k]))
        if rec is not None:
            _load_weight(layer.rec, graph, rec, gain, (sizes[k + 1], sizes[k + 1]))
        for parameter, array in values[name].items():
            layer.neuron.set(parameter, torch.from_numpy(array))
    if spiking_readout:
        for parameter, array in values[readout_name].items():
            network.readout.set(parameter, torch.from_numpy(array))
    gain = input_gain(readout, dt)
    _load_weight(network.readout_fc, graph, readout_fc, gain, (network.readout.size, sizes[-1]))
    return network


def _time_step(graph: nir.NIRGraph, dt: float | None) -> float:
    source = "dt"
    if dt is None:
        metadata = graph.metadata if isinstance(graph.metadata, dict) else {}
        if "dt" not in metadata:
            raise ValueError(
                "the NIR graph's metadata has no 'dt' (NIR itself has no time step; spikelight "
                "writes one): pass dt=<time step in seconds> (CLI: --dt)"
            )
        dt, source = metadata["dt"], "the graph's metadata['dt']"
    dt = float(np.asarray(dt))
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"{source}={dt!r}: expected a time step > 0 in seconds")
    return dt


def _chain(graph: nir.NIRGraph) -> list[tuple[str, str, str | None]]:
    """``[(weights into the population, population, its recurrent weights or None), ...]``."""
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise ValueError(
                f"NIR node {name!r} is a nested NIRGraph; spikelight imports one flat graph of "
                f"the form {IMPORTABLE}"
            )
    succ, pred = defaultdict(list), defaultdict(list)
    for source, target in graph.edges:
        succ[source].append(target)
        pred[target].append(source)
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"the NIR graph has inputs {inputs} and outputs {outputs}; spikelight imports one "
            f"of each ({IMPORTABLE})"
        )
    chain = []
    visited = set(inputs)
    fc = _only(succ[inputs[0]], f"the graph input {inputs[0]!r}")
    while True:
        _weight(graph, fc)
        population = _only(succ[fc], f"the weights {fc!r}")
        _population_node(graph, population)
        feedback = [p for p in pred[population] if p != fc]
        rec = None
        if feedback:
            rec = _only(feedback, f"the inputs of {population!r} besides {fc!r}")
            if succ[rec] != [population] or pred[rec] != [population]:
                raise ValueError(
                    f"NIR node {rec!r} feeds {population!r} but is not a recurrent Linear from "
                    f"{population!r} onto itself; spikelight imports {IMPORTABLE}"
                )
            _weight(graph, rec)
        following = [s for s in succ[population] if s != rec]
        after = _only(following, f"the outputs of {population!r}")
        chain.append((fc, population, rec))
        visited |= {fc, population} | ({rec} if rec else set())
        if isinstance(graph.nodes[after], nir.Output):
            visited.add(after)
            break
        if after in visited:
            raise ValueError(
                f"the NIR graph loops back to {after!r}; spikelight imports {IMPORTABLE}"
            )
        fc = after
    stray = sorted(set(graph.nodes) - visited)
    if stray:
        raise ValueError(
            f"NIR nodes {stray} are not on the path from input to output; spikelight imports "
            f"{IMPORTABLE}"
        )
    return chain


def _only(names: list[str], what: str) -> str:
    if len(names) != 1:
        raise ValueError(
            f"{what} connects to {names or 'nothing'}, expected exactly one node; spikelight "
            f"imports {IMPORTABLE}"
        )
    return names[0]


def _node_name(kind) -> str:
    return next(node.__name__ for node, neuron in NEURON_NODES.items() if neuron is kind)


def _unsupported(name: str, node: nir.NIRNode, expected: str) -> ValueError:
    hints = {
        nir.LIF: " (NIR's LIF has no synaptic current: spikelight's LIF is a CubaLIF)",
        nir.Delay: " (spikelight's synapses have no delays)",
    }
    return ValueError(
        f"NIR node {name!r} is {type(node).__name__}{hints.get(type(node), '')}, where spikelight "
        f"expects {expected}; spikelight imports {IMPORTABLE}"
    )


def _weight(graph: nir.NIRGraph, name: str) -> np.ndarray:
    node = graph.nodes[name]
    if isinstance(node, nir.Affine):
        if np.any(np.asarray(node.bias) != 0):
            raise ValueError(
                f"NIR node {name!r} is an Affine with a non-zero bias; spikelight's layers have "
                "no bias (use Linear, or an Affine with bias 0)"
            )
    elif not isinstance(node, nir.Linear):
        raise _unsupported(name, node, "weights (Linear, or Affine with bias 0)")
    weight = np.asarray(node.weight, dtype=np.float64)
    if weight.ndim != 2:
        raise ValueError(f"NIR node {name!r}: weight of shape {weight.shape}, expected 2-D")
    return weight


def _population_node(graph: nir.NIRGraph, name: str) -> None:
    node = graph.nodes[name]
    if not isinstance(node, (*NEURON_NODES, nir.CubaLI)):
        raise _unsupported(name, node, "a neuron node (CubaLIF, IF, or a CubaLI readout)")


def _neuron_kind(graph: nir.NIRGraph, hidden) -> type:
    kinds = {name: type(graph.nodes[name]) for _, name, _ in hidden}
    for name, node_type in kinds.items():
        if node_type not in NEURON_NODES:
            raise _unsupported(name, graph.nodes[name], "a spiking hidden layer (CubaLIF or IF)")
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{n}: {t.__name__}" for n, t in kinds.items())
        raise ValueError(
            f"the hidden layers mix neuron kinds ({listed}); a spikelight network has one "
            "neuron kind"
        )
    return NEURON_NODES[next(iter(kinds.values()))]


def _recurrence(hidden) -> bool:
    recurrent = [name for _, name, rec in hidden if rec is not None]
    if recurrent and len(recurrent) != len(hidden):
        raise ValueError(
            f"only layers {recurrent} of {[name for _, name, _ in hidden]} are recurrent; "
            "spikelight's model.network.recurrent makes every hidden layer recurrent or none"
        )
    return bool(recurrent)


def _decoding(graph: nir.NIRGraph, spiking_readout: bool) -> str:
    metadata = graph.metadata if isinstance(graph.metadata, dict) else {}
    decoding = metadata.get("decoding")
    decoding = decoding.decode() if isinstance(decoding, bytes) else decoding
    allowed = SPIKE_DECODINGS if spiking_readout else MEMBRANE_DECODINGS
    return decoding if decoding in allowed else allowed[0]


def _check_parameters(name: str, values: dict[str, np.ndarray], dt: float) -> None:
    for key, array in values.items():
        if not np.all(np.isfinite(array)):
            raise ValueError(f"NIR node {name!r}: {key} has non-finite values")
    if np.any(values["threshold"] <= 1e-6):
        raise ValueError(
            f"NIR node {name!r}: v_threshold min {values['threshold'].min():g}, spikelight's "
            "thresholds are > 1e-6"
        )
    for key in ("tau_mem", "tau_syn"):
        if key in values and np.any(values[key] <= dt):
            raise ValueError(
                f"NIR node {name!r}: {key} min {values[key].min():g} s, expected every value "
                f"> dt={dt:g} s"
            )


def _factory_parameters(values: dict[str, dict[str, np.ndarray]], leaky: bool) -> dict:
    """Scalar constructor arguments valid for every population; per-neuron values come after."""
    first = next(iter(values.values()))
    parameters = {"threshold": float(first["threshold"][0]), "v_reset": 0.0}
    if leaky:
        for key in ("tau_mem", "tau_syn"):
            taus = np.concatenate([v[key] for v in values.values()])
            lo = min(DEFAULT_TAU_BOUNDS[0], taus.min() / 2)
            hi = max(DEFAULT_TAU_BOUNDS[1], taus.max() * 2)
            parameters[key] = float(taus[0])
            parameters[f"{key}_bounds"] = (lo, hi)
    return parameters


def _readout_time_constants(name: str, node: nir.CubaLI, dt: float) -> dict[str, float]:
    if np.any(np.asarray(node.v_leak) != 0):
        raise ValueError(
            f"NIR node {name!r} (the CubaLI readout): v_leak must be 0 (spikelight's leaky "
            f"readout has none), got {np.asarray(node.v_leak).reshape(-1)[:4]}"
        )
    taus = {}
    for key in ("tau_mem", "tau_syn"):
        values = np.asarray(getattr(node, key), dtype=np.float64).reshape(-1)
        if not np.allclose(values, values[0], rtol=1e-12, atol=0):
            raise ValueError(
                f"NIR node {name!r} (the CubaLI readout): {key} differs between neurons "
                f"({values.min():g} to {values.max():g} s); spikelight's leaky readout has one "
                f"{key} for all"
            )
        if not values[0] > dt:
            raise ValueError(
                f"NIR node {name!r} (the CubaLI readout): {key}={values[0]:g} s, expected > "
                f"dt={dt:g} s"
            )
        taus[f"readout_{key}"] = float(values[0])
    return taus


@torch.no_grad()
def _load_weight(linear, graph, name: str, gain: np.ndarray, shape: tuple[int, int]) -> None:
    weight = _weight(graph, name)
    if weight.shape != shape:
        raise ValueError(
            f"NIR node {name!r}: weight of shape {weight.shape}, expected {shape} "
            "(outputs x inputs) between the nodes it connects"
        )
    scaled = weight if np.all(gain == 1) else weight * gain[:, None]
    linear.weight.copy_(torch.from_numpy(scaled))
