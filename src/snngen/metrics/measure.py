"""Measuring samples under a protocol: the feature network and reference made ready, then scores.

:func:`prepare_measurement` builds what an :class:`~snngen.metrics.plan.EvaluationPlan` measures
with (so every file and split is checked before sampling); :func:`measure` extracts the samples'
features and :func:`score_features` computes FID / KID / IS / precision-recall from them.
:func:`protocol_reference` gives a benchmark the same network and reference as ``snngen eval``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

import snngen.metrics.protocols as protocols
import snngen.metrics.reference as reference
from snngen.metrics.features import FeatureNet, Features, ModuleFeatures, extract_features
from snngen.metrics.inception import load_inception_logits, sha256_file
from snngen.metrics.plan import EvaluationPlan
from snngen.metrics.protocols import MetricProtocol, get_protocol
from snngen.metrics.reference import (
    DataSource,
    load_ref_stats,
    reference_size,
    reference_source,
)
from snngen.metrics.result import MetricResult
from snngen.metrics.scores import GaussianStats, fid, inception_score, kid, precision_recall


def score_features(
    protocol: MetricProtocol,
    fake: Features,
    metrics: Sequence[str],
    *,
    real: Features | None = None,
    real_stats: GaussianStats | None = None,
    seed: int = 0,
    pr_k: int = 3,
) -> dict[str, MetricResult]:
    """Compute ``metrics`` (``fid``, ``kid``, ``is``, ``pr``) of ``fake`` features under
    ``protocol``: FID against ``real_stats`` (else ``real``'s), KID with the protocol's subsets,
    IS on the first ``is_samples`` logits in ``is_splits`` splits, precision/recall with k."""
    out: dict[str, MetricResult] = {}
    if "fid" in metrics:
        out["fid"] = fid(fake, real_stats if real_stats is not None else real)
    if "kid" in metrics:
        out["kid"] = kid(fake, real, subsets=protocol.kid_subsets,
                         subset_size=protocol.kid_subset_size, seed=seed)
    if "is" in metrics:
        n = fake.n if protocol.is_samples is None else min(fake.n, protocol.is_samples)
        logits = None if fake.logits is None else fake.logits[:n]
        out["is"] = inception_score(Features(fake.features[:n], logits, fake.name),
                                    splits=protocol.is_splits, seed=seed,
                                    shuffle=protocol.is_shuffle)
    if "pr" in metrics:
        out.update(precision_recall(fake, real, k=pr_k))
    return out


@dataclass
class Measurement:
    """What an :class:`EvaluationPlan` measures with, made ready before any sample is drawn: the
    feature network ``net``, the reference ``real_stats`` / ``real`` features (``None`` when no
    metric needs them) and a ``record`` of where they came from."""

    plan: EvaluationPlan
    net: FeatureNet | None
    real_stats: GaussianStats | None
    real: Features | None
    record: dict[str, Any]


def prepare_measurement(
    plan: EvaluationPlan,
    source: DataSource,
    *,
    features: nn.Module | None = None,
    real: Any = None,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> Measurement:
    """Build the feature network, read the user's statistics and the (cached) reference set
    of ``plan``, so that every file and split a metric needs is checked before sampling.

    ``source``: the images the reference reads, :func:`reference_source` of the plan's
    protocol and the run's data section (the protocol's network resizes them, see
    :func:`reference_size`).

    ``features``: a module replacing the protocol's network (then the reference is ``real``,
    images or batches, e.g. the run's first test items: outside any protocol, recorded so).
    """
    proto = plan.protocol
    record: dict[str, Any] = {"name": proto.name, "version": proto.version, "n_samples": plan.n,
                              "reference_split": plan.split}
    main = [m for m in plan.sample_metrics if m in ("fid", "kid", "is", "pr")]
    if not main:
        return Measurement(plan, None, None, None, record)
    if features is not None:
        net = features if isinstance(features, FeatureNet) else ModuleFeatures(features)
        record.update(features=net.name, reference_split="the given images (custom features)")
    else:
        logits = None
        if plan.inception_logits is not None:
            logits = load_inception_logits(plan.inception_logits)
            record["inception_logits"] = logits.record()
        net = protocols.protocol_network(proto, plan.dataset, root=source.root, features=plan.kind,
                               inception_logits=logits)
        record.update(features=net.name, resize=proto.resize_for(plan.kind),
                      quantize=proto.quantize and plan.kind == "inception")
    real_stats, real_feats = None, None
    if plan.ref_stats is not None:
        real_stats = load_ref_stats(plan.ref_stats, _dim(net))
        record["ref_stats"] = {"file": str(plan.ref_stats), "sha256": sha256_file(plan.ref_stats)}
    if {"kid", "pr"} & set(main) or ("fid" in main and real_stats is None):
        if features is not None:
            real_feats = extract_features(real, net, batch_size=batch_size, progress=progress,
                                          desc="real")
            record["reference"] = {"n": real_feats.n}
        else:
            size = reference_size(proto, plan.kind, source)
            src = DataSource(source.name, source.root, size, source.options)
            stats, real_feats, path = reference.reference_features(
                proto, net, src, split=plan.split, batch_size=batch_size, progress=progress
            )
            real_stats = stats if real_stats is None else real_stats
            record["reference"] = {"n": real_feats.n, "image_size": size, "cache": str(path)}
    return Measurement(plan, net, real_stats, real_feats, record)


def _dim(net: FeatureNet) -> int | None:
    return net.num_features or None


def measure(
    m: Measurement,
    fake: Any,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> dict[str, MetricResult]:
    """Compute the plan's fid/kid/is/pr of ``fake`` (images ``[N, C, H, W]`` in [0, 1] or an
    iterable of batches) with a prepared :class:`Measurement`."""
    main = [x for x in m.plan.sample_metrics if x in ("fid", "kid", "is", "pr")]
    if not main or m.net is None:
        return {}
    f_fake = extract_features(fake, m.net, batch_size=batch_size, progress=progress,
                              desc="fake")
    return score_features(m.plan.protocol, f_fake, main, real=m.real, real_stats=m.real_stats,
                          seed=seed)


def protocol_reference(
    protocol: MetricProtocol | str,
    source: DataSource,
    *,
    features: str | None = None,
    split: str | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> tuple[FeatureNet, GaussianStats, Features]:
    """``(network, reference statistics, reference features)`` of ``protocol`` on the dataset of
    ``source`` (a run's data, ``DataSource.of(cfg.data)``; ``split``: default the protocol's),
    the cached reference included: what a benchmark needs to score its own samples on the same
    scale as ``snngen eval`` (the same :func:`reference_source`)."""
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    source = reference_source(proto, source)
    kind = proto.features_for(source.name, features)
    net = protocols.protocol_network(proto, source.name, root=source.root, features=kind)
    src = DataSource(source.name, source.root, reference_size(proto, kind, source),
                     source.options)
    stats, feats, _ = reference.reference_features(proto, net, src, split=split or proto.split_for(
        source.name), batch_size=batch_size, progress=progress)
    return net, stats, feats
