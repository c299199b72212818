"""Time-constant initialisers: each distribution's mean, spread and shape, and the clamping of
draws onto the neuron's bounds, checked on large samples against closed forms.

Tolerances come from the sample size: means to 5 standard errors, fractions to 5 binomial
standard errors, and the whole distribution by the Dvoretzky-Kiefer-Wolfowitz bound
``P(sup |F_n - F| > eps) <= 2 exp(-2 n eps^2)`` at a failure probability of 1e-6.
"""

from __future__ import annotations

import math

import hydra
import pytest
import torch

from spikelight.init import Gamma, Homogeneous, LogNormal, Uniform
from spikelight.neurons import LIF
from spikelight.surrogates import SuperSpike
from tests.conftest import compose_config

N = 20_000
MEAN = 10e-3
DKW_EPS = math.sqrt(math.log(2 / 1e-6) / (2 * N))  # 0.019 at N = 20000


def gamma_cdf(k, mean):
    return lambda x: torch.special.gammainc(torch.tensor(k, dtype=x.dtype), x * k / mean)


def gamma_partial_mean(k, mean, a, b):
    """``int_a^b x f(x) dx`` of Gamma(k, scale mean/k): ``mean * (P(k+1, b/s) - P(k+1, a/s))``."""
    p = gamma_cdf(k + 1, mean * (k + 1) / k)  # P(k+1, x k / mean)
    a, b = (torch.tensor(v, dtype=torch.float64) for v in (a, b))
    return mean * (p(b) - p(a)).item()


def lognormal_mu(sigma, mean):
    return math.log(mean) - sigma**2 / 2


def normal_cdf(z):
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def lognormal_cdf(sigma, mean):
    mu = lognormal_mu(sigma, mean)
    return lambda x: normal_cdf((x.log() - mu) / sigma)


def lognormal_partial_mean(sigma, mean, a, b):
    """``int_a^b x f(x) dx`` = ``mean * (Phi((ln b - mu - s^2)/s) - Phi((ln a - mu - s^2)/s))``."""
    mu = lognormal_mu(sigma, mean)
    z = torch.tensor([math.log(a), math.log(b)], dtype=torch.float64)
    phi = normal_cdf((z - mu - sigma**2) / sigma)
    return mean * (phi[1] - phi[0]).item()


def uniform_cdf(spread, mean):
    lo, hi = mean * (1 - spread), mean * (1 + spread)
    return lambda x: ((x - lo) / (hi - lo)).clamp(0, 1)


def uniform_partial_mean(spread, mean, a, b):
    lo, hi = mean * (1 - spread), mean * (1 + spread)
    a, b = max(a, lo), min(b, hi)
    return (b * b - a * a) / (2 * (hi - lo)) if b > a else 0.0


# init, its CDF, standard deviation and excess kurtosis, and int_a^b x f(x) dx; mean MEAN
CASES = {
    "gamma_k3": (
        Gamma(3.0),
        gamma_cdf(3.0, MEAN),
        MEAN / math.sqrt(3),
        6 / 3,
        lambda a, b: gamma_partial_mean(3.0, MEAN, a, b),
    ),
    "lognormal": (
        LogNormal(0.5),
        lognormal_cdf(0.5, MEAN),
        MEAN * math.sqrt(math.exp(0.25) - 1),
        math.exp(1.0) + 2 * math.exp(0.75) + 3 * math.exp(0.5) - 6,
        lambda a, b: lognormal_partial_mean(0.5, MEAN, a, b),
    ),
    "uniform": (
        Uniform(0.5),
        uniform_cdf(0.5, MEAN),
        MEAN * 0.5 / math.sqrt(3),
        -1.2,
        lambda a, b: uniform_partial_mean(0.5, MEAN, a, b),
    ),
}


def std_error_of_std(std, excess_kurtosis, n=N):
    """Standard error of a sample standard deviation (large n)."""
    return std * math.sqrt((excess_kurtosis + 2) / (4 * n))


def ks_distance(sample, cdf):
    """``sup_x |F_n(x) - F(x)|`` of a sample without atoms (at its sorted points, both sides)."""
    x = sample.double().sort().values
    f = cdf(x)
    n = len(x)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - f
    lower = f - torch.arange(0, n, dtype=torch.float64) / n
    return max(upper.max().item(), lower.max().item())


@pytest.mark.parametrize("name", list(CASES))
def test_draws_have_the_configured_mean_spread_and_distribution(name):
    init, cdf, std, kurtosis, _ = CASES[name]
    torch.manual_seed(0)
    sample = init(MEAN, N)
    assert sample.shape == (N,) and sample.dtype == torch.get_default_dtype()
    sample = sample.double()
    assert (sample > 0).all()
    se = std / math.sqrt(N)
    assert abs(sample.mean().item() - MEAN) < 5 * se, (sample.mean().item(), MEAN, se)
    assert abs(sample.std().item() - std) < 5 * std_error_of_std(std, kurtosis)
    assert ks_distance(sample, cdf) < DKW_EPS
    # and not some other distribution with the same mean: the gamma with k = 1 is far away
    assert ks_distance(sample, gamma_cdf(1.0, MEAN)) > 3 * DKW_EPS


