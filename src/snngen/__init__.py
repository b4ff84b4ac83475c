"""snngen: spiking-neural-network generative models under one API and one CLI.

The Python API runs the command line's code paths (see :mod:`snngen.api`)::

    import snngen
    run = snngen.train("configs/sae_mnist5k.yaml", trainer__max_steps=100)
    model = snngen.load(run.path)
    images = model.sample(16)                      # [16, C, H, W] in [0, 1]
    metrics = snngen.evaluate(run.path, ["mse", "fid"], protocol="snngen", n=1000)

``import snngen`` stays cheap: torch and Lightning load when one of these functions is first
used. (The training harness itself, Lightning module and ``fit``, is :mod:`snngen.training`.)
"""

import typing as _typing

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate", "leaderboard", "load", "plot", "sample", "train"]

_API = ("evaluate", "leaderboard", "load", "plot", "sample", "train")

if _typing.TYPE_CHECKING:
    from snngen.api import evaluate, leaderboard, load, plot, sample, train  # noqa: F401


def __getattr__(name: str) -> _typing.Any:
    """Load :mod:`snngen.api` (and torch) on first use of one of its functions."""
    if name in _API:
        from snngen import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'snngen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
