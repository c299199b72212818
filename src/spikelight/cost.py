"""What a network costs: neurons, synapses, synaptic operations, and an energy estimate.

Per layer (``hidden0``, ``hidden1``, ..., ``readout``), counted on the projections that exist
(:func:`spikelight.weight_init.spiking_targets`): a dense ``Linear`` from ``n_in`` to ``n_out``
has ``n_in * n_out`` synapses, a recurrent one ``N * N``; the readout has its ``Linear`` from the
last hidden layer.

Synaptic operations (SynOps) onto a layer, per sample: every presynaptic event times its fan-out
into that layer, i.e. the accumulates ``w_ij`` an event-driven chip performs. The presynaptic
events are the previous layer's spikes (the network input for the first layer; a count input
such as binned SHD, ``k`` in a bin, is ``k`` events) and, for a recurrent layer, its own spikes,
each fanning out to all ``N`` of its neurons (a spike at the last step counts too: its recurrent
input is due at the step after the sample). Analog input (an image as current, every step) has no
events: each non-zero input value is a multiply-accumulate per synapse instead.

Energy (Horowitz, "Computing's energy problem", ISSCC 2014; 45 nm, 32-bit float): an accumulate
(add) costs ``E_AC`` = 0.9 pJ, a multiply-accumulate ``E_MAC`` = 3.7 + 0.9 = 4.6 pJ. The spiking
network's estimate is its SynOps at ``E_AC`` (at ``E_MAC`` for analog input); the same network
run as a non-spiking ANN computes every synapse at every step, ``synapses * T`` MACs at
``E_MAC``. Both count synaptic arithmetic only: neuron state updates, memory access and data
movement (which dominate on real hardware) are left out of both, so the ratio, not the absolute
value, is what the estimate supports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch

from spikelight.network import SpikingNetwork, hidden_name
from spikelight.weight_init import spiking_targets

#: Energy of one 32-bit float operation at 45 nm, picojoules (Horowitz 2014).
E_AC_PJ = 0.9  # add: what a spike triggers at each synapse
E_MAC_PJ = 4.6  # multiply (3.7) + add (0.9): what a dense ANN does at each synapse
ENERGY_SOURCE = "Horowitz 2014 (ISSCC), 45 nm, 32-bit float; synaptic operations only"


@dataclass(frozen=True)
class LayerSize:
    """One layer's neurons and the synapses onto it (feed-forward plus recurrent)."""

    name: str
    neurons: int
    synapses: int
    recurrent_synapses: int  # of ``synapses``, those of the recurrent matrix (0 without one)


def layer_names(network: SpikingNetwork) -> list[str]:
    """``hidden0``, ..., ``readout``: the layers in the order of ``spiking_targets``."""
    return [hidden_name(i) for i in range(len(network.layers))] + ["readout"]


def layer_sizes(network: SpikingNetwork) -> list[LayerSize]:
    """Neurons and synapses of every layer, from the projections the network has."""
    sizes = []
    for name, (population, projections) in zip(
        layer_names(network), spiking_targets(network), strict=True
    ):
        count = {"ff": 0, "rec": 0}
        for kind, linear in projections:
            count[kind] += linear.in_features * linear.out_features
        sizes.append(LayerSize(name, population.size, count["ff"] + count["rec"], count["rec"]))
    return sizes


def size_report(network: SpikingNetwork) -> dict:
    """Layer sizes, totals and the energy assumptions, as plain data (``metrics.json``)."""
    sizes = layer_sizes(network)
    return {
        "layers": {s.name: {k: v for k, v in asdict(s).items() if k != "name"} for s in sizes},
        "neurons": sum(s.neurons for s in sizes),
        "synapses": sum(s.synapses for s in sizes),
        "energy_pj_per_op": {"accumulate": E_AC_PJ, "multiply_accumulate": E_MAC_PJ},
        "energy_source": ENERGY_SOURCE,
    }


def is_analog(x: torch.Tensor) -> bool:
    """Whether input ``x`` holds values other than event counts (non-negative integers)."""
    return bool(((x < 0) | (torch.frac(x) != 0)).any())


def synops(
    network: SpikingNetwork,
    x: torch.Tensor,
    spikes: Mapping[str, torch.Tensor],
    analog: bool = False,
) -> dict[str, torch.Tensor]:
    """Synaptic operations per sample onto each layer (see the module docstring).

    ``x [T, B, C]`` is the network input and ``spikes`` its ``NetworkOutput.spikes``
    (``[T, B, N]`` per hidden layer); ``analog``: count ``x``'s non-zero values (MACs) instead
    of its events. Returns float64 scalars: the batch's total divided by ``B``.
    """
    batch = x.shape[1]
    x = x.detach()
    events = _total(x != 0) if analog else _total(x)
    ops = {}
    for index, (name, (_, projections)) in enumerate(
        zip(layer_names(network), spiking_targets(network), strict=True)
    ):
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for kind, linear in projections:
            source = index if kind == "rec" else index - 1
            count = events if source < 0 else _total(spikes[hidden_name(source)].detach())
            total = total + count * linear.out_features
        ops[name] = total / batch
    return ops


def _total(counts: torch.Tensor) -> torch.Tensor:
    """The sum of ``counts [T, B, N]`` in float64: per sample in their own dtype first (exact in
    float32 below 2^24 events per sample), which is 25x faster than converting every entry."""
    return counts.sum(dim=(0, 2)).sum(dtype=torch.float64)


def snn_energy_nj(ops: Mapping[str, torch.Tensor], analog: bool = False) -> torch.Tensor:
    """Energy per sample (nJ) of the synaptic operations ``ops`` (:func:`synops`).

    Every operation is an accumulate, but those onto the first layer from analog input (MACs).
    """
    first = next(iter(ops))
    picojoules = sum(
        n * (E_MAC_PJ if analog and name == first else E_AC_PJ) for name, n in ops.items()
    )
    return picojoules * 1e-3


def ann_macs(network: SpikingNetwork, steps: int) -> int:
    """MACs per sample of the same network as a dense ANN: every synapse at every step."""
    return sum(s.synapses for s in layer_sizes(network)) * steps


def ann_energy_nj(network: SpikingNetwork, steps: int) -> float:
    """Energy per sample (nJ) of :func:`ann_macs` at ``E_MAC_PJ`` each."""
    return ann_macs(network, steps) * E_MAC_PJ * 1e-3
