"""Streaming inference: a network run chunk by chunk, its state carried, equals the whole run.

Exactness: the per-step equations are the same code in both runs, but the input projections
``x @ W.T`` are one matrix product over the whole sequence against one per chunk, and BLAS sums a
row in an order that depends on the matrix's shape (MKL differs by ~1e-14 between a [T*B, C] and
a [t*B, C] product). The exact tests therefore use weights on a 2^-8 grid and 0/1 input: every
projection sum is then exact in any order, and what is compared bit for bit is the state the
stream carries (every neuron variable, the previous spikes of a recurrent layer, the readout's
current and membrane, the decoding). With ordinary weights the agreement is to rounding.
"""

from __future__ import annotations

import functools

import pytest
import torch

from spikelight.network import SpikingNetwork
from spikelight.neurons import ALIF, IF, LIF, AdLIF
from spikelight.surrogates import SuperSpike
from spikelight.weight_init import ScaledNormal, set_weight, spiking_targets

T, BATCH, INPUTS, HIDDEN, CLASSES = 23, 3, 9, [12, 10], 4
#: weight scale at which each neuron's two hidden layers fire at a moderate rate on the input
SCALES = {IF: 5.0, LIF: 5.0, ALIF: 5.0, AdLIF: 20.0}


def make_network(neuron, recurrent, decoding="max_membrane", time_loop="autograd", grid=True):
    torch.manual_seed(0)
    weight_init = ScaledNormal(SCALES[neuron]) if grid else None
    net = SpikingNetwork(
        INPUTS,
        CLASSES,
        HIDDEN,
        functools.partial(neuron),
        SuperSpike(10.0),
        trainable=["weights", "threshold"],  # a trained neuron parameter is carried too
        recurrent=recurrent,
        decoding=decoding,
        time_loop=time_loop,
        weight_init=weight_init,
    )
    if grid:
        for _, projections in spiking_targets(net):
            for _, linear in projections:
                set_weight(linear, torch.round(linear.weight.detach() * 256) / 256)
    return net


def spike_input(seed=1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(T, BATCH, INPUTS, generator=generator) < 0.3).double()


def streamed(net, x, chunk, carry=True):
    """Outputs of ``x`` streamed in chunks of ``chunk`` steps, concatenated over time."""
    state = net.init_state(x.shape[1])
    readouts, spikes = [], {}
    for start in range(0, x.shape[0], chunk):
        if not carry:
            state = net.init_state(x.shape[1])
        out, state = net.stream(x[start : start + chunk], state)
        readouts.append(out.readout)
        for name, z in out.spikes.items():
            spikes.setdefault(name, []).append(z)
    return out.logits, torch.cat(readouts), {k: torch.cat(v) for k, v in spikes.items()}, state


@pytest.mark.parametrize("chunk", [1, 7, T])
@pytest.mark.parametrize("recurrent", [False, True], ids=["feedforward", "recurrent"])
@pytest.mark.parametrize("neuron", [IF, LIF, ALIF, AdLIF], ids=lambda n: n.__name__)
def test_chunks_equal_the_whole_sequence_exactly(float64, neuron, recurrent, chunk):
    net = make_network(neuron, recurrent)
    x = spike_input()
    whole = net(x)
    for name, z in whole.spikes.items():  # every layer active, none saturated
        assert 0.02 < z.mean() < 0.6, (name, z.mean())
    logits, readout, spikes, state = streamed(net, x, chunk)
    assert spikes.keys() == whole.spikes.keys()
    for name in whole.spikes:
        assert torch.equal(spikes[name], whole.spikes[name]), name
    assert torch.equal(readout, whole.readout)
    assert torch.equal(logits, whole.logits)
    assert state.steps == T


