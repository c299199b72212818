"""Parameterisations of trained neuron parameters: closed forms, round trips, gradients.

Every expected value is computed here with plain ``math`` on Python floats.
"""

from __future__ import annotations

import math

import pytest
import torch

from spikelight.constraints import Identity, Interval, LogInterval, Positive

RAW = [-12.0, -5.0, -1.5, -0.2, 0.0, 0.3, 1.0, 4.0, 12.0]


def sigmoid(r):
    return 1 / (1 + math.exp(-r))


def softplus(r):
    return max(r, 0.0) + math.log1p(math.exp(-abs(r)))


def f64(values):
    return torch.tensor(values, dtype=torch.float64)


# -- LogInterval: tau = lo * (hi / lo) ** sigmoid(raw) ------------------------------------------
LO, HI = 2e-3, 0.2


def test_log_interval_closed_form():
    tau = LogInterval(LO, HI)(f64(RAW))
    expected = [LO * (HI / LO) ** sigmoid(r) for r in RAW]
    torch.testing.assert_close(tau, f64(expected), rtol=1e-12, atol=0)
    assert LogInterval(LO, HI)(f64([0.0])).item() == pytest.approx(math.sqrt(LO * HI))


def test_log_interval_stays_inside_the_bounds_for_any_raw_value():
    c = LogInterval(LO, HI)
    for dtype in (torch.float32, torch.float64):
        tau = c(torch.tensor([-1e4, -100.0, -40.0, 40.0, 100.0, 1e4], dtype=dtype))
        assert torch.isfinite(tau).all()
        assert (tau >= LO).all() and (tau <= HI).all(), (dtype, tau)


def test_log_interval_round_trips():
    c = LogInterval(LO, HI)
    values = f64([LO * (HI / LO) ** (i / 20) for i in range(1, 20)])  # strictly inside
    torch.testing.assert_close(c(c.to_raw(values)), values, rtol=1e-12, atol=0)
    raw = f64(RAW[1:-1])  # where the sigmoid has not saturated in float64
    torch.testing.assert_close(c.to_raw(c(raw)), raw, rtol=1e-9, atol=1e-9)
    # equal spacing in log-time is equal spacing in sigmoid(raw)
    fractions = torch.sigmoid(c.to_raw(values))
    torch.testing.assert_close(fractions, f64([i / 20 for i in range(1, 20)]), rtol=1e-12, atol=0)


def test_log_interval_values_on_a_bound_map_to_finite_raw_values_just_inside():
    c = LogInterval(LO, HI)
    raw = c.to_raw(f64([LO, HI]))
    assert torch.isfinite(raw).all()
    assert raw.tolist() == pytest.approx([math.log(1e-6 / (1 - 1e-6)), math.log((1 - 1e-6) / 1e-6)])
    torch.testing.assert_close(c(raw), f64([LO, HI]), rtol=1e-5, atol=0)


def test_log_interval_gradient_is_the_closed_form_inside_the_bounds():
    """d tau / d raw = tau * ln(hi / lo) * s * (1 - s), s = sigmoid(raw): finite and > 0."""
    c = LogInterval(LO, HI)
    values = f64([LO * (HI / LO) ** (i / 20) for i in range(1, 20)])
    raw = c.to_raw(values).requires_grad_(True)
    (grad,) = torch.autograd.grad(c(raw).sum(), raw)
    expected = []
    for v, r in zip(values.tolist(), raw.detach().tolist(), strict=True):
        s = sigmoid(r)
        expected.append(v * math.log(HI / LO) * s * (1 - s))
    torch.testing.assert_close(grad, f64(expected), rtol=1e-10, atol=0)
    assert torch.isfinite(grad).all() and (grad > 0).all()
    # relative step: d ln(tau) / d raw is the same for 2 ms and 200 ms at the same sigmoid slope
    rel = grad / values
    assert rel[0].item() == pytest.approx(rel[-1].item(), rel=1e-10)  # symmetric fractions


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0), (1.0, float("inf"))])
def test_log_interval_rejects_bad_bounds(bounds):
    with pytest.raises(ValueError, match="bounds"):
        LogInterval(*bounds)


