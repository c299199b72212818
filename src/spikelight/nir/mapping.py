"""One neuron population <-> one NIR node: the parameter correspondence and its derivation.

NIR 1.0.8 defines its neurons in continuous time (``S``: the node's input signal)::

    CubaLIF  tau_syn dI/dt = -I + w_in S      tau_mem dv/dt = (v_leak - v) + r I
             z = H(v - v_threshold); on a spike v -> v_reset
    CubaLI   the same without threshold (output: v)
    IF       dv/dt = r S;  z = H(v - v_threshold); on a spike v -> v_reset

spikelight is discrete time. A NIR graph runs in discrete time under one rule, the rule
spikelight's own equations follow and the one this mapping is exact for: with step ``dt``,

1. the input ``S`` holds, through step ``t``, the value ``S_t`` its ``Linear`` gives for that
   step's spikes (zero-order hold of the signal's *value*, as snnTorch's and Norse's NIR
   importers read it; not a Dirac delta of area ``S_t``);
2. each ODE is integrated exactly over the step with its input held, the synapse first and the
   membrane with ``I`` held at its new value ``I_t``;
3. the spike and reset follow at the end of the step; a recurrent edge (a cycle in the graph)
   carries the previous step's spikes.

Rule 2 gives, with ``a_syn = exp(-dt/tau_syn)`` and ``a_mem = exp(-dt/tau_mem)``::

    I_t = a_syn I_{t-1} + (1 - a_syn) w_in S_t
    v_t = v_leak + a_mem (v_{t-1} - v_leak) + (1 - a_mem) r I_t
    IF:   v_t = v_{t-1} + dt r S_t

spikelight's LIF (:class:`~spikelight.neurons.LIF`) is ``i_t = a_syn i_{t-1} + x_t``,
``v_t = v_leak + a_mem (v_{t-1} - v_leak) + (1 - a_mem) i_t`` with ``x_t = S_t``, so the two
agree for every input exactly when ``I = i``, ``r = 1`` and ``(1 - a_syn) w_in = 1``::

    w_in = 1 / (1 - exp(-dt / tau_syn))        (~ tau_syn / dt + 1/2, snnTorch's tau_syn / dt)
    r    = 1                                   (the membrane's 1 - a_mem factor is NIR's own)
    IF:  r = 1 / dt                            (spikelight's IF: v_t = v_{t-1} + x_t)

Thresholds, ``v_leak`` and ``v_reset`` carry over as they are; spikelight's ``reset="zero"`` is
NIR's reset to ``v_reset``, and both spike on ``v > threshold``. The leaky readout is a CubaLI
with ``v_leak = 0``. Importing, only the input gain ``g = r w_in (1 - a_syn)`` (IF: ``g = r dt``)
reaches the membrane; ``I`` itself is never seen, so a graph with another split of ``r`` and
``w_in`` (snnTorch writes ``r = tau_mem/dt``) imports exactly with its gain folded into the rows
of the weights that feed the node (:func:`input_gain`).

What is approximate (a property of the rule, not of the numbers): the exact flow of NIR's ODEs
lets ``I`` decay *within* a step while ``v`` integrates it; rule 2 holds it at ``I_t``. A
simulator that integrates NIR's ODEs otherwise -- exactly, or by forward Euler (decays
``1 - dt/tau``, as snnTorch's and Norse's importers do) -- gives spikes that differ, by less as
``dt/tau`` shrinks. The recurrent one-step delay and the initial state (``v = v_leak``,
``I = 0``) are discrete-time conventions NIR does not fix, and ``dt`` is not part of NIR: the
graph's metadata carries it (``metadata["dt"]``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from spikelight.neurons import IF, LIF
from spikelight.neurons.base import Neuron
from spikelight.nir import require_nir

nir = require_nir()

#: the neuron nodes spikelight imports, by the spikelight neuron they become
NEURON_NODES = {nir.CubaLIF: LIF, nir.IF: IF}
#: spikelight neurons without a NIR counterpart, as the config names them
NO_NIR_NEURONS = {
    "ALIF": "alif (adaptive threshold)",
    "AdLIF": "adlif (adaptation current)",
    "RF": "rf (resonate-and-fire)",
}
#: relative distance from 1 within which an input gain is rounding, not a scale to fold
GAIN_RTOL = 1e-12


def _array(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().to(torch.float64).numpy().copy()


def synapse_w_in(tau_syn: np.ndarray, dt: float) -> np.ndarray:
    """NIR's ``w_in`` for spikelight's synapse ``i_t = a_syn i_{t-1} + x_t``: ``1/(1 - a_syn)``."""
    return 1.0 / -np.expm1(-dt / np.asarray(tau_syn, dtype=np.float64))


def integrator_r(dt: float) -> float:
    """NIR's ``r`` for spikelight's IF ``v_t = v_{t-1} + x_t``: ``1/dt``."""
    return 1.0 / dt


def check_expressible(neuron: Neuron, where: str) -> None:
    """Raise ``ValueError`` naming what ``neuron`` does that NIR's CubaLIF / IF cannot."""
    kind = type(neuron)
    if kind not in (LIF, IF):
        name = NO_NIR_NEURONS.get(kind.__name__, kind.__name__)
        raise ValueError(
            f"{where}: neuron={name} cannot be expressed in NIR (its neurons CubaLIF, LIF, IF, "
            "CubaLI, LI and I have no adaptation); train with neuron=lif (exported as CubaLIF) "
            "or neuron=if (exported as IF)"
        )
    primitive = "CubaLIF" if kind is LIF else "IF"
    if neuron.reset == "subtract":
        raise ValueError(
            f"{where}: neuron.reset=subtract cannot be expressed in NIR's {primitive} (reset to "
            "v_reset); train with neuron.reset=zero"
        )
    if neuron.reset == "none":
        raise ValueError(
            f"{where}: neuron.reset=none cannot be expressed in NIR's {primitive} (every spike "
            "resets v to v_reset); train with neuron.reset=zero"
        )
    if kind is IF and neuron.rectify:
        raise ValueError(
            f"{where}: neuron.rectify=true (membrane clipped at 0) cannot be expressed in NIR's "
            "IF; train with neuron.rectify=false"
        )
    if neuron.surrogate.smooth_forward:
        raise ValueError(
            f"{where}: surrogate.smooth_forward=true makes the forward pass a smooth step, not "
            "spikes, which NIR's neurons cannot express; train with surrogate.smooth_forward=false"
        )