def test_uniform_draws_stay_inside_the_spread():
    torch.manual_seed(0)
    sample = Uniform(0.3)(MEAN, N).double()
    assert sample.min() >= MEAN * 0.7 and sample.max() <= MEAN * 1.3
    assert ks_distance(sample, uniform_cdf(0.3, MEAN)) < DKW_EPS


def test_gamma_shape_sets_the_spread():
    """Gamma(k): standard deviation mean / sqrt(k); k = 3 by default (Perez-Nieves et al.)."""
    assert Gamma().shape == 3.0
    torch.manual_seed(0)
    for k in (1.0, 3.0, 10.0):
        sample = Gamma(k)(MEAN, N).double()
        std = MEAN / math.sqrt(k)
        assert abs(sample.std().item() - std) < 5 * std_error_of_std(std, 6 / k)
        assert ks_distance(sample, gamma_cdf(k, MEAN)) < DKW_EPS


def test_homogeneous_gives_exactly_the_value():
    values = Homogeneous()(MEAN, 7)
    assert values.dtype == torch.get_default_dtype()
    assert torch.equal(values, torch.full((7,), MEAN, dtype=values.dtype))


BOUNDS = (6e-3, 14e-3)  # cut both tails of every distribution above


@pytest.mark.parametrize("name", list(CASES))
def test_draws_outside_the_bounds_are_moved_onto_the_nearest_bound(name):
    """The neuron's stored time constants: draws below ``lo`` (probability F(lo)) sit on lo,
    those above ``hi`` (1 - F(hi)) on hi, the rest keep their distribution; the mean is that of
    the clamped distribution, in closed form."""
    init, cdf, _, _, partial_mean = CASES[name]
    lo, hi = BOUNDS
    torch.manual_seed(0)
    neuron = LIF(N, SuperSpike(), tau_mem=MEAN, tau_mem_bounds=BOUNDS, tau_init=init)
    tau = neuron.get("tau_mem").double()
    # bound values are stored just inside (LogInterval keeps raw values finite)
    assert tau.min() >= lo and tau.max() <= hi
    at_lo, at_hi = tau <= lo * (1 + 1e-5), tau >= hi * (1 - 1e-5)
    p_lo = cdf(torch.tensor(lo, dtype=torch.float64)).item()
    p_hi = 1 - cdf(torch.tensor(hi, dtype=torch.float64)).item()
    assert min(p_lo, p_hi) > 0.01  # both bounds cut something
    for observed, p in ((at_lo, p_lo), (at_hi, p_hi)):
        assert abs(observed.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / N)
    # inside: the empirical CDF follows F (a grid of points strictly between the bounds)
    grid = torch.linspace(lo * 1.001, hi * 0.999, 200, dtype=torch.float64)
    empirical = (tau[None, :] <= grid[:, None]).double().mean(1)
    assert (empirical - cdf(grid)).abs().max().item() < DKW_EPS
    # the mean of clamp(X, lo, hi) (its standard deviation is below (hi - lo) / 2)
    expected = lo * p_lo + hi * p_hi + partial_mean(lo, hi)
    se = (hi - lo) / 2 / math.sqrt(N)
    assert abs(tau.mean().item() - expected) < 5 * se
    if name != "uniform":  # skewed: clamping moves the mean, by more than this test resolves
        assert abs(expected - MEAN) > 10 * se


@pytest.mark.parametrize(
    "option, cls, setting",
    [
        ("homogeneous", Homogeneous, {}),
        ("heterogeneous", Gamma, {"shape": 3.0}),
        ("lognormal", LogNormal, {"sigma": 0.5}),
        ("uniform", Uniform, {"spread": 0.5}),
    ],
)
def test_init_options_build_those_initialisers(option, cls, setting):
    init = hydra.utils.instantiate(compose_config([f"init={option}"]).init)
    assert type(init) is cls
    assert {k: getattr(init, k) for k in setting} == setting


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Gamma(0.0), "shape=0.0: expected a finite number > 0"),
        (lambda: LogNormal(-1.0), "sigma=-1.0: expected a finite number > 0"),
        (lambda: Uniform(1.0), r"spread=1.0: expected a number in \(0, 1\)"),
        (lambda: Uniform(0.0), r"spread=0.0: expected a number in \(0, 1\)"),
        (lambda: Gamma()(float("nan"), 3), "mean=nan: expected a finite number > 0"),
        (lambda: Uniform()(-1e-3, 3), "mean=-0.001: expected a finite number > 0"),
    ],
)
def test_bad_settings_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()
