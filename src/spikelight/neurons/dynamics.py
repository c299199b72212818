"""The one definition of a neuron's time step, which every time loop runs.

IF, LIF, ALIF, adLIF and resonate-and-fire neurons all update a small per-neuron state ``s``
(``k <= 4`` rows of ``[B, N]``: current, membrane, adaptation, ...) linearly between spikes. A
neuron describes its step by per-neuron coefficients built from its constrained parameters in
PyTorch (:meth:`Neuron.dynamics <spikelight.neurons.base.Neuron.dynamics>`), and one step is::

    p = A s + B x + c                 every row, from the previous state (pre-spike update)
    theta = threshold + p[adaptive]   (adaptive: a row of p added to the threshold, or none)
    z = H(p[m] - theta)               m: the membrane row
    q = p, with row m reset:  p[m] - r theta | p[m] - r (p[m] - v_reset) | p[m]
                              (subtract | zero | none), then max(., 0) where ``rectify``
    s' = q, with the rows of E, D replaced by  E q + D z   (post-spike update)

``r`` is ``z`` with its gradient cut when ``detach_reset``; ``H``'s derivative is the surrogate's.
Which entries of ``A, B, c, E, D`` exist is the static :class:`Form`; their values are the
:class:`Dynamics`. :func:`step` is the arithmetic in PyTorch: the neurons' ``step`` (the
autograd loop) and the fused layer's PyTorch loops both call it, and the C loops
(``fused_native.c``) repeat it operation for operation, so all paths give the same spikes.
Gradients reach tau_mem, thresholds, adaptation parameters ... through the coefficients by
autograd, whichever loop runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from spikelight.surrogates import Surrogate

MAX_STATES = 4  # rows of the state; fused_native.c's MAX_STATES says the same (checked on load)


@dataclass(frozen=True)
class Form:
    """Which coefficients a neuron's step has, and how it spikes and resets."""

    states: tuple[str, ...]  # names of the state rows
    membrane: int  # the row compared with the threshold and reset
    pre: tuple[tuple[int, int], ...]  # entries (row, column) of A
    inputs: tuple[int, ...]  # rows with a B coefficient
    constants: tuple[int, ...] = ()  # rows with a c coefficient
    post: tuple[tuple[int, int], ...] = ()  # entries of E
    post_spike: tuple[int, ...] = ()  # rows with a D coefficient
    initial: tuple[int, ...] = ()  # rows that start away from zero
    adaptive: int | None = None  # the row of p added to the threshold
    reset: str = "subtract"
    detach_reset: bool = True
    rectify: bool = False
    surrogate: Surrogate | None = None

    def __post_init__(self):
        k = len(self.states)
        rows = [self.membrane, *self.inputs, *self.constants, *self.post_spike, *self.initial]
        entries = [*self.pre, *self.post]
        if self.adaptive is not None:
            rows.append(self.adaptive)
        if not 0 < k <= MAX_STATES or any(not 0 <= r < k for r in [*rows, *sum(entries, ())]):
            raise ValueError(f"a neuron form with rows outside 0..{k - 1} or more than "
                             f"{MAX_STATES} states: {self}")  # fmt: skip
        if self.adaptive == self.membrane:
            raise ValueError("the adaptive threshold row must not be the membrane row")

    @property
    def post_rows(self) -> tuple[int, ...]:
        """Rows that the post-spike update replaces; the others keep ``q``."""
        return tuple(sorted({j for j, _ in self.post} | set(self.post_spike)))

    @property
    def slots(self) -> tuple[tuple[str, object], ...]:
        """``(group, key)`` of every coefficient, in the order the kernels take them."""
        return (
            *(("pre", e) for e in self.pre),
            *(("inputs", j) for j in self.inputs),
            *(("constants", j) for j in self.constants),
            *(("post", e) for e in self.post),
            *(("post_spike", j) for j in self.post_spike),
            ("threshold", None),
            *((("v_reset", None),) if self.reset == "zero" else ()),
            *(("initial", j) for j in self.initial),
        )


