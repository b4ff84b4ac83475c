"""Multi-step spiking neurons: ``[T, B, ...]`` in, ``[T, B, ...]`` spikes out.

Every call starts from the resting state and runs the whole sequence: there is no hidden state
to reset between batches. Argument names follow spikingjelly / snnTorch (``tau``, ``beta``,
``v_threshold``, ``v_reset``, ``surrogate``, ``detach_reset``, ``decay_input``).
``strict_threshold=True`` fires only above the threshold (snnTorch's ``mem > threshold``)
instead of at it (spikingjelly's ``v >= v_threshold``, the default).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from snngen.spiking import kernels
from snngen.spiking.kernels import NeuronSpec
from snngen.spiking.surrogate import Surrogate, get_surrogate

BACKENDS = ("fused", "reference")


class MultiStepNeuron(nn.Module):
    """Base class: holds a :class:`NeuronSpec`, dispatches to a kernel backend.

    ``forward(x)`` returns spikes ``[T, ...]``, or ``(spikes, membrane)`` when
    ``return_membrane=True`` (membrane = charge before reset, same shape).
    ``backend``: ``"fused"`` (default; hand-written BPTT) or ``"reference"`` (plain autograd).
    ``compile``: for the fused backend, ``"auto"`` / ``"cpp"`` / ``"triton"`` / ``True`` /
    ``False``, or ``None`` (default) to follow the ``SNNGEN_COMPILE`` environment variable (see
    :mod:`snngen.spiking.kernels`; ``auto`` runs the C++ kernel on CPU when it is built, else
    the eager loops, and the Triton kernels on CUDA when Triton imports).
    """

    def __init__(
        self,
        *,
        form: str,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate: str | Surrogate | dict = "atan",
        detach_reset: bool = False,
        decay_input: bool = True,
        strict_threshold: bool = False,
        return_membrane: bool = False,
        backend: str = "fused",
        compile: bool | str | None = None,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        if isinstance(compile, str):
            kernels.parse_compile(compile)  # raises ValueError on a bad value
        if not v_threshold > 0:
            raise ValueError(f"v_threshold must be > 0, got {v_threshold}")
        self.spec = NeuronSpec(
            form=form,
            v_threshold=float(v_threshold),
            v_reset=None if v_reset is None else float(v_reset),
            detach_reset=bool(detach_reset),
            decay_input=bool(decay_input),
            surrogate=get_surrogate(surrogate),
            strict_threshold=bool(strict_threshold),
        )
        self.return_membrane = return_membrane
        self.backend = backend
        self.compile = compile

    def decay(self) -> Tensor | float:
        """The per-step decay coefficient the kernel uses (see :mod:`snngen.spiking.kernels`)."""
        return 1.0

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """``x`` [T, B, ...] -> spikes [T, B, ...] (``(spikes, membrane)`` if
        ``return_membrane``). Raises ``ValueError`` for a tensor that is not ``[T, B, ...]``
        floating point with T >= 1."""
        kernels.check_multistep_input(x)
        if self.backend == "fused":
            spikes, mem = kernels.lif_fused(x, self.decay(), self.spec, compile=self.compile)
        else:
            spikes, mem = kernels.lif_reference(x, self.decay(), self.spec)
        return (spikes, mem) if self.return_membrane else spikes

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"form={s.form}, v_threshold={s.v_threshold}, v_reset={s.v_reset}, "
            f"surrogate={s.surrogate}, detach_reset={s.detach_reset}, backend={self.backend}"
            + (", strict_threshold=True" if s.strict_threshold else "")
        )


class LIF(MultiStepNeuron):
    """Leaky integrate-and-fire neuron.

    Forms (see :mod:`snngen.spiking.kernels` for the exact equations):
    ``"spikingjelly"`` (default; uses ``tau`` and ``decay_input``),
    ``"snntorch"`` (``mem = beta mem + x``, reset applied on the next step),
    ``"fsvae"`` (``u = beta u (1 - o) + x``; FSVAE uses beta = 0.25, v_threshold = 0.2).
    Passing ``beta`` without ``form`` selects the snntorch form.
    """

    def __init__(
        self,
        tau: float = 2.0,
        *,
        beta: float | None = None,
        form: str | None = None,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate: str | Surrogate | dict = "atan",
        detach_reset: bool = False,
        decay_input: bool = True,
        strict_threshold: bool = False,
        return_membrane: bool = False,
        backend: str = "fused",
        compile: bool | str | None = None,
    ) -> None:
        if form is None:
            form = "snntorch" if beta is not None else "spikingjelly"
        if form in ("snntorch", "fsvae"):
            if beta is None:
                raise ValueError(f"LIF form {form!r} needs beta (the decay factor), got None")
            if not 0.0 <= beta <= 1.0:
                raise ValueError(f"beta must be in [0, 1], got {beta}")
        elif form == "spikingjelly":
            if not tau >= 1.0:
                raise ValueError(f"tau must be >= 1, got {tau}")
        else:
            raise ValueError(f"LIF form must be spikingjelly, snntorch or fsvae, got {form!r}")
        super().__init__(
            form=form,
            v_threshold=v_threshold,
            v_reset=v_reset,
            surrogate=surrogate,
            detach_reset=detach_reset,
            decay_input=decay_input,
            strict_threshold=strict_threshold,
            return_membrane=return_membrane,
            backend=backend,
            compile=compile,
        )
        self.tau = float(tau)
        self.beta = None if beta is None else float(beta)

    def decay(self) -> float:
        return 1.0 / self.tau if self.spec.form == "spikingjelly" else float(self.beta)


class IF(MultiStepNeuron):
    """Integrate-and-fire neuron: ``h = v + x``; hard (``v_reset``) or soft (``None``) reset."""

    def __init__(self, **kwargs) -> None:
        super().__init__(form="if", **kwargs)


class ParametricLIF(MultiStepNeuron):
    """LIF with a learnable time constant (Fang et al. 2021, spikingjelly's ParametricLIFNode).

    ``1/tau = sigmoid(w)``, ``w`` initialised to ``-log(init_tau - 1)``; spikingjelly form.
    """

    def __init__(self, init_tau: float = 2.0, **kwargs) -> None:
        if not init_tau > 1.0:
            raise ValueError(f"init_tau must be > 1, got {init_tau}")
        super().__init__(form="spikingjelly", **kwargs)
        self.w = nn.Parameter(torch.tensor(-math.log(init_tau - 1.0)))

    def decay(self) -> Tensor:
        return self.w.sigmoid()

    @property
    def tau(self) -> float:
        return float(1.0 / self.w.detach().sigmoid())
