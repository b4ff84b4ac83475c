"""What ``snngen`` prints: its own lines, one progress bar per phase, Lightning quiet by default.

A training run reads, top to bottom::

    snngen: training sae (configs/sae_mnist5k.yaml, 1.1M parameters) on mnist5k (4,500 train / ...
    train: 100%|██████████| 700/700 [01:10<00:00, 9.93step/s, loss=0.0351]
    sample:  40%|████      | 400/1000 [00:02<00:03, 190img/s]            (gone once done)
    features (fake, classifier:mnist5k):  ...                             (gone once done)
    snngen: done: run folder runs/sae_mnist5k; mse 0.0351, fid 12.3, kid 0.0101 (1000 samples)

* :func:`set_up` (``snngen``'s ``main`` calls it once) and :func:`configure_lightning` (called by
  :func:`snngen.training.make_trainer`, after Lightning is imported: importing Lightning resets its
  loggers to INFO) hide Lightning's banners ("GPU available", "TPU available", "💡 Tip",
  "LOCAL_RANK", "`Trainer.fit` stopped", ...) and its framework warnings, unless
  ``snngen --verbose`` or ``SNNGEN_VERBOSE=1``. ``--verbose`` sets ``SNNGEN_VERBOSE=1`` in the
  environment, so processes started for DDP inherit it.
* :func:`progress_bar` is the one snngen progress bar (tqdm: description, percentage, count,
  elapsed < time left, rate, postfix; on stderr, so stdout stays the command's result). The
  phases use it with the descriptions ``train`` (steps), ``sample`` (images) and ``features``
  (images; reference statistics too).
* :func:`describe_finish` is the last line of ``snngen train`` (the first is
  :func:`snngen.preflight.describe_training`).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


#: environment variable equivalent to ``snngen --verbose`` (any value but "", "0", "false", "no")
VERBOSE_ENV = "SNNGEN_VERBOSE"
#: the loggers Lightning writes its banners to (children inherit their level)
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric",
                     "pytorch_lightning", "lightning_fabric")
#: modules whose warnings are framework noise to a user of snngen (shown with --verbose)
_LIGHTNING_MODULES = r"(lightning|pytorch_lightning|lightning_fabric|lightning_utilities)(\..*)?"
#: smoothing of the rate (and so of the time left): 0 = the average since the start, 1 = the
#: last update; a little smoothing follows a changing speed without jumping about
BAR_SMOOTHING = 0.1


# ----------------------------------------------------------------------------- verbosity


def is_verbose() -> bool:
    """Whether Lightning may print its banners and warnings (``SNNGEN_VERBOSE`` set)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def set_up(verbose: bool = False) -> None:
    """Set the console up for one ``snngen`` command; ``verbose``: show Lightning's output.

    ``verbose`` is written to the environment (``SNNGEN_VERBOSE=1``) so that the processes
    Lightning starts for DDP, which run the same command line, print the same way.
    """
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    configure_warnings()
    if "lightning" in sys.modules:
        configure_lightning()


def configure_warnings() -> None:
    """Hide Lightning's framework warnings (and the deprecations its internals trigger in torch)
    unless verbose. Warnings raised by snngen or by the user's own code are left alone."""
    if is_verbose():
        return
    warnings.filterwarnings("ignore", module=_LIGHTNING_MODULES)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # the EMA copy is kept in eval mode on purpose
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")


def configure_lightning() -> None:
    """Quiet Lightning's INFO banners and its warnings unless verbose. Call it after Lightning
    is imported (its import sets its loggers to INFO); it is cheap and idempotent. Verbose:
    Lightning's own levels (INFO), also after an earlier quiet call in this process."""
    verbose = is_verbose()
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:
        return
    configure_warnings()
    try:
        from lightning.fabric.utilities.warnings import PossibleUserWarning
    except ImportError:  # pragma: no cover - Lightning is a dependency
        return
    warnings.filterwarnings("ignore", category=PossibleUserWarning)


# ----------------------------------------------------------------------------- progress bars


def progress_bar(
    iterable: Any = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
    leave: bool = False,
    unit_scale: bool = False,
) -> tqdm:
    """Return the snngen progress bar of one phase (a tqdm bar; ``enabled=False``: silent).

    ``desc``: the phase (``train``, ``sample``, ``features (...)``), the bar's first word;
    ``total``: its length in ``unit`` (None when unknown: no percentage nor time left);
    ``initial``: units already done (a resumed run); ``leave``: keep the finished bar on screen;
    ``unit_scale``: counts and rate with SI prefixes (``76.7M/170M``, ``7.6MB/s``; downloads).
    Format: tqdm's default, ``desc: 40%|████      | 280/700 [00:28<00:42, 9.9step/s, loss=0.04]``
    (elapsed < time left). Written to stderr, as tqdm does by default.
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, initial=initial, unit=unit, leave=leave,
                disable=not enabled, dynamic_ncols=True, smoothing=BAR_SMOOTHING,
                unit_scale=unit_scale)


# ----------------------------------------------------------------------------- lines




def describe_finish(run_dir: str | Path, result: dict | None = None) -> str:
    """The last line of ``snngen train``: the run folder and the headline metrics of
    ``result`` (``metrics.json``'s content; None: the run was not evaluated)."""
    line = f"snngen: done: run folder {run_dir}"
    if not result:
        return line
    scores = [f"{name} {entry['value']:.4g}" for name, entry in result.items()
              if isinstance(entry, dict) and isinstance(entry.get("value"), (int, float))]
    n = (result.get("protocol") or {}).get("n_samples")
    if scores:
        line += "; " + ", ".join(scores) + (f" ({n:,} samples)" if isinstance(n, int) else "")
    return line
