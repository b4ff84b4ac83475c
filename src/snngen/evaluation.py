"""Evaluate a trained model: reconstruction error, sample metrics, compute cost; finish a run.

Metrics are computed on images in [0, 1]. Event models are compared on their time-summed
frames (ON and OFF counts) turned into images, see :func:`events_to_images`.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from snngen.config import EVAL_METRICS, RunConfig
from snngen.models import GenerativeModel
from snngen.report import is_event_batch, save_reconstructions, save_samples
from snngen.train import batch_to_input

METRICS = EVAL_METRICS
GENERATIVE_METRICS = ("fid", "kid", "is", "pr", "aefd")  # computed on samples vs test images


def sample_kwargs(model: GenerativeModel, **options) -> dict:
    """Return the ``options`` that ``model.sample`` accepts, dropping ``None`` values.

    Each option is checked against its meaningful range: ``solver`` a known sampler, ``steps``
    in [1, the model's diffusion steps], ``threshold_scale`` > 0, ``temperature`` >= 0 (0: the
    most likely token), ``top_k`` >= 1, all finite. Raises :class:`~snngen.errors.SnngenError`
    naming the option if a value is out of range or the model has no use for it.
    """
    from snngen.errors import SnngenError

    params = inspect.signature(model.sample).parameters
    out = {}
    for key, value in options.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        _check_sample_option(model, flag, key, value)
        if key not in params:
            raise SnngenError(f"{flag} does not apply to model {model.name!r}")
        out[key] = value
    return out


def _check_sample_option(model: GenerativeModel, flag: str, key: str, value) -> None:
    from snngen.errors import SnngenError

    if key == "solver":
        from snngen.models.diffusion_model import SOLVERS

        name = str(value).strip().lower().replace("_", "-")
        if name not in SOLVERS:
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


def events_to_images(x: Tensor) -> Tensor:
    """Turn event frames ``[T, B, 2, H, W]`` into images ``[B, 1, H, W]`` in [0, 1].

    The image is the total event count per pixel (both polarities, all steps) divided by its
    maximum over the batch, a picture of where the stream has edges.
    """
    img = x.float().clamp(min=0).sum(dim=(0, 2)).unsqueeze(1)
    return img / img.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8)


def _as_images(x: Tensor) -> Tensor:
    return events_to_images(x) if is_event_batch(x) else x


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
    **kwargs,
):
    """Yield ``n`` samples in CPU batches of at most ``batch_size`` (images ``[b, C, H, W]``,
    events ``[T, b, 2, H, W]``), drawn with one generator seeded ``seed``; ``kwargs`` go to
    ``model.sample``. Memory holds one batch at a time."""
    gen = torch.Generator().manual_seed(seed)
    starts = range(0, n, batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="sampling", unit="batch", leave=False,
                          disable=not progress):
            yield model.sample(min(batch_size, n - start), generator=gen, **kwargs).cpu()


def generate(
    model: GenerativeModel,
    n: int,
    batch_size: int,
    seed: int = 0,
    progress: bool = True,
    **kwargs,
) -> Tensor:
    """Return ``n`` samples (``[n, C, H, W]``, events ``[T, n, 2, H, W]``) drawn in batches
    with one seeded generator (:func:`sample_batches`, concatenated)."""
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
            yield _as_images(batch)


#: bytes of memory one sample's features may take while metrics run (2048-d Inception pool3,
#: float32, with working copies)
FEATURE_BYTES_PER_SAMPLE = 2048 * 4 * 3


def check_evaluation_request(
    metrics: list[str],
    n: int,
    features: str,
    model: GenerativeModel | None = None,
    *,
    metrics_flag: str = "--metrics",
    n_flag: str = "--n",
    features_flag: str = "--features",
) -> None:
    """Refuse, before any sample is drawn, an evaluation that could not finish.

    For sample metrics (fid, kid, is, pr, aefd): the features of ``n`` samples must fit in the
    memory available now; IS needs class logits, which the bundled Inception network lacks;
    Inception features need its weights installed; ``model`` (when given) must sample. The
    ``*_flag`` names are how the caller spells the option (``eval.metrics`` in a config).
    Raises :class:`~snngen.errors.SnngenError` with one line naming the option.
    """
    from snngen.errors import SnngenError

    sample_metrics = [m for m in metrics if m in GENERATIVE_METRICS]
    if not sample_metrics:
        return
    need = n * FEATURE_BYTES_PER_SAMPLE
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf here
        avail = need
    if need > avail:
        raise SnngenError(
            f"{n_flag} {n}: the features of that many samples need about {need / 1e9:.1f} GB of "
            f"memory; {avail / 1e9:.1f} GB is available"
        )
    if "is" in metrics and features == "inception":
        raise SnngenError(
            f"{metrics_flag} is: the Inception Score ('is') needs class logits, which the "
            f"bundled Inception network does not have; drop 'is' or use {features_flag} "
            "classifier"
        )
    if features == "inception":
        from snngen.metrics.inception import find_inception_weights

        try:
            find_inception_weights()
        except FileNotFoundError as err:
            raise SnngenError(f"{features_flag} inception: {str(err).splitlines()[0]}") from None
    if model is not None and not model.can_sample:
        raise SnngenError(
            f"{metrics_flag}: {sample_metrics} compare samples, but model {model.name!r} cannot "
            "sample; keep only mse"
        )


@torch.no_grad()
def reconstruction_mse(model: GenerativeModel, test_set: Dataset, n: int, batch_size: int) -> dict:
    """Return ``{"value", "n"}``: mean squared error of reconstructions of ``n`` test items."""
    from snngen.metrics import reconstruction_mse as mse

    pairs = [(model.reconstruct(x).cpu(), x) for x in test_batches(test_set, n, batch_size)]
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
    n: int,
    features: str = "classifier",
    seed: int = 0,
    batch_size: int | None = None,
    **sample_options,
) -> dict:
    """Return a JSON-ready dict of the requested metrics of ``model`` against ``test_set``.

    ``sample_options`` (solver, steps, temperature, ...) are passed to ``model.sample``.

    ``mse``: reconstruction error of ``n`` test items (images in [0, 1]); ``fid``, ``kid``,
    ``is``, ``pr``: ``n`` samples against ``n`` test images on the chosen feature network.
    Every entry records its number of samples and feature network.
    """
    model.eval()
    bs = batch_size or cfg.eval.batch_size
    out: dict = {"model": model.name, "dataset": cfg.data.name}
    t0 = time.perf_counter()
    if "mse" in metrics and model.can_reconstruct:
        out["mse"] = reconstruction_mse(model, test_set, n, bs)
    gen_metrics = [m for m in metrics if m in GENERATIVE_METRICS]
    if gen_metrics:
        from snngen.metrics import evaluate as evaluate_samples
        from snngen.metrics import feature_network

        fake = SampleImages(model, n, bs, seed, **sample_options)
        if sample_options:
            out["sample_options"] = dict(sample_options)
        real = torch.cat([_as_images(x) for x in test_batches(test_set, n, bs)])
        net = feature_network(
            features,
            dataset=cfg.data.name,
            root=cfg.data.root,
            channels=real.shape[1],
            image_size=cfg.data.image_size,
        )
        results = evaluate_samples(
            fake,
            real,
            metrics=gen_metrics,
            features=net,
            dataset=cfg.data.name,
            root=cfg.data.root,
            batch_size=bs,
        )
        out.update({k: v.to_dict() for k, v in results.items()})
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def write_metrics(result: dict, path: str | Path) -> Path:
    """Write a metrics dict as pretty JSON; returns the path."""
    from snngen.files import write_text

    return write_text(path, json.dumps(result, indent=2, default=_jsonable))


def _jsonable(value):
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def finish_run(
    run_dir: str | Path,
    model: GenerativeModel,
    cfg: RunConfig,
    test_set: Dataset,
    fixed: Tensor,
    evaluate: bool = True,
) -> dict | None:
    """Write ``recon.png``, ``samples.png`` (events: also ``samples.gif``) and ``metrics.json``."""
    run_dir = Path(run_dir)
    model = model.cpu().eval()
    save_reconstructions(model, fixed.cpu(), run_dir / "recon.png")
    try:
        save_samples(model, 64 if not is_event_batch(fixed) else 8, run_dir / "samples.png")
    except NotImplementedError:
        pass
    if not evaluate:
        return None
    result = evaluate_model(
        model, cfg, test_set, cfg.eval.metrics, cfg.eval.n_samples, cfg.eval.features
    )
    write_metrics(result, run_dir / "metrics.json")
    return result


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