@dataclass(frozen=True)
class Dynamics:
    """A :class:`Form` with its per-neuron coefficients (``[N]`` tensors)."""

    form: Form
    pre: dict  # (row, column) -> A entry
    inputs: dict  # row -> B entry
    threshold: torch.Tensor
    constants: dict = dataclasses.field(default_factory=dict)
    post: dict = dataclasses.field(default_factory=dict)
    post_spike: dict = dataclasses.field(default_factory=dict)
    v_reset: torch.Tensor | None = None
    initial: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def build(cls, size: int, like: torch.Tensor, **parts) -> Dynamics:
        """Dynamics with ``Form`` fields and coefficient dicts from ``parts``; numbers and
        scalars become ``[size]`` tensors like ``like``."""

        def vector(value):
            value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
            return value.expand(size) if value.dim() == 0 else value

        groups = {}
        for name in ("pre", "inputs", "constants", "post", "post_spike", "initial"):
            groups[name] = {key: vector(v) for key, v in parts.pop(name, {}).items()}
        threshold = vector(parts.pop("threshold"))
        v_reset = parts.pop("v_reset", None)
        if parts.get("reset") != "zero":
            v_reset = None
        form = Form(**parts, **{name: tuple(g) for name, g in groups.items()})
        v_reset = None if v_reset is None else vector(v_reset)
        return cls(form, threshold=threshold, v_reset=v_reset, **groups)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The coefficients in ``form.slots`` order."""
        return tuple(
            getattr(self, group) if key is None else getattr(self, group)[key]
            for group, key in self.form.slots
        )

    @classmethod
    def of(cls, form: Form, tensors) -> Dynamics:
        """The inverse of :meth:`tensors`."""
        parts = {"pre": {}, "inputs": {}, "constants": {}, "post": {}, "post_spike": {},
                 "initial": {}}  # fmt: skip
        for (group, key), value in zip(form.slots, tensors, strict=True):
            if key is None:
                parts[group] = value
            else:
                parts[group][key] = value
        return cls(form, **parts)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Dynamics:
        return Dynamics.of(self.form, [fn(t) for t in self.tensors()])

    def initial_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        zeros = like.new_zeros(batch, self.threshold.shape[0])
        return tuple(
            self.initial[j].to(like.dtype).expand(batch, -1) if j in self.initial else zeros
            for j in range(len(self.form.states))
        )


def pre_update(d: Dynamics, s, x) -> list:
    """``p = A s + B x + c``, row by row: ``B x``, then ``+ c``, then ``+ A[j, l] s[l]`` in the
    order the entries are listed, each operation rounded on its own (the C loops do the same)."""
    p = []
    for j in range(len(d.form.states)):
        acc = x * d.inputs[j] if j in d.inputs else None
        if j in d.constants:
            acc = d.constants[j].expand_as(x) if acc is None else acc + d.constants[j]
        for (row, col), a in d.pre.items():
            if row == j:
                acc = a * s[col] if acc is None else acc + a * s[col]
        p.append(torch.zeros_like(x) if acc is None else acc)
    return p


def theta_of(d: Dynamics, p):
    """The threshold the membrane is compared with."""
    return d.threshold if d.form.adaptive is None else d.threshold + p[d.form.adaptive]


def reset(d: Dynamics, u, z, theta):
    """The membrane after the reset: ``Neuron``'s reset modes, then rectification."""
    if d.form.reset == "subtract":
        u = u - z * theta
    elif d.form.reset == "zero":
        u = u - z * (u - d.v_reset)
    return F.relu(u) if d.form.rectify else u


def post_update(d: Dynamics, q, z) -> tuple:
    """``s' = q`` with the post rows replaced by ``E q + D z`` (E's terms in the order listed,
    then ``D z``)."""
    out = list(q)
    for j in d.form.post_rows:
        acc = None
        for (row, col), e in d.post.items():
            if row == j:
                acc = e * q[col] if acc is None else acc + e * q[col]
        if j in d.post_spike:
            acc = d.post_spike[j] * z if acc is None else acc + d.post_spike[j] * z
        out[j] = acc
    return tuple(out)


def step(d: Dynamics, x, s, spike: Callable | torch.Tensor | None = None):
    """One step from state ``s`` (a tuple of ``[B, N]`` rows) with input ``x [B, N]``:
    ``(z, p, s')``. The spikes are the surrogate's (which autograd differentiates), or
    ``spike(u, theta)``, or the given tensor ``spike`` (a recomputation)."""
    m = d.form.membrane
    p = pre_update(d, s, x)
    theta = theta_of(d, p)
    if spike is None:
        z = d.form.surrogate(p[m] - theta)
    else:
        z = spike if torch.is_tensor(spike) else spike(p[m], theta)
    r = z.detach() if d.form.detach_reset and spike is None else z
    q = list(p)
    q[m] = reset(d, p[m], r, theta)
    return z, p, post_update(d, q, z)
