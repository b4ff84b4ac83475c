"""The FSVAE paper's autoencoder Frechet distance (AE-FD), with a small in-package ANN autoencoder.

FSVAE (Kamata et al. 2022) reports, besides FID, the Frechet distance between generated and test
images in the latent space of a separately trained ANN autoencoder. :class:`AutoencoderNet`
follows that autoencoder's layout: stride-2 3x3 convolutions with BatchNorm and LeakyReLU
(32, 64, 128, 256 channels for 32x32 inputs, one more level of 512 for 64x64) down to 2x2, a
linear layer to the latent (64-d for 1-channel data, 128-d for 3-channel), a mirrored decoder
ending in tanh; images scaled to [-1, 1]; trained with MSE. Its encoder is the feature network
(``features="autoencoder"``); :func:`ae_frechet_distance` computes the distance with any encoder.

:func:`train_autoencoder` trains it once per dataset and caches it as
``<cache>/autoencoders/<dataset>_<size>.pt``, like the classifier. Numbers are comparable
between snngen runs; they are not the paper's (its weights were trained on the full datasets).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snngen.metrics.cache import (
    cached_file,
    fit_network,
    load_cached,
    train_cached,
)
from snngen.metrics.features import FeatureNet, Features, MetricsError, extract_features
from snngen.metrics.result import MetricResult
from snngen.metrics.scores import GaussianStats, fid

CACHE_KIND = "autoencoders"


def autoencoder_path(dataset: str, image_size: int = 32, cache: str | Path | None = None) -> Path:
    """Return where the autoencoder of ``dataset`` at ``image_size`` is cached."""
    return cached_file(CACHE_KIND, dataset, image_size, cache)


def default_latent_dim(channels: int) -> int:
    """The FSVAE paper's AE latent size: 64 for 1-channel data, 128 for colour."""
    return 64 if channels == 1 else 128


def _block(c_in: int, c_out: int, transpose: bool) -> nn.Sequential:
    conv = (
        nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1)
        if transpose
        else nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
    )
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.LeakyReLU())


class AutoencoderNet(FeatureNet):
    """ANN autoencoder; ``forward(x)`` gives latents ``[B, latent_dim]`` of images
    ``[B, C, H, W]`` in [0, 1] (converted to ``in_channels`` and resized to ``image_size``).

    ``image_size``: a power of two >= 4; the encoder halves it down to 2x2 with channels
    32, 64, ... ``decode(z)`` returns images ``[B, in_channels, S, S]`` in [-1, 1].
    """

    def __init__(
        self,
        in_channels: int = 1,
        latent_dim: int | None = None,
        image_size: int = 32,
        name: str = "autoencoder",
    ) -> None:
        super().__init__()
        levels = int(math.log2(image_size)) - 1
        if image_size < 4 or 2 ** (levels + 1) != image_size:
            raise MetricsError(
                f"AutoencoderNet image_size must be a power of 2 >= 4, got {image_size}"
            )
        latent_dim = latent_dim or default_latent_dim(in_channels)
        self.in_channels, self.image_size, self.name = in_channels, image_size, name
        self.latent_dim = self.num_features = latent_dim
        dims = [32 * 2**i for i in range(levels)]
        self.top = dims[-1]
        self.encoder = nn.Sequential(
            *(_block(a, b, False) for a, b in zip([in_channels, *dims[:-1]], dims, strict=True)),
            nn.Flatten(),
        )
        self.to_latent = nn.Linear(self.top * 4, latent_dim)
        self.from_latent = nn.Linear(latent_dim, self.top * 4)
        rev = dims[::-1]
        self.decoder = nn.Sequential(
            *(_block(c_in, c_out, True) for c_in, c_out in zip(rev[:-1], rev[1:], strict=True)),
            _block(dims[0], dims[0], True),
            nn.Conv2d(dims[0], in_channels, 3, padding=1),
            nn.Tanh(),
        )

    def config(self) -> dict:
        """The constructor arguments (stored with the weights)."""
        return {
            "in_channels": self.in_channels,
            "latent_dim": self.latent_dim,
            "image_size": self.image_size,
            "name": self.name,
        }

    def prepare(self, x: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] -> the network's channels and size, in [-1, 1]."""
        if x.dim() != 4:
            raise MetricsError(f"{self.name} expects images [B, C, H, W], got {list(x.shape)}")
        x = x.float()
        if x.shape[1] != self.in_channels:
            x = x.mean(1, keepdim=True) if self.in_channels == 1 else x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True)
        return x * 2 - 1

    def encode(self, x: Tensor) -> Tensor:
        """Latents ``[B, latent_dim]`` of images in [0, 1]."""
        return self.to_latent(self.encoder(self.prepare(x)))

    def decode(self, z: Tensor) -> Tensor:
        """Images ``[B, in_channels, S, S]`` in [-1, 1] of latents ``[B, latent_dim]``."""
        return self.decoder(self.from_latent(z).view(-1, self.top, 2, 2))

    def forward(self, x: Tensor) -> Tensor:
        """Latents ``[B, latent_dim]`` (the features)."""
        return self.encode(x)


