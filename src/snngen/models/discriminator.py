"""The adversarial and perceptual parts of the VQ-GAN style loss of the spiking VQ-VAE.

* :class:`PatchDiscriminator`: pix2pix's N-layer PatchGAN (4x4 convs, LeakyReLU 0.2, BatchNorm,
  ``ndf`` 64, 3 layers), initialised with N(0, 0.02) convs and N(1, 0.02) BatchNorm scales; it is
  an ordinary (non-spiking) network, as in the original.
* :func:`hinge_d_loss` / :func:`vanilla_d_loss`: the discriminator losses; the generator loss is
  ``-mean(D(fake))``.
* :func:`adaptive_disc_weight`: taming's balance ``|grad nll| / (|grad g| + 1e-4)`` at the
  decoder's last layer, clamped to [0, 1e4], times ``disc_weight``, detached.
* :class:`LPIPS`: the VGG16 perceptual distance, built only from weight files on disk (nothing
  is downloaded); :func:`load_lpips` gives a clear error when the files are missing.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snngen.errors import SnngenError

__all__ = [
    "LPIPS",
    "LPIPSWeightsMissing",
    "PatchDiscriminator",
    "adaptive_disc_weight",
    "disc_factor",
    "hinge_d_loss",
    "load_lpips",
    "vanilla_d_loss",
]


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: images ``[B, C, H, W]`` -> logits ``[B, 1, H', W']``.

    Layers: conv(C, ndf, 4, s2) + LeakyReLU; for n = 1..n_layers-1 conv(s2) + BatchNorm + LeakyReLU
    with ``min(2^n, 8) * ndf`` channels; one more conv(s1) + BatchNorm + LeakyReLU; a last
    conv(s1) to one channel. All kernels 4x4, padding 1; convs before BatchNorm have no bias.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """Return patch logits ``[B, 1, H', W']`` of images ``[B, C, H, W]``."""
        return self.main(x)

    @staticmethod
    def output_size(size: int, n_layers: int) -> int:
        """Side of the logit map for ``size x size`` inputs (< 1: the input is too small)."""
        for _ in range(n_layers):  # 4x4 convs of stride 2, padding 1
            size = (size - 2) // 2 + 1 if size >= 2 else 0
        return size - 2 if size >= 3 else 0  # two 4x4 convs of stride 1, padding 1


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """``0.5 * (mean(relu(1 - D(real))) + mean(relu(1 + D(fake))))``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """``0.5 * (mean(softplus(-D(real))) + mean(softplus(D(fake))))``."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


D_LOSSES = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}


def disc_factor(step: int, disc_start: int, factor: float = 1.0) -> float:
    """``factor`` once ``step >= disc_start``, else 0 (taming's ``adopt_weight``)."""
    return factor if step >= disc_start else 0.0


def adaptive_disc_weight(
    nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, disc_weight: float
) -> Tensor:
    """Return ``disc_weight * clamp(|d nll/d W| / (|d g/d W| + 1e-4), 0, 1e4)``, detached.

    ``W`` is ``last_layer`` (the decoder's output conv weight). Both losses must still have
    their graphs (they are kept: ``retain_graph=True``).
    """
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
    return torch.clamp(weight, 0.0, 1e4).detach() * disc_weight


# ----------------------------------------------------------------------------- LPIPS


class LPIPSWeightsMissing(SnngenError):
    """A perceptual loss was asked for but its weight files are not on disk."""


# torchvision's vgg16.features indices: conv layers, and where LPIPS taps the ReLUs
_VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_CHANNELS = (64, 128, 256, 512, 512)


class LPIPS(nn.Module):
    """LPIPS (Zhang et al. 2018, v0.1, VGG16 backbone) between images in [-1, 1].

    ``features`` mirrors torchvision's ``vgg16().features`` (same indices, so its state dict loads
    with the ``features.`` prefix); ``lins`` are LPIPS's 1x1 linear heads. Inputs ``[B, C, H, W]``
    with C = 3, or C = 1 (repeated to RGB). Returns ``[B]``. The network is frozen.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers[: _TAPS[-1] + 1])
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Return the LPIPS distance ``[B]`` between ``x`` and ``y`` ``[B, C, H, W]`` in [-1, 1]."""
        fx, fy = self._taps(x), self._taps(y)
        total = x.new_zeros(x.shape[0])
        for lin, a, b in zip(self.lins, fx, fy, strict=True):
            d = (_unit(a) - _unit(b)) ** 2
            total = total + lin(d).mean(dim=(1, 2, 3))
        return total

    def _taps(self, x: Tensor) -> list[Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"LPIPS takes 1- or 3-channel images, got {x.shape[1]} channels")
        h = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                out.append(h)
        return out


def _unit(x: Tensor, eps: float = 1e-10) -> Tensor:
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + eps)


def load_lpips(vgg_path: str | None, lin_path: str | None) -> LPIPS:
    """Return an :class:`LPIPS` with weights from local files (nothing is downloaded).

    ``vgg_path``: a torchvision VGG16 state dict (e.g. ``vgg16-397923af.pth``; only its
    ``features.*`` keys are used); ``lin_path``: LPIPS's linear heads (``vgg.pth`` of the lpips
    package v0.1, keys ``lin{i}.model.1.weight``). Raises :class:`LPIPSWeightsMissing` naming
    what to place where when a path is unset or not a file.
    """
    for key, path in (("lpips_vgg_path", vgg_path), ("lpips_lin_path", lin_path)):
        if not path or not Path(path).is_file():
            raise LPIPSWeightsMissing(
                f"the perceptual (LPIPS) loss needs local weights, but model.{key} is "
                f"{'unset' if not path else repr(str(path)) + ' (no such file)'}; set "
                "model.lpips_vgg_path to a torchvision VGG16 state dict (vgg16-397923af.pth) and "
                "model.lpips_lin_path to LPIPS v0.1 'vgg.pth', or set model.perceptual_weight=0"
            )
    net = LPIPS()
    vgg = torch.load(vgg_path, map_location="cpu", weights_only=True)
    feats = {k[len("features.") :]: v for k, v in vgg.items() if k.startswith("features.")}
    feats = {k: v for k, v in feats.items() if int(k.split(".")[0]) <= _TAPS[-1]}
    net.features.load_state_dict(feats)
    lin = torch.load(lin_path, map_location="cpu", weights_only=True)
    for i, head in enumerate(net.lins):
        head.weight.data.copy_(lin[f"lin{i}.model.1.weight"])
    return net.eval()
