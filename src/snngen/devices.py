"""Where tensors live: the ``--device`` a user names, the device of a model, the GPUs there are.

Every layer creates tensors on the device of the model or input it serves
(:func:`model_device`); :func:`resolve_device` and :func:`check_devices` turn the command
line's ``--device`` / ``--devices`` (and the API's ``device=`` / ``devices=``) into a
:class:`torch.device`, refusing in one line a GPU this machine lacks.
"""

from __future__ import annotations

import torch

from snngen.errors import SnngenError

#: how the command line spells the options, and how the Python API spells them
CLI_NAMES = {"device": "--device {}", "devices": "--devices {}", "cpu": "--device cpu"}
API_NAMES = {"device": "device={!r}", "devices": "devices={}", "cpu": "device='cpu'"}


def resolve_device(spec: str | None = "auto", names: dict[str, str] = CLI_NAMES) -> torch.device:
    """Return the device named by ``--device``: ``auto`` (a GPU when present, else the CPU),
    ``cpu``, ``cuda`` or ``cuda:N``. A CUDA device this machine lacks is a one-line
    :class:`SnngenError` naming the option as ``names`` spells it (:data:`CLI_NAMES`, or
    :data:`API_NAMES` for the Python API's keyword arguments)."""
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    what = names["device"].format(spec)
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise SnngenError(f"{what}: expected auto, cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise SnngenError(f"{what}: this machine has no CUDA GPU; use {names['cpu']}")
    if index and int(index) >= count:
        raise SnngenError(f"{what}: this machine has {count} GPU(s), cuda:0 .. "
                          f"cuda:{count - 1}")
    return torch.device(text)


def check_devices(device: str, devices: int, names: dict[str, str] = CLI_NAMES) -> torch.device:
    """The ``--device`` to evaluate on, refusing ``--devices N`` beyond this machine's GPUs."""
    dev = resolve_device(device, names)
    if dev.type == "cuda" and devices > torch.cuda.device_count():
        raise SnngenError(f"{names['devices'].format(devices)}: this machine has "
                          f"{torch.cuda.device_count()} GPU(s); use fewer, or {names['cpu']} for "
                          "CPU processes")
    return dev


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
