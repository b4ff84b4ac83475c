"""FSVAE's additions and multiplications, counted as the original code counts them.

The FSVAE paper's cost comparison comes from ``CountMulAddSNN`` (the original's ``utils.py``),
hooked on every ``Conv3d``, ``Linear``, ``ConvTranspose3d`` and ``LIFSpike`` during an eval-mode
forward of the test set (``main_fsvae.test``: encoder, posterior, prior, decoder). Per call, with
``in``/``out`` the layer's input/output and sums taken over the spikes:

======================  =====================================================  ==================
layer                   additions                                              multiplications
======================  =====================================================  ==================
first conv (real in)    ``mul + numel(in)``                                    ``numel(in) k^2
                                                                               C_out / s^2``
conv (spikes in)        ``sum(in) k^2 C_out / s^2 + numel(out)``               0
transposed conv         ``sum(in) k^2 C_out s^2 + numel(out)``                 0
linear                  ``sum(in) out_features + numel(out)``                  0
LIF neuron              ``numel(in)`` (one add per update)                     ``numel(out) -
                                                                               sum(out)`` (leak)
======================  =====================================================  ==================

(transposed-conv additions are multiplied by ``s^2``, conv ones divided; the first conv's bias
term uses its input size - all as the original.) Only the small FSVAE marks its first conv as
real-valued (``is_first_conv``); ``FSVAELarge`` (5 levels, CelebA) does not, so there the image
is counted as if it were spikes: ``sum(in)`` of values in [-1, 1].

What runs is counted as the original runs it: the posterior re-runs its three layers on every
prefix ``x_<=t`` for t < T-1 and then once on all T steps, so step t of each posterior layer is
counted ``T - t`` times (``T (T + 1) / 2`` = 136 step-passes at T = 16, instead of 16); the prior
runs once over T steps (teacher forcing, eval). snngen's eval mode computes the same outputs in
O(T) (:class:`~snngen.models.fsvae.AutoregressiveBernoulli`), so the count re-weights the steps
rather than re-running them. Counts are exact (float64); the original accumulates them in a
float32 tensor (relative rounding ~1e-7 at paper scale) and logs the sum per test batch
(``add_sum / len(testloader)``: per 250 images for its configs); :func:`count_original` returns
them per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from snngen.errors import SnngenError
from snngen.models.base import GenerativeModel
from snngen.models.fsvae import FSVAE
from snngen.spiking.neurons import MultiStepNeuron

__all__ = ["PAPER_BATCH", "PAPER_FIGURES", "PAPER_SOURCE", "OriginalCount", "count_original",
           "count_report", "layer_counts"]

#: the authors' published cost figures, (additions, multiplications), MNIST only. Source: the
#: first author's article on the paper (repository kamata1729/kamata1729.github.io, post
#: "fully-spiking-variational-autoencoder", section on computational cost, table image
#: assets/blog_images/computational_cost.png). Its caption says "one image", but both originals
#: log ``CountMulAdd* / len(testloader)``, i.e. per test batch of 250: the ANN VAE's 7.4e9 is
#: exactly 250 x the 2.96e7 its counter gives for one 32x32 image. Shown per image as /250.
PAPER_FIGURES: dict[str, tuple[float, float]] = {
    "MNIST, FSVAE": (5.0e10, 5.6e8),
    "MNIST, ANN VAE": (7.4e9, 7.4e9),
}
#: images per test batch in the original's logged counts
PAPER_BATCH = 250
PAPER_SOURCE = ("the authors' article (kamata1729.github.io, 'Fully Spiking Variational "
                "Autoencoder', computational cost table), logged per test batch of 250")

#: the original's 5-level model (``FSVAELarge``) does not flag its first conv as real-valued
_LARGE_LEVELS = 5


@dataclass
class OriginalCount:
    """Per-image additions and multiplications of one eval forward, counted as the original."""

    additions: float
    multiplications: float
    images: int
    parts: dict[str, tuple[float, float]] = field(default_factory=dict)  # part -> (adds, mults)


def layer_counts(module: nn.Module, x: Tensor, y: Tensor, real_input: bool = False
                 ) -> tuple[Tensor, Tensor]:
    """``(additions [T], multiplications [T])`` of one call of ``module`` on ``x`` [T, B, ...]
    giving ``y``, per time step, as ``CountMulAddSNN`` counts them (see the module doc)."""
    steps = x.shape[0]
    xs, ys = x.reshape(steps, -1).double(), y.reshape(steps, -1).double()
    n_in, n_out = float(xs.shape[1]), float(ys.shape[1])
    zeros = xs.new_zeros(steps)
    if isinstance(module, MultiStepNeuron):
        return xs.new_full((steps,), n_in), n_out - ys.sum(1)
    if isinstance(module, nn.Linear):
        return xs.sum(1) * module.out_features + n_out, zeros
    if isinstance(module, nn.modules.conv._ConvNd):
        fan = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        stride = module.stride[0] * module.stride[1]
        if module.transposed:
            return xs.sum(1) * (fan * stride) + n_out, zeros
        if real_input:
            mults = xs.new_full((steps,), n_in * fan / stride)
            return mults + n_in, mults
        return xs.sum(1) * fan / stride + n_out, zeros
    raise TypeError(f"no original count for {type(module).__name__}")


def _counted(module: nn.Module) -> bool:
    return isinstance(module, (MultiStepNeuron, nn.Linear, nn.modules.conv._ConvNd))


class _Tally:
    """Forward hooks adding each counted call's per-step counts, weighted per step."""

    def __init__(self, first_conv: nn.Module | None) -> None:
        self.first_conv = first_conv
        self.weights: Tensor | None = None  # [T] multiplicity of each step (None: all 1)
        self.adds = self.mults = 0.0

    def __call__(self, module: nn.Module, args: tuple, out: Tensor) -> None:
        adds, mults = layer_counts(module, args[0], out, real_input=module is self.first_conv)
        if self.weights is not None:
            adds, mults = adds * self.weights, mults * self.weights
        self.adds += adds.sum().item()
        self.mults += mults.sum().item()

    def take(self) -> tuple[float, float]:
        got = (self.adds, self.mults)
        self.adds = self.mults = 0.0
        return got


