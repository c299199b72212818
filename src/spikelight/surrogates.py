"""Surrogate spike functions: exact Heaviside forward, smooth derivative backward.

A spike is ``H(x)`` with ``x = v - threshold``; its true derivative is zero almost everywhere, so
training replaces it in the backward pass by the derivative of a smooth function with steepness
``beta`` (Neftci, Mostafa & Zenke 2019). Every surrogate here defines that derivative
(:meth:`Surrogate.derivative`) and a ``primitive`` whose derivative it is; the primitive gives
finite-difference checks and the gradient for a learnable ``beta``.

=============================  ==============================================  ============
name                           derivative  dH/dx  (backward)                    default beta
=============================  ==============================================  ============
superspike / fast_sigmoid      ``1 / (beta*|x| + 1)**2``  (Zenke & Ganguli 2018)    10
logistic / sigmoid             ``beta * s * (1 - s)``, ``s = sigmoid(beta*x)``      10
atan                           ``(beta/2) / (1 + (pi/2 * beta * x)**2)``            2
triangle                       ``beta * max(0, 1 - beta*|x|)``  (Esser et al.)      1
exponential (SLAYER)           ``(beta/2) * exp(-beta*|x|)``  (Shrestha & Orchard)  5
heaviside ("true gradient")    ``0`` (the step's derivative almost everywhere)      (unused)
=============================  ==============================================  ============

SuperSpike's peak is 1 whatever ``beta`` (as in SPyTorch); the others integrate to 1, so their
primitive is a smooth step from 0 to 1. ``scale`` (default 1) multiplies every derivative:
SE-adLIF's SLAYER ``c * alpha / (2 exp(alpha |x|))`` is ``exponential`` with ``beta = alpha``
and ``scale = c``.

Two switches serve the "why surrogate gradients" study (``docs/results.md``):

- :class:`Heaviside` backpropagates the true derivative of the step, zero almost everywhere, so
  no gradient reaches anything upstream of a spike: nothing before a spiking layer learns.
- ``smooth_forward=True`` replaces the step itself by the smooth step :meth:`Surrogate.smooth_step`
  (e.g. ``sigmoid(beta*x)``) in the forward pass, with its exact gradient in the backward pass. The
  network then no longer spikes (its "spikes" are values in (0, 1)); it is an ordinary smooth
  recurrent network. Code that relies on binary spikes (e.g. a fused time-loop kernel) must check
  the plain bool attribute ``surrogate.smooth_forward`` and fall back to the generic loop.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from spikelight import checks
from spikelight.checks import ArgumentError


class _SpikeFunction(torch.autograd.Function):
    """Heaviside forward; backward from the owning surrogate's analytic derivative."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(x, beta)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x, beta = ctx.saved_tensors
        surrogate = ctx.surrogate
        grad_x = grad_output * surrogate.derivative(x, beta) if ctx.needs_input_grad[0] else None
        grad_beta = None
        if ctx.needs_input_grad[1]:
            # d(output)/d(beta) taken from the primitive: the same smooth function whose
            # x-derivative is the surrogate.
            with torch.enable_grad():
                b = beta.detach().requires_grad_(True)
                smooth = surrogate.primitive(x.detach(), b)
                (grad_beta,) = torch.autograd.grad(smooth, b, grad_output)
        return grad_x, grad_beta, None


