"""Evaluate a trained model: reconstruction error, sample metrics, compute cost; finish a run.

Metrics are computed on images in [0, 1]. Event models are compared on their time-summed
frames (ON and OFF counts) turned into images, see :func:`snngen.report.events_to_images`.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from snngen import provenance
from snngen.config import DEFAULT_EVAL_METRICS, EVAL_METRICS, RunConfig
from snngen.errors import SnngenError
from snngen.generation import (
    SHARD_SIZE,
    ShardPlan,
    ShardStore,
    draw_in_group,
    model_device,
    run_samples,
    sample_stream,
    weights_fingerprint,
)
from snngen.models import GenerativeModel
from snngen.report import (  # noqa: F401  (events_to_images: its old home, kept importable)
    as_images,
    events_to_images,
    is_event_batch,
    save_reconstructions,
    save_samples,
)
from snngen.results import record_evaluation, sampler_label, utc_now
from snngen.training import batch_to_input

METRICS = EVAL_METRICS
GENERATIVE_METRICS = ("fid", "kid", "is", "pr", "aefd")  # computed on samples vs test images


def metric_applies(model: GenerativeModel, metric: str) -> bool:
    """Whether ``model`` can be measured by ``metric``: ``mse`` compares reconstructions (the
    model must have :meth:`~GenerativeModel.reconstruct`), the sample metrics compare samples
    (it must declare ``can_sample``)."""
    if metric == "mse":
        return model.can_reconstruct
    return model.can_sample if metric in GENERATIVE_METRICS else True


def check_metrics_apply(model: GenerativeModel, metrics: list[str],
                        metrics_flag: str = "--metrics") -> None:
    """Refuse, in one line naming the metrics and the model, metrics that do not apply to
    ``model`` (:func:`metric_applies`); ``metrics_flag`` is how the caller spells the option."""
    keep = ", ".join(m for m in EVAL_METRICS if metric_applies(model, m)) or "none"
    if "mse" in metrics and not model.can_reconstruct:
        raise SnngenError(
            f"{metrics_flag}: ['mse'] compares reconstructions, but model {model.name!r} has no "
            f"reconstruction; choose from {keep}"
        )
    sample_metrics = [m for m in metrics if m in GENERATIVE_METRICS]
    if sample_metrics and not model.can_sample:
        raise SnngenError(
            f"{metrics_flag}: {sample_metrics} compare samples, but model {model.name!r} cannot "
            f"sample{_sampling_hint(model)}; keep only {keep}"
        )


def require_sampling(model: GenerativeModel, where: str | Path) -> None:
    """Refuse (one line naming ``where``, e.g. the run folder, and the model) to sample from a
    model that does not declare ``can_sample``, before anything is drawn or written."""
    if not model.can_sample:
        raise SnngenError(f"{where}: model {model.name!r} cannot sample"
                          f"{_sampling_hint(model)}")


def _sampling_hint(model: GenerativeModel) -> str:
    hint = getattr(model, "cannot_sample_hint", "")
    return f" ({hint})" if hint else ""


def configured_metrics(cfg: RunConfig, model: GenerativeModel) -> list[str]:
    """The metrics a run's config asks for (``eval.metrics``; ``snngen eval``'s default and the
    end-of-run evaluation's). ``null`` takes those of
    :data:`~snngen.config.DEFAULT_EVAL_METRICS` that apply to ``model``; a list as it is."""
    if cfg.eval.metrics is not None:
        return list(cfg.eval.metrics)
    return [m for m in DEFAULT_EVAL_METRICS if metric_applies(model, m)]


def sample_kwargs(model: GenerativeModel, keywords: bool = False, /, **options) -> dict:
    """Return the ``options`` that ``model.sample`` accepts, dropping ``None`` values.

    Each option is checked against its meaningful range: ``solver`` a known sampler, ``steps``
    in [1, the model's diffusion steps], ``threshold_scale`` > 0, ``temperature`` >= 0 (0: the
    most likely token), ``top_k`` >= 1, all finite. Raises :class:`~snngen.errors.SnngenError`
    naming the option if a value is out of range or the model has no use for it: as the
    command's flag (``--top-k``), or with ``keywords`` as the Python keyword (``top_k``).
    """
    params = inspect.signature(model.sample).parameters
    out = {}
    for key, value in options.items():
        if value is None:
            continue
        flag = key if keywords else "--" + key.replace("_", "-")
        _check_sample_option(model, flag, key, value)
        if key not in params:
            raise SnngenError(f"{flag} does not apply to model {model.name!r}")
        out[key] = _solver_name(value) if key == "solver" else value
    return out


def _solver_name(value) -> str:
    """A sampler's canonical name (``DPM_Solver`` -> ``dpm-solver``), as the models read it."""
    return str(value).strip().lower().replace("_", "-")