def _mse(net: AutoencoderNet, x: Tensor) -> Tensor:
    return F.mse_loss(net.decode(net.encode(x)), x * 2 - 1)


@torch.inference_mode()
def heldout_mse(net: AutoencoderNet, images: Tensor, batch_size: int = 500) -> float:
    """Mean squared reconstruction error of ``images`` ``[N, C, H, W]`` on the [-1, 1] scale."""
    was_training = net.training
    net.eval()
    total = 0.0
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        total += _mse(net, chunk).item() * chunk.shape[0]
    net.train(was_training)
    return total / max(1, images.shape[0])


def fit_autoencoder(
    images: Tensor,
    *,
    latent_dim: int | None = None,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    name: str = "autoencoder",
    progress: bool = True,
) -> AutoencoderNet:
    """Train an :class:`AutoencoderNet` on ``images`` ``[N, C, S, S]`` in [0, 1] with MSE
    (AdamW, one-cycle schedule, seeded). Returns it in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = AutoencoderNet(images.shape[1], latent_dim, images.shape[-1], name)
    fit_network(
        net,
        (images,),
        _mse,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
        desc=f"training {name}",
    )
    return net


def train_autoencoder(
    dataset: str,
    root: str | Path | None = None,
    *,
    image_size: int = 32,
    latent_dim: int | None = None,
    epochs: int = 6,
    seed: int = 0,
    cache: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> tuple[Path, float]:
    """Train the autoencoder of ``dataset`` once and cache it; returns ``(path, test MSE)``
    (the MSE on the [-1, 1] scale, as the paper's AE trains). A cached file is reused unless
    ``force``."""

    def fit(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor):
        net = fit_autoencoder(
            x_train,
            latent_dim=latent_dim,
            epochs=epochs,
            seed=seed,
            name=f"autoencoder:{dataset}",
            progress=progress,
        )
        return net, heldout_mse(net, x_test)

    return train_cached(
        autoencoder_path(dataset, image_size, cache),
        fit,
        score_key="test_mse",
        dataset=dataset,
        root=root,
        image_size=image_size,
        seed=seed,
        epochs=epochs,
        force=force,
    )


def load_autoencoder(
    dataset: str,
    *,
    root: str | Path | None = None,
    image_size: int = 32,
    cache: str | Path | None = None,
    train_if_missing: bool = True,
) -> AutoencoderNet:
    """Return the cached autoencoder of ``dataset`` (eval mode), training it first if missing
    and ``train_if_missing`` (else :class:`FileNotFoundError`)."""
    return load_cached(
        autoencoder_path(dataset, image_size, cache),
        AutoencoderNet,
        "test_mse",
        lambda: train_autoencoder(dataset, root, image_size=image_size, cache=cache),
        what=f"{dataset} autoencoder",
        train_if_missing=train_if_missing,
    )


def ae_frechet_distance(
    fake: Tensor | Features,
    real: Tensor | Features | GaussianStats,
    encoder: nn.Module,
    *,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> MetricResult:
    """The FSVAE paper's autoencoder Frechet distance of ``fake`` against ``real``.

    ``fake`` / ``real``: images ``[N, C, H, W]`` in [0, 1] (or their precomputed latents as
    :class:`Features`; ``real`` may be :class:`GaussianStats` of the test set). ``encoder``:
    any module mapping images to latents ``[B, D]`` (an :class:`AutoencoderNet`, or a model's
    own encoder). Returns a :class:`MetricResult` named ``"ae_fd"``.
    """
    f_fake = extract_features(fake, encoder, batch_size=batch_size, progress=progress, desc="fake")
    if not isinstance(real, GaussianStats):
        real = extract_features(
            real, encoder, batch_size=batch_size, progress=progress, desc="real"
        )
    result = fid(f_fake, real)
    result.name = "ae_fd"
    return result