class Surrogate(nn.Module):
    """Base class. ``s(x)`` is ``(x > 0)`` in ``x``'s dtype; its gradient is ``derivative``.

    ``beta`` (steepness) is a fixed number, or a positive ``nn.Parameter`` (stored as its log)
    when ``learn_beta`` is true. ``scale`` multiplies the derivative (and the primitive), e.g.
    SLAYER's ``c`` in SE-adLIF (Baronig et al. 2024, ``c * alpha / (2 exp(alpha |x|))``).
    With ``smooth_forward`` the forward pass is :meth:`smooth_step` instead of the step (see the
    module docstring). Subclasses define the shape at scale 1: :meth:`unit_derivative` and
    :meth:`unit_primitive`.
    """

    def __init__(
        self,
        beta: float,
        learn_beta: bool = False,
        smooth_forward: bool = False,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self._fixed_beta = checks.positive("beta", beta)
        checks.boolean("learn_beta", learn_beta)
        checks.boolean("smooth_forward", smooth_forward)
        #: plain float: the factor on the derivative (1: the shape as tabulated above)
        self.scale = checks.positive("scale", scale)
        if smooth_forward and self.scale != 1.0:
            raise ArgumentError(
                "scale", scale, "1 with smooth_forward=true (the smooth step's gradient is used)"
            )
        self.log_beta = nn.Parameter(torch.tensor(math.log(beta))) if learn_beta else None
        #: plain bool: True when the forward pass is the smooth step, not a spike
        self.smooth_forward = smooth_forward

    @property
    def beta(self) -> torch.Tensor:
        if self.log_beta is None:
            return torch.tensor(self._fixed_beta, dtype=torch.float64)
        return self.log_beta.exp()

    @property
    def learn_beta(self) -> bool:
        return self.log_beta is not None

    def derivative(self, x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """The surrogate of dH/dx, used in the backward pass: ``scale * unit_derivative``."""
        d = self.unit_derivative(x, beta)
        return d if self.scale == 1.0 else d * self.scale

    def primitive(self, x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """A smooth function whose x-derivative is :meth:`derivative`."""
        f = self.unit_primitive(x, beta)
        return f if self.scale == 1.0 else f * self.scale

    def unit_derivative(self, x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """The derivative's shape at ``scale = 1`` (the table in the module docstring)."""
        raise NotImplementedError

    def unit_primitive(self, x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """A primitive of :meth:`unit_derivative`."""
        raise NotImplementedError

    def smooth_step(self, x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """The forward pass under ``smooth_forward``: a smooth step from 0 to 1.

        The unit primitive, where that is already such a step (every surrogate but SuperSpike).
        """
        return self.unit_primitive(x, beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta.to(device=x.device, dtype=x.dtype)
        if self.smooth_forward:
            return self.smooth_step(x, beta)  # plain autograd: the exact gradient of the step
        return _SpikeFunction.apply(x, beta, self)

    def extra_repr(self) -> str:
        text = f"beta={self.beta.item():.4g}, learn_beta={self.learn_beta}"
        text += f", scale={self.scale:g}" if self.scale != 1.0 else ""
        return text + (", smooth_forward=True" if self.smooth_forward else "")


class SuperSpike(Surrogate):
    """Fast sigmoid (SuperSpike): derivative ``1 / (beta*|x| + 1)**2``, peak 1."""

    def __init__(
        self,
        beta: float = 10.0,
        learn_beta: bool = False,
        smooth_forward: bool = False,
        scale: float = 1.0,
    ) -> None:
        super().__init__(beta, learn_beta, smooth_forward, scale)

    def unit_derivative(self, x, beta):
        return 1.0 / (beta * x.abs() + 1.0) ** 2

    def unit_primitive(self, x, beta):
        return x / (beta * x.abs() + 1.0)

    def smooth_step(self, x, beta):
        # The fast sigmoid scaled to a step from 0 to 1 (slope beta/2 at 0); the primitive
        # above only spans +-1/beta.
        return 0.5 + 0.5 * beta * self.unit_primitive(x, beta)


class Logistic(Surrogate):
    """Logistic (sigmoid): derivative ``beta * s * (1 - s)`` with ``s = sigmoid(beta*x)``."""

    def __init__(
        self,
        beta: float = 10.0,
        learn_beta: bool = False,
        smooth_forward: bool = False,
        scale: float = 1.0,
    ) -> None:
        super().__init__(beta, learn_beta, smooth_forward, scale)

    def unit_derivative(self, x, beta):
        s = torch.sigmoid(beta * x)
        return beta * s * (1.0 - s)

    def unit_primitive(self, x, beta):
        return torch.sigmoid(beta * x)


class ATan(Surrogate):
    """Arc-tangent (as snnTorch): derivative ``(beta/2) / (1 + (pi/2 * beta * x)**2)``."""

    def __init__(
        self,
        beta: float = 2.0,
        learn_beta: bool = False,
        smooth_forward: bool = False,
        scale: float = 1.0,
    ) -> None:
        super().__init__(beta, learn_beta, smooth_forward, scale)

    def unit_derivative(self, x, beta):
        return (beta / 2) / (1.0 + (math.pi / 2 * beta * x) ** 2)

    def unit_primitive(self, x, beta):
        return torch.atan(math.pi / 2 * beta * x) / math.pi + 0.5


class Triangle(Surrogate):
    """Triangle (piecewise linear): derivative ``beta * max(0, 1 - beta*|x|)``."""

    def __init__(
        self,
        beta: float = 1.0,
        learn_beta: bool = False,
        smooth_forward: bool = False,
        scale: float = 1.0,
    ) -> None:
        super().__init__(beta, learn_beta, smooth_forward, scale)

    def unit_derivative(self, x, beta):
        return beta * F.relu(1.0 - beta * x.abs())

    def unit_primitive(self, x, beta):
        u = (beta * x).clamp(-1.0, 1.0)
        return 0.5 + u - 0.5 * u * u.abs()


class Exponential(Surrogate):
    """Exponential (SLAYER's spike escape density): derivative ``(beta/2) * exp(-beta*|x|)``."""

    def __init__(
        self,
        beta: float = 5.0,
        learn_beta: bool = False,
        smooth_forward: bool = False,
        scale: float = 1.0,
    ) -> None:
        super().__init__(beta, learn_beta, smooth_forward, scale)

    def unit_derivative(self, x, beta):
        return (beta / 2) * torch.exp(-beta * x.abs())

    def unit_primitive(self, x, beta):
        return 0.5 + 0.5 * torch.sign(x) * (1.0 - torch.exp(-beta * x.abs()))


class Heaviside(Surrogate):
    """The true derivative of the step: zero almost everywhere (the "true gradient" baseline).

    The backward pass is exactly zero, so no loss gradient reaches a weight or neuron parameter
    through a spike. ``beta`` has no effect (it is kept so that every surrogate has one).
    """

    def __init__(
        self,
        beta: float = 1.0,
        learn_beta: bool = False,
        smooth_forward: bool = False,
        scale: float = 1.0,
    ) -> None:
        for name, value in (("learn_beta", learn_beta), ("smooth_forward", smooth_forward)):
            if value is not False:
                raise ArgumentError(
                    name, value, "false with the heaviside surrogate (no steepness, no smooth step)"
                )
        super().__init__(beta, learn_beta, smooth_forward, scale)

    def unit_derivative(self, x, beta):
        return torch.zeros_like(x)

    def unit_primitive(self, x, beta):
        return (x > 0).to(x.dtype)  # the step itself; its derivative is zero almost everywhere


# Names used in the literature for the same functions.
FastSigmoid = SuperSpike
Sigmoid = Logistic