@torch.no_grad()
def count_original(model: FSVAE, x: Tensor, *, generator: torch.Generator | None = None
                   ) -> OriginalCount:
    """Count one eval-mode forward of ``model`` on images ``x`` ``[B, C, H, W]`` in [0, 1] as
    the original's ``CountMulAddSNN`` does; per image. Parts: ``encoder`` (convs and the linear
    to the latent), ``posterior``, ``prior``, ``decoder``. The posterior's random picks come
    from ``generator`` (the global generator when None). Leaves ``model`` in eval mode."""
    if model.cfg.neuron != "lif":
        raise ValueError("the original's count is defined for the spiking FSVAE (neuron: lif)")
    model.eval()
    first = None if len(model.cfg.channels) >= _LARGE_LEVELS else model.encoder[0]
    tally = _Tally(first)
    parts: dict[str, tuple[float, float]] = {}

    def hooked(*modules: nn.Module) -> list:
        return [m.register_forward_hook(tally) for mod in modules for m in mod.modules()
                if _counted(m)]

    handles = hooked(model.encoder, model.to_latent)
    latent = model.encode(x)
    parts["encoder"] = tally.take()
    for h in handles:
        h.remove()
    z, _ = model.posterior_net.posterior(latent, generator)
    z_in = torch.cat([torch.zeros_like(z[:1]), z[:-1]])
    steps = z.shape[0]
    tally.weights = torch.arange(steps, 0, -1, dtype=torch.float64, device=x.device)  # T - t
    handles = hooked(model.posterior_net)
    model.posterior_net(torch.cat([latent, z_in], -1))  # = the stepped outputs in eval mode
    parts["posterior"] = tally.take()
    tally.weights = None
    for h in handles:
        h.remove()
    for name, modules in (("prior", (model.prior_net,)),
                          ("decoder", (model.from_latent, model.decoder))):
        handles = hooked(*modules)
        if name == "prior":
            model.prior_net.prior(z)
        else:
            model.decode(z)
        parts[name] = tally.take()
        for h in handles:
            h.remove()
    n = x.shape[0]
    parts = {k: (a / n, m / n) for k, (a, m) in parts.items()}
    return OriginalCount(
        additions=sum(a for a, _ in parts.values()),
        multiplications=sum(m for _, m in parts.values()),
        images=n,
        parts=parts,
    )


def count_report(model: GenerativeModel, x: Tensor) -> tuple[dict, str]:
    """``snngen info RUN --count original``: the count of :func:`count_original` on ``x`` (the
    posterior's picks seeded with 0) as a JSON-able dict and a printable table, next to the
    paper's figures where known. Raises :class:`SnngenError` for a model that is not a spiking
    FSVAE."""
    if not isinstance(model, FSVAE) or model.cfg.neuron != "lif":
        raise SnngenError(
            f"--count original: counts FSVAE (neuron: lif) runs as the original code does; "
            f"this run holds a {model.name} model"
            + ("" if not isinstance(model, FSVAE) else " with ReLU neurons")
        )
    got = count_original(model, x, generator=torch.Generator().manual_seed(0))
    lines = [
        f"additions and multiplications per image, counted as the original's CountMulAddSNN "
        f"(eval forward of {got.images} test images; T={model.cfg.num_steps}):",
        f"  {'part':<10}{'additions':>16}{'multiplications':>18}",
    ]
    for part, (adds, mults) in got.parts.items():
        lines.append(f"  {part:<10}{adds:>16,.0f}{mults:>18,.0f}")
    lines.append(f"  {'total':<10}{got.additions:>16,.0f}{got.multiplications:>18,.0f}")
    lines.append(f"  paper figures ({PAPER_SOURCE}), per image = logged / {PAPER_BATCH}:")
    for name, (adds, mults) in PAPER_FIGURES.items():
        lines.append(f"  {name:<16}{adds / PAPER_BATCH:>16,.0f}{mults / PAPER_BATCH:>18,.0f}"
                     f"   (logged {adds:.2g} / {mults:.2g})")
    data = {"additions": got.additions, "multiplications": got.multiplications,
            "images": got.images, "parts": {k: list(v) for k, v in got.parts.items()},
            "paper_per_image": {k: [a / PAPER_BATCH, m / PAPER_BATCH]
                                for k, (a, m) in PAPER_FIGURES.items()},
            "paper_source": PAPER_SOURCE}
    return data, "\n".join(lines)
