"""Neuron dynamics against closed-form responses."""

import math

import pytest
import torch

from spikelight.network import SpikingNetwork
from spikelight.neurons import ALIF, IF, LIF, RF
from spikelight.surrogates import SuperSpike

pytestmark = pytest.mark.usefixtures("float64")


def constant(value, steps, size=1, batch=1):
    return torch.full((steps, batch, size), float(value))


# -- integrate-and-fire -----------------------------------------------------------------------
# Binary fractions hit the threshold exactly (strict crossing matters); the others never do.
@pytest.mark.parametrize("current", [0.125, 0.25, 0.375, 0.5, 0.75, 0.3141, 0.7071])
@pytest.mark.parametrize("steps", [1, 7, 40, 100])
def test_if_spike_count_for_constant_input(current, steps):
    theta = 1.0
    subtract = IF(1, SuperSpike(), threshold=theta, reset="subtract")
    to_zero = IF(1, SuperSpike(), threshold=theta, reset="zero")
    # Subtract: v_t = t*I - n*theta, a spike whenever v > theta, so after T steps
    # n = ceil(T*I/theta) - 1 (strict threshold crossing; I < theta).
    expected_subtract = max(0, math.ceil(round(steps * current / theta, 9)) - 1)
    # Reset to zero: a spike every k = floor(theta/I) + 1 steps.
    k = math.floor(round(theta / current, 9)) + 1
    assert subtract(constant(current, steps)).sum().item() == expected_subtract
    assert to_zero(constant(current, steps)).sum().item() == steps // k


def test_if_reset_modes_trace():
    x = constant(0.7, 4)
    traces = {}
    for reset in ("subtract", "zero", "none"):
        z, tr = IF(1, SuperSpike(), reset=reset, v_reset=0.1)(x, return_traces=True)
        traces[reset] = (z.flatten().tolist(), tr["v"].flatten().tolist())
    # subtract: 0.7, 1.4 -> spike -> 0.4, 1.1 -> spike -> 0.1, 0.8
    assert traces["subtract"][0] == [0, 1, 1, 0]
    assert traces["subtract"][1] == pytest.approx([0.7, 0.4, 0.1, 0.8])
    # to v_reset = 0.1: 0.7, 1.4 -> spike -> 0.1, 0.8, 1.5 -> spike -> 0.1
    assert traces["zero"][0] == [0, 1, 0, 1]
    assert traces["zero"][1] == pytest.approx([0.7, 0.1, 0.8, 0.1])
    assert traces["none"][0] == [0, 1, 1, 1]
    assert traces["none"][1] == pytest.approx([0.7, 1.4, 2.1, 2.8])


def test_if_rectify_clips_negative_membrane():
    x = torch.tensor([-1.0, 0.6, 0.6]).view(3, 1, 1)
    plain = IF(1, SuperSpike(), rectify=False)(x).flatten().tolist()
    rectified = IF(1, SuperSpike(), rectify=True)(x).flatten().tolist()
    assert plain == [0, 0, 0]  # v = -1, -0.4, 0.2
    assert rectified == [0, 0, 1]  # v = 0, 0.6, 1.2


# -- leaky integrate-and-fire -------------------------------------------------------------------
def silent_lif(**kw):
    return LIF(3, SuperSpike(), threshold=1e6, **kw)


@pytest.mark.parametrize("tau_mem", [2e-3, 10e-3, 50e-3])
def test_lif_constant_current_charges_like_rc_circuit(tau_mem):
    dt, tau_syn, v_leak, current, steps = 1e-3, 5e-3, -0.2, 0.8, 200
    lif = silent_lif(dt=dt, tau_mem=tau_mem, tau_syn=tau_syn, v_leak=v_leak)
    a_syn = math.exp(-dt / tau_syn)
    # Inputs that hold the synaptic current at exactly `current` from the first step on.
    x = constant(current * (1 - a_syn), steps, size=3)
    x[0] = current
    _, tr = lif(x, return_traces=True)
    t = torch.arange(1, steps + 1) * dt
    expected = v_leak + current * (1 - torch.exp(-t / tau_mem))  # tau dv/dt = v_leak - v + I
    torch.testing.assert_close(tr["i"][:, 0, 0], torch.full((steps,), current))
    torch.testing.assert_close(tr["v"][:, 0, 0], expected, rtol=1e-12, atol=1e-12)