def test_log_interval_rejects_values_outside_the_bounds():
    with pytest.raises(ValueError, match="outside bounds"):
        LogInterval(LO, HI).to_raw(f64([LO / 2, 0.01]))
    with pytest.raises(ValueError, match="outside bounds"):
        LogInterval(LO, HI).to_raw(f64([0.01, HI * 1.01]))


# -- Positive: value = floor + softplus(raw) ------------------------------------------------
def test_positive_closed_form():
    c = Positive()
    assert c.floor == 1e-6
    value = c(f64(RAW))
    torch.testing.assert_close(value, f64([1e-6 + softplus(r) for r in RAW]), rtol=1e-12, atol=0)
    assert Positive(0.5)(f64([0.0])).item() == pytest.approx(0.5 + math.log(2))


def test_positive_stays_above_its_floor_where_softplus_underflows():
    for dtype in (torch.float32, torch.float64):
        value = Positive(1e-6)(torch.tensor([-1e4, -200.0, -50.0], dtype=dtype))
        assert (value >= torch.tensor(1e-6, dtype=dtype)).all() and (value > 0).all()


def test_positive_round_trips_from_just_above_the_floor_to_large_values():
    c = Positive()
    values = f64([1e-6 + 1e-9, 1e-5, 1e-3, 0.1, 1.0, 3.0, 50.0, 1e3, 1e6])
    raw = c.to_raw(values)
    assert torch.isfinite(raw).all()
    torch.testing.assert_close(c(raw), values, rtol=1e-9, atol=0)
    # the inverse softplus, written out: raw = log(exp(v - floor) - 1)
    for v, r in zip(values.tolist()[1:7], raw.tolist()[1:7], strict=True):
        assert r == pytest.approx(math.log(math.expm1(v - 1e-6)), rel=1e-9, abs=1e-12)
    torch.testing.assert_close(c.to_raw(c(f64(RAW[1:]))), f64(RAW[1:]), rtol=1e-9, atol=1e-9)


def test_positive_gradient_is_the_sigmoid():
    c = Positive()
    raw = f64(RAW).requires_grad_(True)
    (grad,) = torch.autograd.grad(c(raw).sum(), raw)
    torch.testing.assert_close(grad, f64([sigmoid(r) for r in RAW]), rtol=1e-12, atol=0)
    assert torch.isfinite(grad).all() and (grad > 0).all()


def test_positive_rejects_values_at_or_below_the_floor():
    with pytest.raises(ValueError, match="must be > 1e-06"):
        Positive().to_raw(f64([1.0, 1e-6]))
    with pytest.raises(ValueError, match="must be > 0.5"):
        Positive(0.5).to_raw(f64([0.4]))


# -- Interval and Identity ----------------------------------------------------------------
def test_interval_closed_form_round_trip_and_gradient():
    c = Interval(-1.0, 3.0)
    raw = f64(RAW).requires_grad_(True)
    value = c(raw)
    torch.testing.assert_close(
        value.detach(), f64([-1 + 4 * sigmoid(r) for r in RAW]), rtol=1e-12, atol=1e-15
    )
    (grad,) = torch.autograd.grad(value.sum(), raw)
    torch.testing.assert_close(
        grad, f64([4 * sigmoid(r) * (1 - sigmoid(r)) for r in RAW]), rtol=1e-10, atol=1e-15
    )
    inside = f64([-0.99, -0.5, 0.0, 1.0, 2.9])
    torch.testing.assert_close(c(c.to_raw(inside)), inside, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="outside bounds"):
        c.to_raw(f64([3.5]))


def test_identity_passes_values_through_and_copies_on_the_way_in():
    c = Identity()
    value = f64([-2.0, 0.0, 5.0])
    raw = c.to_raw(value)
    assert torch.equal(raw, value) and raw.data_ptr() != value.data_ptr()
    assert c(raw) is raw
