"""Checking an evaluation request against its protocol before any sample is drawn.

:func:`plan_evaluation` resolves a request (metrics, sample count, feature network, the user's
statistics and Inception-logits files) into an :class:`EvaluationPlan`, refusing in one line
anything that could not run: what a command checks first, before it writes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import snngen.metrics.protocols as protocols
from snngen.metrics.features import MetricsError
from snngen.metrics.inception import (
    INCEPTION_LOGITS_ENV,
    inception_logits_path,
    load_inception_logits,
)
from snngen.metrics.protocols import PROTOCOLS, MetricProtocol
from snngen.metrics.reference import load_ref_stats

SAMPLE_METRICS = ("fid", "kid", "is", "pr", "aefd")
#: how the command line spells each option in messages (a config uses ``eval.<key>``)
CLI_FLAGS = {"metrics": "--metrics", "n": "--n", "features": "--features",
             "protocol": "--protocol", "ref_stats": "--ref-stats",
             "inception_logits": "--inception-logits"}


@dataclass(frozen=True)
class EvaluationPlan:
    """An evaluation resolved against its protocol before any sample is drawn: the
    ``protocol``, ``dataset``, reference ``split``, feature network ``kind``, sample count
    ``n`` (the caller's, else the protocol's), the ``sample_metrics`` asked, and the user's
    ``ref_stats`` / ``inception_logits`` files (``None``: not given)."""

    protocol: MetricProtocol
    dataset: str
    split: str
    kind: str
    n: int
    sample_metrics: tuple[str, ...]
    ref_stats: Path | None = None
    inception_logits: Path | None = None


def plan_evaluation(
    dataset: str | None,
    metrics: Sequence[str],
    n: int | None = None,
    *,
    protocol: str = "snngen",
    features: str | None = None,
    ref_stats: str | Path | None = None,
    inception_logits: str | Path | None = None,
    load_files: bool = True,
    flags: dict[str, str] | None = None,
) -> EvaluationPlan:
    """Resolve and check an evaluation request; returns its :class:`EvaluationPlan`.

    Refuses, in one line naming the option (spelt as in ``flags``, default the command line's):
    an unknown protocol; a feature choice the protocol does not allow; IS on Inception features
    without an Inception logits file (``inception_logits``, else ``$SNNGEN_INCEPTION_LOGITS``);
    a logits or ``ref_stats`` file that is missing, or with ``load_files``, malformed.
    """
    flags = {**CLI_FLAGS, **(flags or {})}
    if protocol not in PROTOCOLS:
        raise MetricsError(
            f"{flags['protocol']} {protocol}: unknown metric protocol; choose from "
            f"{', '.join(PROTOCOLS)}"
        )
    proto = PROTOCOLS[protocol]
    try:
        kind = proto.features_for(dataset or "", features)
    except MetricsError as err:
        raise MetricsError(f"{flags['features']} {features}: {err}") from None
    sample_metrics = tuple(m for m in metrics if m in SAMPLE_METRICS)
    logits = inception_logits_path(inception_logits)
    if "is" in sample_metrics and kind == "inception" and logits is None:
        give = flags["inception_logits"]
        give = f"set {give}: FILE" if give.startswith("eval.") else f"pass {give} FILE"
        raise MetricsError(
            f"{flags['metrics']} is: the Inception Score ('is') on Inception features needs the "
            f"network's 1008-way logits, which the bundled Inception lacks; {give} or set "
            f"{INCEPTION_LOGITS_ENV}=FILE (a state dict "
            "with fc.weight [1008, 2048], e.g. pytorch-fid's pt_inception-2015-12-05), or drop "
            "'is'"
        )
    if logits is not None and not ("is" in sample_metrics and kind == "inception"):
        logits = None  # not needed: never read
    refs = Path(ref_stats).expanduser() if ref_stats else None
    if refs is not None and "fid" not in sample_metrics:
        refs = None
    logits_what = flags["inception_logits"] if inception_logits else INCEPTION_LOGITS_ENV
    for what, path in ((logits_what, logits), (flags["ref_stats"], refs)):
        if path is not None and not path.is_file():
            raise MetricsError(f"{what} {path}: no such file")
    if load_files:
        if logits is not None:
            load_inception_logits(logits, what=logits_what)
        if refs is not None:
            load_ref_stats(refs, protocols.FEATURE_DIMS[kind], what=flags["ref_stats"])
    return EvaluationPlan(proto, dataset or "", proto.split_for(dataset or ""), kind,
                          n or proto.n_samples, sample_metrics, refs, logits)