@pytest.mark.parametrize("neuron", [LIF, AdLIF], ids=lambda n: n.__name__)
def test_a_stream_restarted_at_every_chunk_differs(float64, neuron):
    """The control: without the carried state the chunks do not add up to the whole run."""
    net = make_network(neuron, recurrent=True)
    x = spike_input()
    whole = net(x)
    _, readout, spikes, _ = streamed(net, x, 7, carry=False)
    assert not torch.equal(readout, whole.readout)
    assert not torch.equal(spikes["hidden1"], whole.spikes["hidden1"])


@pytest.mark.parametrize("decoding", ["spike_count", "spike_rate"])
def test_spiking_readout_streams_exactly(float64, decoding):
    net = make_network(ALIF, recurrent=True, decoding=decoding)
    x = spike_input()
    whole = net(x)
    assert whole.spikes["readout"].sum() > 0
    logits, readout, spikes, _ = streamed(net, x, 7)
    assert torch.equal(spikes["readout"], whole.spikes["readout"])
    assert torch.equal(readout, whole.readout)
    assert torch.equal(logits, whole.logits)


def test_mean_membrane_scores_agree_to_the_last_bit(float64):
    """The trace is exact; the mean's running sum adds chunk by chunk (documented)."""
    net = make_network(LIF, recurrent=True, decoding="mean_membrane")
    x = spike_input()
    whole = net(x)
    logits, readout, _, _ = streamed(net, x, 7)
    assert torch.equal(readout, whole.readout)
    torch.testing.assert_close(logits, whole.logits, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("recurrent", [False, True], ids=["feedforward", "recurrent"])
@pytest.mark.parametrize("neuron", [IF, LIF, ALIF, AdLIF], ids=lambda n: n.__name__)
def test_stream_matches_the_fused_training_forward(float64, neuron, recurrent):
    """A network as trained (fused time loop, fluctuation-driven weights stored through their
    parametrization): same spikes, readout equal to rounding."""
    net = make_network(neuron, recurrent, time_loop="fused", grid=False)
    assert net.layers[0].fc.parametrizations.weight.original is not None
    x = (torch.rand(T, BATCH, INPUTS, generator=torch.Generator().manual_seed(2)) < 0.3).double()
    whole = net(x)
    assert whole.spikes["hidden1"].sum() > 0
    logits, readout, spikes, _ = streamed(net, x, 7)
    for name in whole.spikes:
        assert torch.equal(spikes[name], whole.spikes[name].double()), name
    torch.testing.assert_close(readout, whole.readout, rtol=0, atol=1e-12)
    torch.testing.assert_close(logits, whole.logits, rtol=0, atol=1e-12)


def test_stream_records_no_graph():
    net = make_network(LIF, recurrent=True, grid=False)
    out, state = net.stream(torch.zeros(4, 2, INPUTS), net.init_state(2))
    assert not out.logits.requires_grad and not out.readout.requires_grad
    assert not any(t.requires_grad for layer in state.layers for t in layer)


def test_bad_chunks_and_batches_are_named():
    net = make_network(LIF, recurrent=False, grid=False)
    state = net.init_state(2)
    expected = (
        r"expected a time-major chunk \[t >= 1, 2 \(the state's batch\), 9\] of torch.float32"
    )
    with pytest.raises(ValueError, match=r"x='\(4, 3, 9\) of torch.float32': " + expected):
        net.stream(torch.zeros(4, 3, INPUTS), state)  # another batch than the state's
    with pytest.raises(ValueError, match=r"x='\(0, 2, 9\) of torch.float32': " + expected):
        net.stream(torch.zeros(0, 2, INPUTS), state)
    with pytest.raises(ValueError, match=r"x='\(2, 9\) of torch.float32'"):
        net.stream(torch.zeros(2, INPUTS), state)
    with pytest.raises(ValueError, match=r"x='\(4, 2, 9\) of torch.float64'"):
        net.stream(torch.zeros(4, 2, INPUTS, dtype=torch.float64), state)
    with pytest.raises(ValueError, match="batch=0: expected an integer >= 1"):
        net.init_state(0)
