"""Key map of the snnTorch SAE tutorial (``SAE`` of ``docs/tutorials/tutorial_sae.rst``).

The tutorial's ``SAE.state_dict()`` holds three ``nn.Sequential``\\ s; with ``L`` conv levels
(the tutorial has 3) they map onto :class:`~snngen.models.sae.SpikingAutoencoder` as::

    encoder.{i}          (conv 3l, BatchNorm 3l+1; l < L)  -> encoder.{i}
    encoder.{3L+1}       (Linear to the latent)             -> to_latent.0
    linearNet.0          (Linear from the latent)           -> from_latent.0
    decoder.{k}, k >= 2  (ConvTranspose / BatchNorm)        -> decoder.{k-2}

(the tutorial's ``decoder.0`` is ``nn.Unflatten`` and ``decoder.1`` the ``Leaky`` that snngen
calls ``bottom_lif``). Every snnTorch ``Leaky`` also stores ``beta``, ``threshold``,
``graded_spikes_factor`` and ``reset_mechanism_val`` buffers; snngen keeps these in its config,
so they are checked against it (beta, threshold 1 / the read-out's 20000, subtract reset, spike
factor 1) and dropped. ``latent_rate`` (the sampling statistics snngen adds) has no original:
the model's current value is kept.
"""

from __future__ import annotations

from torch import Tensor

from snngen.importers import ImportMismatch
from snngen.models.base import GenerativeModel

#: the tutorial saves no checkpoint; these are the usual wrappers of a ``net.state_dict()``
WEIGHT_KEYS: tuple[str, ...] = ("model_state_dict", "state_dict", "net")

NEURON_BUFFERS = ("beta", "threshold", "graded_spikes_factor", "reset_mechanism_val")


def _target(key: str, levels: int) -> str | None:
    """snngen's key of the tutorial's weight ``key`` (None when it has no place)."""
    module, _, rest = key.partition(".")
    index, _, leaf = rest.partition(".")
    if not index.isdigit() or not leaf:
        return None
    i = int(index)
    if module == "encoder":
        if i < 3 * levels:
            return key
        return f"to_latent.0.{leaf}" if i == 3 * levels + 1 else None
    if module == "linearNet":
        return f"from_latent.0.{leaf}" if i == 0 else None
    if module == "decoder" and i >= 2:
        return f"decoder.{i - 2}.{leaf}"
    return None


def original_key(key: str, model: GenerativeModel) -> str:
    """The tutorial's name of snngen's key ``key`` (the inverse of :func:`_target`, for
    messages about a weight the original file lacks); other keys are returned unchanged."""
    module, _, rest = key.partition(".")
    index, _, leaf = rest.partition(".")
    if not index.isdigit() or not leaf:
        return key
    if module == "to_latent" and index == "0":
        return f"encoder.{3 * len(model.cfg.channels) + 1}.{leaf}"
    if module == "from_latent" and index == "0":
        return f"linearNet.0.{leaf}"
    if module == "decoder":
        return f"decoder.{int(index) + 2}.{leaf}"
    return key


def _check_neuron(key: str, value: Tensor, model: GenerativeModel, levels: int) -> None:
    """Raise :class:`ImportMismatch` when a ``Leaky`` buffer disagrees with the config."""
    cfg = model.cfg
    name = key.rsplit(".", 1)[1]
    readout = key.startswith(f"decoder.{3 * levels}.")
    expected = {
        "beta": cfg.beta,
        "threshold": cfg.output_threshold if readout else cfg.v_threshold,
        "graded_spikes_factor": 1.0,
        "reset_mechanism_val": 0.0,  # snnTorch's "subtract"
    }[name]
    if value.numel() != 1 or abs(float(value) - expected) > 1e-6 * max(1.0, abs(expected)):
        shown = float(value) if value.numel() == 1 else tuple(value.shape)
        raise ImportMismatch(
            f"checkpoint: neuron {key!r} is {shown}, the config's model has {expected}"
        )


def convert(original: dict[str, Tensor], model: GenerativeModel) -> dict[str, Tensor]:
    """Map the tutorial's ``SAE.state_dict()`` onto ``model``'s keys (shapes unchanged)."""
    levels = len(model.cfg.channels)
    out: dict[str, Tensor] = {}
    for key, value in original.items():
        if key.rsplit(".", 1)[-1] in NEURON_BUFFERS:
            _check_neuron(key, value, model, levels)
            continue
        out[_target(key, levels) or key] = value
    own = model.state_dict()
    out.setdefault("latent_rate", own["latent_rate"].clone())
    return out
