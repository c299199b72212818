"""Surrogates: exact Heaviside forward; backward equals the documented formula."""

import math

import pytest
import torch
from hydra.utils import instantiate

from spikelight import surrogates
from tests.conftest import compose_config


def sig(x):
    return 1 / (1 + torch.exp(-x))


# The documented derivatives, written out independently of the implementation.
FORMULAS = {
    "superspike": lambda x, b: 1 / (b * x.abs() + 1) ** 2,
    "fast_sigmoid": lambda x, b: 1 / (b * x.abs() + 1) ** 2,
    "logistic": lambda x, b: b * sig(b * x) * (1 - sig(b * x)),
    "sigmoid": lambda x, b: b * sig(b * x) * (1 - sig(b * x)),
    "atan": lambda x, b: (b / 2) / (1 + (math.pi / 2 * b * x) ** 2),
    "triangle": lambda x, b: b * torch.clamp(1 - b * x.abs(), min=0),
    "exponential": lambda x, b: (b / 2) * torch.exp(-b * x.abs()),
}
BETAS = [0.5, 1.0, 10.0, 100.0]


def make(name, beta, learn_beta=False):
    cfg = compose_config([f"surrogate={name}", f"surrogate.beta={beta}"])
    cfg.surrogate.learn_beta = learn_beta
    return instantiate(cfg.surrogate)


def grid(beta):
    # Points spanning the surrogate's width at this beta, avoiding the triangle's kinks.
    x = torch.linspace(-3, 3, 601, dtype=torch.float64) / beta
    return x[(x.abs() * beta - 1).abs() > 1e-3]


@pytest.mark.parametrize("name", FORMULAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_is_exact_heaviside(name, dtype):
    s = make(name, 10.0)
    x = torch.tensor([-2.0, -1e-30, 0.0, 1e-30, 0.5, 3.0], dtype=dtype)
    out = s(x)
    assert out.dtype == dtype
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", FORMULAS)
@pytest.mark.parametrize("beta", BETAS)
def test_backward_equals_formula(name, beta):
    s = make(name, beta)
    assert s.beta.item() == pytest.approx(beta)
    x = grid(beta).requires_grad_(True)
    s(x).sum().backward()
    torch.testing.assert_close(x.grad, FORMULAS[name](x.detach(), beta), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", FORMULAS)
@pytest.mark.parametrize("beta", BETAS)
def test_derivative_is_finite_difference_of_primitive(name, beta):
    s = make(name, beta)
    x, b, h = grid(beta), torch.tensor(float(beta), dtype=torch.float64), 1e-6 / beta
    numeric = (s.primitive(x + h, b) - s.primitive(x - h, b)) / (2 * h)
    torch.testing.assert_close(s.derivative(x, b), numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", FORMULAS)
def test_learnable_beta_gradient_is_derivative_of_primitive(name):
    s = make(name, 4.0, learn_beta=True)
    assert isinstance(s.log_beta, torch.nn.Parameter)
    x = grid(4.0).float()
    weight = torch.linspace(0.5, 1.5, len(x))
    (s(x) * weight).sum().backward()
    # d/d(log beta) = beta * d/d(beta) of sum(weight * primitive(x, beta))
    b, h = 4.0, 1e-3
    xd, wd = x.double(), weight.double()
    fd = [
        (wd * s.primitive(xd, torch.tensor(v, dtype=torch.float64))).sum() for v in (b + h, b - h)
    ]
    expected = b * (fd[0] - fd[1]) / (2 * h)
    assert s.log_beta.grad.item() == pytest.approx(expected.item(), rel=1e-3, abs=1e-6)


def test_aliases_are_the_same_function():
    assert surrogates.FastSigmoid is surrogates.SuperSpike
    assert surrogates.Sigmoid is surrogates.Logistic


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_beta_is_rejected(beta):
    with pytest.raises(ValueError, match=r"^beta=.*: expected a finite number > 0"):
        surrogates.SuperSpike(beta)


@pytest.mark.parametrize("name", FORMULAS)
def test_scale_multiplies_the_derivative_and_the_primitive(name):
    """``scale`` (SE-adLIF's SLAYER c) multiplies the backward; finite differences of the
    scaled primitive give the scaled derivative."""
    cfg = compose_config([f"surrogate={name}", "surrogate.beta=3.0", "surrogate.scale=0.4"])
    s = instantiate(cfg.surrogate)
    x = grid(3.0).requires_grad_(True)
    s(x).sum().backward()
    expected = 0.4 * FORMULAS[name](x.detach(), 3.0)
    torch.testing.assert_close(x.grad, expected, rtol=1e-10, atol=1e-12)
    b, h = torch.tensor(3.0, dtype=torch.float64), 1e-6 / 3.0
    xd = x.detach()
    numeric = (s.primitive(xd + h, b) - s.primitive(xd - h, b)) / (2 * h)
    torch.testing.assert_close(s.derivative(xd, b), numeric, rtol=1e-5, atol=1e-7)


def test_exponential_with_scale_is_slayer_of_se_adlif():
    """SE-adLIF's ``SLAYER(x, alpha, c) = c * alpha / (2 * exp(|x| * alpha))`` (their
    ``models/helpers.py``), alpha 5 and c 0.4 as in their SHD preset."""
    x = torch.linspace(-2, 2, 81, dtype=torch.float64).requires_grad_(True)
    surrogates.Exponential(beta=5.0, scale=0.4)(x).sum().backward()
    slayer = 0.4 * 5.0 / (2 * torch.exp(x.detach().abs() * 5.0))
    torch.testing.assert_close(x.grad, slayer, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("scale", [0.0, -0.4, float("nan"), float("inf"), "big"])
def test_bad_scale_is_rejected(scale):
    with pytest.raises(ValueError, match=r"^scale=.*: expected a finite number > 0"):
        surrogates.Exponential(scale=scale)


def test_scale_needs_the_spiking_forward():
    with pytest.raises(ValueError, match=r"^scale=0.4: expected 1 with smooth_forward=true"):
        surrogates.Logistic(scale=0.4, smooth_forward=True)
    assert surrogates.Logistic(smooth_forward=True).scale == 1.0