def test_lif_single_input_spike_gives_difference_of_exponentials():
    dt, tau_mem, tau_syn, w, steps = 1e-3, 10e-3, 5e-3, 2.0, 80
    lif = silent_lif(dt=dt, tau_mem=tau_mem, tau_syn=tau_syn)
    x = torch.zeros(steps, 1, 3)
    x[0] = w
    _, tr = lif(x, return_traces=True)
    a_m, a_s = math.exp(-dt / tau_mem), math.exp(-dt / tau_syn)
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    expected = (1 - a_m) * w * (a_m**t - a_s**t) / (a_m - a_s)
    torch.testing.assert_close(tr["v"][:, 0, 0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_lif_reset_modes(reset):
    dt, tau_mem, tau_syn, theta, v_reset = 1e-3, 10e-3, 5e-3, 1.0, -0.3
    lif = LIF(
        1,
        SuperSpike(),
        dt=dt,
        tau_mem=tau_mem,
        tau_syn=tau_syn,
        threshold=theta,
        v_reset=v_reset,
        reset=reset,
    )
    x = constant(3.0, 30)
    z, tr = lif(x, return_traces=True)
    a_m = math.exp(-dt / tau_mem)
    z, v, i = z.flatten(), tr["v"].flatten(), tr["i"].flatten()
    assert z.sum() > 2
    for t in range(1, 30):
        v_pre = a_m * v[t - 1] + (1 - a_m) * i[t]
        assert z[t] == float(v_pre > theta)
        if z[t]:
            expected = {"subtract": v_pre - theta, "zero": v_reset, "none": v_pre}[reset]
        else:
            expected = v_pre
        assert v[t].item() == pytest.approx(float(expected), abs=1e-12)


def test_lif_starts_at_rest_each_call():
    lif = LIF(2, SuperSpike(), v_leak=0.4)
    _, tr1 = lif(constant(0.0, 5, 2), return_traces=True)
    _, tr2 = lif(constant(0.0, 5, 2), return_traces=True)
    torch.testing.assert_close(tr1["v"], torch.full_like(tr1["v"], 0.4))
    torch.testing.assert_close(tr1["v"], tr2["v"])


# -- adaptive LIF ---------------------------------------------------------------------------------
def test_alif_threshold_follows_spike_train():
    dt, tau_adapt, jump = 1e-3, 30e-3, 0.5
    alif = ALIF(1, SuperSpike(), dt=dt, tau_adapt=tau_adapt, adapt_jump=jump)
    x = torch.zeros(120, 1, 1)
    x[10:60] = 4.0  # a burst of drive, then silence
    z, tr = alif(x, return_traces=True)
    spikes = z.flatten()
    assert spikes.sum() >= 3
    a = math.exp(-dt / tau_adapt)
    t = torch.arange(120)
    # b_t = jump * sum_{s <= t} a^(t-s) z_s ; threshold at step t is 1 + b_{t-1}
    expected = torch.stack([(jump * a ** (k - t[: k + 1]) * spikes[: k + 1]).sum() for k in t])
    torch.testing.assert_close(tr["b"].flatten(), expected, rtol=1e-12, atol=1e-12)
    # and each spike happened exactly where v crossed the adapted threshold
    a_m = math.exp(-dt / 10e-3)
    v, i, b = tr["v"].flatten(), tr["i"].flatten(), tr["b"].flatten()
    for k in range(1, 120):
        v_pre = a_m * v[k - 1] + (1 - a_m) * i[k]
        assert spikes[k] == float(v_pre > 1.0 + b[k - 1])


def test_alif_adaptation_lowers_rate():
    x = constant(2.0, 300)
    lif = LIF(1, SuperSpike())
    alif = ALIF(1, SuperSpike(), adapt_jump=0.5, tau_adapt=200e-3)
    assert alif(x).sum() < 0.7 * lif(x).sum()


# -- gradients and errors -------------------------------------------------------------------------
# -- resonate-and-fire ------------------------------------------------------------------------
@pytest.mark.parametrize(("tau_mem", "frequency"), [(20e-3, 20.0), (50e-3, 80.0), (5e-3, 150.0)])
def test_rf_pulse_rings_as_a_damped_oscillation(tau_mem, frequency):
    """Below threshold, a pulse at t = 0 gives z_t = (1 - r) (r e^{i phi})^t x_0, the exact
    solution of dz/dt = (-1/tau + i 2 pi f) z sampled every dt."""
    dt, steps, pulse = 1e-3, 60, 0.5
    neuron = RF(1, SuperSpike(), dt=dt, tau_mem=tau_mem, frequency=frequency, threshold=10.0)
    x = torch.zeros(steps, 1, 1)
    x[0] = pulse
    spikes, traces = neuron(x, return_traces=True)
    t = torch.arange(steps, dtype=torch.float64)
    r, phi = math.exp(-dt / tau_mem), 2 * math.pi * frequency * dt
    amplitude = (1 - r) * pulse * r**t
    torch.testing.assert_close(traces["v"].flatten(), amplitude * torch.cos(phi * t))
    torch.testing.assert_close(traces["y"].flatten(), amplitude * torch.sin(phi * t))
    assert spikes.sum() == 0


def test_rf_prefers_input_at_its_resonance():
    """Pulse trains at the resonance period drive it higher than faster or slower ones."""
    neuron = RF(1, SuperSpike(), tau_mem=50e-3, frequency=25.0, threshold=100.0)  # 40 ms period
    peaks = {}
    for period in (10, 20, 40, 80, 160):
        x = torch.zeros(400, 1, 1)
        x[::period] = 1.0
        peaks[period] = neuron(x, return_traces=True)[1]["v"].max().item()
    assert max(peaks, key=peaks.get) == 40, peaks


def test_rf_fires_and_resets_on_its_real_part():
    neuron = RF(1, SuperSpike(), tau_mem=10e-3, frequency=10.0, threshold=0.5, reset="zero")
    spikes, traces = neuron(constant(2.0, 30), return_traces=True)
    fired = spikes.flatten().bool()
    assert 0 < fired.sum() < 30
    assert torch.all(traces["v"].flatten()[fired] == 0)  # reset to v_reset = 0 where it fired


def test_rf_config_trains_its_frequency():
    net = SpikingNetwork(8, 3, [5], RF, SuperSpike(), trainable=["weights", "frequency"])
    x = (torch.rand(30, 4, 8, generator=torch.Generator().manual_seed(0)) < 0.3).double()
    net(x).logits.sum().backward()
    grad = net.layers[0].neuron.frequency_raw.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"frequency": 500.0, "frequency_bounds": (1.0, 600.0)}, "frequency_bounds.*Nyquist"),
     ({"frequency": 300.0}, "frequency=300"), ({"frequency_bounds": (0.0, 100.0)}, "frequency")],
)  # fmt: skip
def test_rf_rejects_frequencies_it_cannot_sample(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RF(2, SuperSpike(), **kwargs)


def test_detach_reset_changes_gradient_only_when_reset_acts():
    def grad(reset, detach):
        torch.manual_seed(0)
        x = (torch.rand(50, 2, 4) * 3).requires_grad_(True)
        LIF(4, SuperSpike(), reset=reset, detach_reset=detach)(x).sum().backward()
        return x.grad

    torch.testing.assert_close(grad("none", True), grad("none", False))
    assert not torch.allclose(grad("subtract", True), grad("subtract", False))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reset": "soft"}, "reset='soft': expected one of"),
        ({"tau_mem": -1.0}, "tau_mem=-1.0: expected a finite number > 0"),
        ({"tau_mem": 0.9}, r"tau_mem_bounds=\(0.001, 0.5\): expected \[min, max\] around"),
        ({"tau_syn": 0.5e-3}, "tau_syn_bounds"),
        ({"tau_syn": 2e-3, "dt": 2e-3}, "dt=0.002: expected a step shorter than tau_syn"),
        ({"threshold": 0.0}, "threshold=0.0: expected a finite number > 0"),
        ({"dt": float("nan")}, "dt=nan: expected"),
        ({"trainable": ["tau_adapt"]}, r"trainable=\['tau_adapt'\]: expected parameters of"),
        ({"trainable": ["v_reset"], "reset": "subtract"}, "reset='subtract': expected 'zero'"),
    ],
)
def test_bad_parameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIF(4, SuperSpike(), **kwargs)