def neuron_node(neuron: Neuron, where: str) -> nir.NIRNode:
    """The NIR node of a spiking population (``where`` names it in errors)."""
    check_expressible(neuron, where)
    get = {name: _array(neuron.get(name)) for name in neuron.parameter_names}
    if type(neuron) is IF:
        return nir.IF(
            r=np.full(neuron.size, integrator_r(neuron.dt)),
            v_threshold=get["threshold"],
            v_reset=get["v_reset"],
        )
    return nir.CubaLIF(
        tau_syn=get["tau_syn"],
        tau_mem=get["tau_mem"],
        r=np.ones(neuron.size),
        v_leak=get["v_leak"],
        v_threshold=get["threshold"],
        v_reset=get["v_reset"],
        w_in=synapse_w_in(get["tau_syn"], neuron.dt),
    )


def readout_node(readout) -> nir.CubaLI:
    """The leaky readout (:class:`~spikelight.network.LeakyReadout`) as a CubaLI."""
    size, dt = readout.size, readout.dt
    tau_mem = np.full(size, -dt / math.log(float(readout.a_mem)))
    tau_syn = np.full(size, -dt / math.log(float(readout.a_syn)))
    return nir.CubaLI(
        tau_syn=tau_syn,
        tau_mem=tau_mem,
        r=np.ones(size),
        v_leak=np.zeros(size),
        w_in=synapse_w_in(tau_syn, dt),
    )


def input_gain(node: nir.NIRNode, dt: float) -> np.ndarray:
    """What one unit of ``S`` adds to spikelight's ``i`` (CubaLIF/CubaLI) or ``v`` (IF).

    1 for the graphs spikelight writes; otherwise a per-neuron scale for the weights into the
    node. Within :data:`GAIN_RTOL` of 1 it is 1, so a round trip keeps the weights bit for bit.
    """
    r = np.asarray(node.r, dtype=np.float64)
    if isinstance(node, nir.IF):
        gain = r / integrator_r(dt)
    else:
        gain = r * np.asarray(node.w_in, dtype=np.float64) / synapse_w_in(node.tau_syn, dt)
    gain = np.array(gain, dtype=np.float64).reshape(-1)
    gain[np.abs(gain - 1.0) <= GAIN_RTOL] = 1.0
    return gain


def neuron_parameters(node: nir.NIRNode) -> dict[str, np.ndarray]:
    """spikelight's per-neuron parameter values of a CubaLIF or IF node."""
    values = {"threshold": node.v_threshold, "v_reset": node.v_reset}
    if isinstance(node, nir.CubaLIF):
        values.update(tau_mem=node.tau_mem, tau_syn=node.tau_syn, v_leak=node.v_leak)
    return {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in values.items()}