def _check_sample_option(model: GenerativeModel, flag: str, key: str, value) -> None:
    if key == "solver":
        from snngen.models.diffusion_model import SOLVERS

        if _solver_name(value) not in SOLVERS:
            raise SnngenError(f"{flag} {value}: unknown sampler; choose from {', '.join(SOLVERS)}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SnngenError(f"{flag} {value}: must be a finite number")
    if key == "threshold_scale" and value <= 0:
        raise SnngenError(f"{flag} {value}: must be > 0 (1 keeps the trained thresholds)")
    if key == "temperature" and value < 0:
        raise SnngenError(f"{flag} {value}: must be >= 0 (0 takes the most likely token)")
    if key in ("top_k", "steps") and (value != int(value) or value < 1):
        raise SnngenError(f"{flag} {value}: must be a whole number >= 1")
    schedule = getattr(model, "schedule", None)
    if key == "steps" and schedule is not None and value > schedule.num_steps:
        raise SnngenError(
            f"{flag} {value}: the model was trained with {schedule.num_steps} diffusion steps; "
            f"choose 1 ... {schedule.num_steps}"
        )




def test_batches(test_set: Dataset, n: int, batch_size: int):
    """Yield model-input batches of the first ``n`` test items (images or time-first events)."""
    n = min(n, len(test_set))
    for start in range(0, n, batch_size):
        items = [test_set[i][0] for i in range(start, min(n, start + batch_size))]
        yield batch_to_input(torch.stack(items))


def sample_batches(
    model: GenerativeModel,
    n: int,
    batch_size: int,
    seed: int = 0,
    progress: bool = True,
    *,
    shard_size: int = SHARD_SIZE,
    **kwargs,
):
    """Yield ``n`` samples in CPU batches of at most ``batch_size`` (images ``[b, C, H, W]``,
    events ``[T, b, 2, H, W]``); ``kwargs`` go to ``model.sample``. The samples are those of
    :mod:`snngen.generation`: shards of ``shard_size``, each drawn from its own generator on the
    model's device seeded from ``(seed, shard index)``, so ``snngen sample`` and ``snngen eval``
    with one seed draw the same images. Memory holds one batch at a time."""
    plan = ShardPlan(n, seed, shard_size, batch_size, dict(kwargs))
    yield from sample_stream(model, plan, progress)


def generate(
    model: GenerativeModel,
    n: int,
    batch_size: int,
    seed: int = 0,
    progress: bool = True,
    **kwargs,
) -> Tensor:
    """Return ``n`` samples (``[n, C, H, W]``, events ``[T, n, 2, H, W]``) of
    :func:`sample_batches`, concatenated."""
    chunks = list(sample_batches(model, n, batch_size, seed, progress, **kwargs))
    return torch.cat(chunks, dim=1 if is_event_batch(chunks[0]) else 0)


class SampleImages:
    """Re-iterable stream of ``n`` samples as image batches ``[b, C, H, W]`` in [0, 1] (event
    samples as count images): each pass draws the same samples again from ``seed``, so metrics
    never hold more than one batch of samples."""

    def __init__(self, model: GenerativeModel, n: int, batch_size: int, seed: int, **kwargs):
        self.model, self.n, self.batch_size, self.seed, self.kwargs = (
            model, n, batch_size, seed, kwargs
        )

    def __iter__(self):
        for batch in sample_batches(self.model, self.n, self.batch_size, self.seed,
                                    **self.kwargs):
            yield as_images(batch)


def samples_folder(run_dir: str | Path, protocol: str, options: dict | None = None) -> Path:
    """The folder of a request's sample shards: ``run_dir/samples/<protocol>/`` with the
    model's configured sampler, ``run_dir/samples/<protocol>/<sampler>/`` with sampler options
    (:func:`~snngen.results.sampler_label`, e.g. ``samples/snngen/ddim-50/``), so the samples
    of different protocols, solvers and steps live side by side."""
    folder = Path(run_dir) / "samples" / protocol
    label = sampler_label(options)
    return folder / label if label else folder


@dataclass
class SampleFolder:
    """Where and how :func:`fake_images` keeps a run's samples: shards of ``shard_size`` in
    :func:`samples_folder` drawn by ``devices`` processes; ``fresh`` deletes the saved shards
    of this request (its folder only), ``replace_stale`` only those of an earlier, different
    request in that folder (else refused)."""

    run_dir: Path
    devices: int = 1
    shard_size: int = SHARD_SIZE
    fresh: bool = False
    replace_stale: bool = False
    progress: bool = True


def fake_images(
    model: GenerativeModel,
    protocol: str,
    n: int,
    seed: int = 0,
    *,
    batch_size: int = 64,
    sample_options: dict | None = None,
    folder: SampleFolder | None = None,
):
    """The ``n`` samples of ``model`` an evaluation under ``protocol`` compares, as a
    re-iterable of image batches ``[b, C, H, W]`` in [0, 1] (one shard or batch at a time).

    With ``folder``: the shards of :func:`samples_folder` (a
    :class:`~snngen.generation.ShardStore`), drawing the missing ones first (resumable, spread
    over ``folder.devices`` processes); without: drawn in memory on every pass
    (:class:`SampleImages`). Both give the same samples (up to the shards' float16 storage).
    """
    options = dict(sample_options or {})
    if folder is None:
        return SampleImages(model, n, batch_size, seed, **options)
    plan = ShardPlan(n, seed, folder.shard_size, batch_size, options)
    store = ShardStore(samples_folder(folder.run_dir, protocol, options), plan, model, protocol)
    return run_samples(model, store, devices=folder.devices, run_dir=folder.run_dir,
                       fresh=folder.fresh, replace_stale=folder.replace_stale,
                       progress=folder.progress)


#: bytes of memory one sample's features may take while metrics run (2048-d Inception pool3,
#: float32, with working copies)
FEATURE_BYTES_PER_SAMPLE = 2048 * 4 * 3


def check_evaluation_request(
    metrics: list[str],
    n: int | None,
    features: str | None,
    model: GenerativeModel | None = None,
    *,
    metrics_flag: str = "--metrics",
    n_flag: str = "--n",
    features_flag: str = "--features",
    protocol: str = "snngen",
    dataset: str | None = None,
    ref_stats: str | Path | None = None,
    inception_logits: str | Path | None = None,
    flags: dict[str, str] | None = None,
):
    """Refuse, before any sample is drawn, an evaluation that could not finish; returns its
    :class:`~snngen.metrics.plan.EvaluationPlan` (protocol, split, features, sample count).

    The request must fit its ``protocol`` (:func:`~snngen.metrics.plan.plan_evaluation`:
    IS on Inception features needs the Inception logits file; ``ref_stats`` and
    ``inception_logits`` files are read and checked). Every metric must apply to ``model``
    (when given; :func:`check_metrics_apply`: mse needs a reconstruction, the sample metrics a
    model that samples). For sample metrics (fid, kid, is, pr, aefd): the features of ``n``
    samples (default: the protocol's count) must fit in the memory available now; Inception
    features need its weights installed. The ``*_flag`` names (and ``flags`` for the other
    options) are how the caller spells an option (``eval.metrics`` in a config). Raises
    :class:`~snngen.errors.SnngenError` with one line naming the option.
    """
    from snngen.metrics.plan import plan_evaluation

    if model is not None:
        check_metrics_apply(model, metrics, metrics_flag)
    names = {"metrics": metrics_flag, "n": n_flag, "features": features_flag, **(flags or {})}
    plan = plan_evaluation(dataset, metrics, n, protocol=protocol, features=features,
                           ref_stats=ref_stats, inception_logits=inception_logits, flags=names)
    sample_metrics = [m for m in metrics if m in GENERATIVE_METRICS]
    if not sample_metrics:
        return plan
    need = plan.n * FEATURE_BYTES_PER_SAMPLE
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf here
        avail = need
    if need > avail:
        raise SnngenError(
            f"{n_flag} {plan.n}: the features of that many samples need about "
            f"{need / 1e9:.1f} GB of memory; {avail / 1e9:.1f} GB is available"
        )
    if plan.kind == "inception" and set(sample_metrics) - {"aefd"}:
        from snngen.metrics.inception import find_inception_weights

        try:
            find_inception_weights()
        except FileNotFoundError as err:
            raise SnngenError(f"{features_flag} inception: {str(err).splitlines()[0]}") from None
    return plan


@torch.no_grad()
def reconstruction_mse(model: GenerativeModel, test_set: Dataset, n: int, batch_size: int) -> dict:
    """Return ``{"value", "n"}``: mean squared error of reconstructions of ``n`` test items
    (reconstructed on the model's device)."""
    from snngen.metrics import reconstruction_mse as mse

    device = model_device(model)
    pairs = [(model.reconstruct(x.to(device)).cpu(), x)
             for x in test_batches(test_set, n, batch_size)]
    events = is_event_batch(pairs[0][1])
    dim = 1 if events else 0
    recon = torch.cat([r for r, _ in pairs], dim=dim)
    target = torch.cat([x for _, x in pairs], dim=dim)
    return {"value": mse(recon, target, batch_dim=dim).value, "n": recon.shape[dim]}


def evaluate_model(
    model: GenerativeModel,
    cfg: RunConfig,
    test_set: Dataset,
    metrics: list[str],
    n: int | None = None,
    features: str | torch.nn.Module | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    samples: SampleFolder | None = None,
    *,
    protocol: str | None = None,
    ref_stats: str | Path | None = None,
    inception_logits: str | Path | None = None,
    **sample_options,
) -> dict:
    """Return a JSON-ready dict of the requested metrics of ``model`` under a metric protocol.

    ``protocol`` (default: the config's ``eval.protocol``) fixes the feature network and its
    preprocessing, the default sample count ``n`` and the reference split
    (:mod:`snngen.metrics.protocols`). ``features``: the snngen protocol's network choice
    (``"classifier"`` / ``"inception"``; ``None``: the protocol's), or a module replacing it
    (then the reference is the first ``n`` items of ``test_set``, outside any protocol).
    ``ref_stats``: a pytorch-fid statistics file for FID (KID and precision/recall still use
    the protocol's reference features); ``inception_logits``: the Inception
    logits file IS needs on Inception features (these and ``n`` default to the config's
    ``eval`` entries when the protocol is the config's). ``sample_options`` (solver, steps,
    temperature, ...) go to ``model.sample``; ``samples``: keep the samples as resumable shards
    in a run folder (:func:`fake_images`).

    ``mse``: reconstruction error of ``n`` test items (images in [0, 1]); ``fid``, ``kid``,
    ``is``, ``pr``: ``n`` samples against the protocol's reference set. ``"protocol"`` records
    the protocol's name and version, the sample count, the reference split and the reference
    read (its image size and cache file: a ``native_reference`` protocol reads the dataset as
    published, :func:`~snngen.metrics.reference.reference_source`); every entry records its
    sample counts and feature network; ``"seed"``, ``"weights"`` (a fingerprint of the weights
    measured, :func:`~snngen.generation.weights_fingerprint`) and ``"measured_at"`` (UTC, when
    the numbers were done) say how and when. A metric that does not apply to ``model`` is
    refused before any work (:func:`check_metrics_apply`).
    """
    from snngen.metrics.measure import measure, prepare_measurement
    from snngen.metrics.reference import reference_source

    e = cfg.eval
    protocol = protocol or e.protocol
    if protocol == e.protocol:  # the config's protocol: its own eval entries apply
        n = n or e.n_samples
        ref_stats = ref_stats or e.ref_stats
        inception_logits = inception_logits or e.inception_logits
    module = features if isinstance(features, torch.nn.Module) else None
    plan = check_evaluation_request(
        metrics, n, None if module is not None else features, model, protocol=protocol,
        dataset=cfg.data.name, ref_stats=ref_stats, inception_logits=inception_logits,
    )
    model.eval()
    bs = batch_size or e.batch_size
    out: dict = {"model": model.name, "dataset": cfg.data.name}
    t0 = time.perf_counter()
    real = None
    if module is not None:
        real = [as_images(x) for x in test_batches(test_set, plan.n, bs)]
    ready = prepare_measurement(plan, reference_source(plan.protocol, cfg.data),
                                features=module, real=real,
                                batch_size=bs)  # every file and split read before sampling
    out["protocol"] = ready.record
    if "mse" in metrics:
        out["mse"] = reconstruction_mse(model, test_set, plan.n, bs)
    gen_metrics = [m for m in metrics if m in GENERATIVE_METRICS]
    if gen_metrics:
        fake = fake_images(model, plan.protocol.name, plan.n, seed,
                           batch_size=bs, sample_options=sample_options, folder=samples)
        if sample_options:
            out["sample_options"] = dict(sample_options)
        results = measure(ready, fake, seed=seed, batch_size=bs)
        if "aefd" in gen_metrics:
            results["ae_fd"] = _ae_fd(fake, plan, cfg, bs)
        out.update({k: v.to_dict() for k, v in results.items()})
    out.update(seed=seed, weights=weights_fingerprint(model), measured_at=utc_now(),
               seconds=round(time.perf_counter() - t0, 2),
               provenance=provenance.collect(_model_device(model)))
    return out


def _model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model``'s weights are (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _ae_fd(fake, plan, cfg: RunConfig, batch_size: int):
    """FSVAE's autoencoder Frechet distance of ``fake`` against the plan's reference split, read
    as the protocol reads its reference (:func:`~snngen.metrics.reference.reference_source`: the
    run's data section, or the dataset as published; the encoder resizes to its own size)."""
    from snngen.metrics import ae_frechet_distance, feature_network
    from snngen.metrics.reference import ReferenceImages, reference_source

    encoder = feature_network("autoencoder", dataset=cfg.data.name, root=cfg.data.root)
    real = ReferenceImages(reference_source(plan.protocol, cfg.data), plan.split,
                           plan.protocol.reference_n, batch_size)
    return ae_frechet_distance(fake, real, encoder, batch_size=batch_size)


def write_metrics(result: dict, path: str | Path) -> Path:
    """Merge one evaluation's ``result`` into the ``metrics.json`` at ``path``, keeping every
    earlier result (:func:`snngen.results.record_evaluation`); returns the path."""
    record_evaluation(result, path)
    return Path(path)


def finish_run(
    run_dir: str | Path,
    model: GenerativeModel,
    cfg: RunConfig,
    test_set: Dataset,
    fixed: Tensor,
    evaluate: bool = True,
    *,
    rank: int = 0,
    world: int = 1,
) -> dict | None:
    """Write ``recon.png``, ``samples.png`` (events: also ``samples.gif``) and ``metrics.json``.

    Runs where ``model`` is (the training accelerator). The evaluation measures the config's
    metrics (:func:`configured_metrics`); its samples are kept as shards in
    ``run_dir/samples/<protocol>/`` (a killed evaluation resumes; shards of earlier weights are
    replaced) and its result is merged into ``metrics.json`` (:func:`write_metrics`). At the
    end of a DDP run every rank calls this with its ``rank`` of ``world``: the ranks draw the
    shards together, then rank 0 alone writes the files; the others return None.
    """
    run_dir = Path(run_dir)
    model = model.eval()
    if rank == 0:
        save_reconstructions(model, fixed.to(model_device(model)), run_dir / "recon.png")
        if model.can_sample:
            save_samples(model, 64 if not is_event_batch(fixed) else 8, run_dir / "samples.png")
    if not evaluate:
        return None
    protocol, n = _end_of_run_request(cfg)
    metrics = configured_metrics(cfg, model)
    folder = SampleFolder(run_dir, shard_size=cfg.eval.shard_size, replace_stale=True,
                          progress=cfg.trainer.progress_bar)
    sample_metrics = [m for m in metrics if m in GENERATIVE_METRICS]
    if world > 1 and sample_metrics and model.can_sample:
        plan = ShardPlan(n, 0, folder.shard_size, cfg.eval.batch_size, {})
        store = ShardStore(samples_folder(run_dir, protocol), plan, model, protocol)
        draw_in_group(model, store, rank, world, replace_stale=True, progress=folder.progress)
    if rank != 0:
        return None
    result = evaluate_model(model, cfg, test_set, metrics, n, cfg.eval.features, samples=folder)
    write_metrics(result, run_dir / "metrics.json")
    return result


def _end_of_run_request(cfg: RunConfig) -> tuple[str, int]:
    """The protocol name and sample count of the end-of-run evaluation of ``cfg``."""
    protocol = cfg.eval.protocol
    n = cfg.eval.n_samples
    if n is None:
        from snngen.metrics.protocols import get_protocol

        n = get_protocol(protocol).n_samples
    return protocol, n


@torch.no_grad()
def model_info(model: GenerativeModel, test_set: Dataset, n: int = 8) -> dict:
    """Return parameter count, per-layer firing rates, SOPs, MACs and energy per sample.

    Measured with :class:`snngen.spiking.monitor.Monitor` on a reconstruction (or, for models
    without one, on sampling) of ``n`` test items. ``"table"`` holds a printable summary.
    """
    from snngen.spiking.monitor import Monitor

    model.eval()
    x = next(test_batches(test_set, n, n))
    with Monitor(model, n_samples=n) as mon:
        if model.can_reconstruct:
            model.reconstruct(x)
            measured_on = f"reconstruct({n} test items)"
        else:
            model.sample(n, generator=torch.Generator().manual_seed(0))
            measured_on = f"sample({n})"
    params = sum(p.numel() for p in model.parameters())
    header = f"model {model.name}: {params:,} parameters; measured on {measured_on}, per sample\n"
    return {
        "model": model.name,
        "parameters": params,
        "measured_on": measured_on,
        "layers": mon.report(),
        "totals": mon.totals(),
        "table": header + mon.table(),
    }
