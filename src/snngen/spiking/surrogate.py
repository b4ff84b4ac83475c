"""Surrogate gradients for the Heaviside spike function.

Every surrogate is a Heaviside step in the forward pass, ``H(x) = 1[x >= 0]`` (``1[x > 0]``
when called with ``strict=True``, snnTorch's convention) applied to ``x = membrane -
threshold``, and in the backward pass the derivative of a documented smooth function
``smooth(x)``. ``grad(x)`` must equal ``d smooth / dx`` (tested with gradcheck).

Names and default parameters follow spikingjelly / snnTorch so users feel at home.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Surrogate:
    """Base class: Heaviside forward, ``grad`` backward. Subclasses set ``name``."""

    name = "base"

    def grad(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Return d smooth(x) / dx, same shape as ``x``."""
        raise NotImplementedError

    def smooth(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Return the smooth function whose derivative is ``grad`` (for tests and plots)."""
        raise NotImplementedError

    def grad_(self, x: Tensor, scale: float = 1.0) -> Tensor:
        """Overwrite ``x`` with ``scale * grad(x)`` using in-place ops; returns ``x``.

        The fused kernel calls this on a scratch buffer once per time step, so subclasses
        override it with the fewest in-place passes they can (folding ``scale`` into their
        constants); it must agree with ``grad`` to rounding (tested). Surrogates whose
        reciprocal is cheaper also define ``inv_grad_(x, scale)`` (``1 / (scale * grad)``), which
        the kernel divides by instead of multiplying.
        """
        return x.copy_(self.grad(x)).mul_(scale)

    def __call__(self, x: Tensor, strict: bool = False) -> Tensor:
        """Spike ``H(x)`` (``x >= 0``; ``x > 0`` when ``strict``) with this surrogate's gradient;
        returns a tensor shaped like ``x``."""
        return _Heaviside.apply(x, self, strict)


@dataclass(frozen=True)
class ATan(Surrogate):
    """``smooth = atan(pi/2 * alpha * x) / pi + 1/2``; grad ``alpha/2 / (1 + (pi/2 alpha x)^2)``."""

    alpha: float = 2.0
    name = "atan"

    def grad(self, x: Tensor) -> Tensor:
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x) ** 2)

    def smooth(self, x: Tensor) -> Tensor:
        return torch.atan(math.pi / 2 * self.alpha * x) / math.pi + 0.5

    def grad_(self, x: Tensor, scale: float = 1.0) -> Tensor:
        if scale == 0.0:
            return x.zero_()
        return self.inv_grad_(x, scale).reciprocal_()

    def inv_grad_(self, x: Tensor, scale: float = 1.0) -> Tensor:
        """Overwrite ``x`` with ``1 / (scale * grad(x))`` (one pass; ``scale != 0``)."""
        # scale * (alpha/2) / (1 + (c x)^2) = 1 / (q + q c^2 x^2) with q = 2 / (alpha scale)
        c, q = math.pi / 2 * self.alpha, 2.0 / (self.alpha * scale)
        return _axpb_(x, q * c * c, q, square=True)


@dataclass(frozen=True)
class Sigmoid(Surrogate):
    """``smooth = sigmoid(alpha * x)``; grad ``alpha * s * (1 - s)``."""

    alpha: float = 4.0
    name = "sigmoid"

    def grad(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.alpha * x)
        return self.alpha * s * (1 - s)

    def smooth(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.alpha * x)

    def grad_(self, x: Tensor, scale: float = 1.0) -> Tensor:
        s = x.mul_(self.alpha).sigmoid_()
        return s.addcmul_(s, s, value=-1.0).mul_(self.alpha * scale)  # alpha (s - s^2)


@dataclass(frozen=True)
class Rectangular(Surrogate):
    """Rectangular window of width ``width`` (Zheng et al. 2021, STBP-tdBN).

    ``grad = 1[|x + offset| < width/2] / width``;
    ``smooth = clamp((x + offset)/width + 1/2, 0, 1)``.
    ``offset=0`` centres the window on the threshold. FSVAE's original code centres it on the
    membrane ``u`` itself (window ``|u| < 0.5``): pass ``offset = v_threshold`` to reproduce that.
    """

    width: float = 1.0
    offset: float = 0.0
    name = "rectangular"

    def grad(self, x: Tensor) -> Tensor:
        return ((x + self.offset).abs() < self.width / 2).to(x.dtype) / self.width

    def smooth(self, x: Tensor) -> Tensor:
        return torch.clamp((x + self.offset) / self.width + 0.5, 0.0, 1.0)

    def grad_(self, x: Tensor, scale: float = 1.0) -> Tensor:
        if self.offset:
            x.add_(self.offset)
        return torch.lt(x.abs_(), self.width / 2, out=x).mul_(scale / self.width)


@dataclass(frozen=True)
class Triangle(Surrogate):
    """Triangle of half-width ``width``: ``grad = max(0, 1 - |x|/width) / width``.

    ``smooth`` is the piecewise quadratic whose derivative that is (0 below ``-width``, 1 above).
    """

    width: float = 1.0
    name = "triangle"

    def grad(self, x: Tensor) -> Tensor:
        return torch.clamp(1 - x.abs() / self.width, min=0.0) / self.width

    def smooth(self, x: Tensor) -> Tensor:
        w = self.width
        xc = torch.clamp(x, -w, w)
        left = (xc + w) ** 2 / (2 * w * w)
        right = 1 - (w - xc) ** 2 / (2 * w * w)
        return torch.where(xc < 0, left, right)

    def grad_(self, x: Tensor, scale: float = 1.0) -> Tensor:
        w = self.width
        # scale (1 - |x|/w) / w = scale/w - (scale/w^2) |x|
        g = _axpb_(x.abs_(), -scale / (w * w), scale / w)
        return g.clamp_(min=0.0) if scale >= 0 else g.clamp_(max=0.0)


@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """snnTorch's fast sigmoid (Zenke & Ganguli): ``grad = 1 / (slope |x| + 1)^2``.

    ``smooth = x / (1 + slope |x|)`` (unnormalised, exactly as snnTorch's gradient).
    """

    slope: float = 25.0
    name = "fast_sigmoid"

    def grad(self, x: Tensor) -> Tensor:
        return 1.0 / (self.slope * x.abs() + 1.0) ** 2

    def smooth(self, x: Tensor) -> Tensor:
        return x / (1.0 + self.slope * x.abs())

    def grad_(self, x: Tensor, scale: float = 1.0) -> Tensor:
        if scale == 0.0:
            return x.zero_()
        return self.inv_grad_(x, scale).reciprocal_()

    def inv_grad_(self, x: Tensor, scale: float = 1.0) -> Tensor:
        """Overwrite ``x`` with ``1 / (scale * grad(x)) = (slope |x| + 1)^2 / scale``."""
        g = x.abs_().mul_(self.slope).add_(1.0).square_()
        return g if scale == 1.0 else g.div_(scale)


def _axpb_(
    x: Tensor, a: float, b: float, square: bool = False, one_pass: bool | None = None
) -> Tensor:
    """Overwrite ``x`` with ``a x + b`` (``a x^2 + b`` when ``square``); returns ``x``.

    ``one_pass`` (default: on CPU) uses ``b`` as a 0-dim tensor operand of one op; otherwise
    in-place passes with Python scalars (no host-to-device copy of a constant per call).
    """
    if x.is_cpu if one_pass is None else one_pass:
        b_t = torch.tensor(b, dtype=x.dtype)
        if square:
            return torch.addcmul(b_t, x, x, value=a, out=x)
        return torch.add(b_t, x, alpha=a, out=x)
    if square:
        x.square_()
    return x.mul_(a).add_(b)


class _Heaviside(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, surrogate: Surrogate, strict: bool = False
    ) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0 if strict else x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.grad(x), None, None


SURROGATES: dict[str, type[Surrogate]] = {
    "atan": ATan,
    "sigmoid": Sigmoid,
    "rectangular": Rectangular,
    "triangle": Triangle,
    "fast_sigmoid": FastSigmoid,
}


def get_surrogate(spec: str | Surrogate | dict) -> Surrogate:
    """Return a surrogate from a name (``"atan"``), a dict (``{"name": "atan", "alpha": 2}``)
    or an instance. Raises ``ValueError`` naming the bad value and the known names."""
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, dict):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
    else:
        name, kwargs = spec, {}
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; expected one of {sorted(SURROGATES)}")
    return SURROGATES[name](**kwargs)
