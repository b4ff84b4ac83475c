"""The Python API: ``snngen.train``, ``load``, ``sample``, ``evaluate`` and ``leaderboard``.

Each function runs the code of its command (``snngen train | sample | eval | leaderboard``):
the command line only parses arguments and prints around the functions here, so a notebook and
a shell give the same run folders, the same samples for a seed and the same metrics. A bad
value raises :class:`~snngen.errors.SnngenError` with the one line the command would print,
naming the keyword argument where the command names its flag (``steps 0: must be ...`` here,
``--steps 0: must be ...`` there); an unknown keyword raises
:class:`~snngen.errors.ArgumentError` (a ``TypeError`` too) naming it.

>>> import snngen
>>> run = snngen.train("configs/sae_mnist5k.yaml", trainer__max_steps=100)   # doctest: +SKIP
>>> model = snngen.load(run.path)                                            # doctest: +SKIP
>>> images = model.sample(16)              # [16, C, H, W] in [0, 1]         # doctest: +SKIP

Importing this module is cheap: torch, Lightning and the models load when a function runs.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snngen import provenance
from snngen.errors import ArgumentError, ConfigError, SnngenError

if typing.TYPE_CHECKING:
    import torch
    from torch import Tensor

    from snngen.models import GenerativeModel
    from snngen.runs import Run

__all__ = ["evaluate", "leaderboard", "load", "sample", "train"]

#: the sampling options ``snngen sample`` / ``snngen eval`` validate (:func:`sample_kwargs`)
CHECKED_SAMPLE_OPTIONS = ("solver", "steps", "temperature", "top_k", "threshold_scale")


# ----------------------------------------------------------------------------- overrides


def format_overrides(
    overrides: Mapping[str, Any] | Sequence[str] | None = None, **kw: Any
) -> list[str]:
    """Return ``key=value`` strings that :func:`snngen.config.apply_overrides` parses back to
    the same values.

    ``overrides``: a mapping ``{"trainer.max_steps": 100}`` or ``key=value`` strings (kept as
    they are); ``kw``: keyword overrides with ``__`` for ``.`` (``trainer__max_steps=100``),
    applied after ``overrides``. Values are written as YAML flow text, so lists, mappings,
    ``None``, booleans, floats (``1e-5``) and strings (``"1"`` stays a string) come back
    identical (numpy numbers become Python ones). A value YAML cannot hold (a tensor, a
    complex number) is a one-line :class:`ConfigError` naming the key.
    """
    out: list[str] = []
    if isinstance(overrides, Mapping):
        out += [_format_override(str(k), v) for k, v in overrides.items()]
    elif overrides is not None:
        if isinstance(overrides, (str, bytes)) or not isinstance(overrides, Iterable):
            raise ConfigError(
                f"overrides {overrides!r}: expected a list of key=value strings or a dict, "
                "e.g. ['trainer.max_steps=100'] or {'trainer.max_steps': 100}")
        for item in overrides:
            if not isinstance(item, str):
                raise ConfigError(f"override {item!r}: expected a key=value string")
            out.append(item)
    out += [_format_override(k.replace("__", "."), v) for k, v in kw.items()]
    return out


def _format_override(key: str, value: Any) -> str:
    import yaml

    try:
        text = yaml.safe_dump(_plain(value), default_flow_style=True, width=math.inf,
                              allow_unicode=True)
    except yaml.YAMLError:
        raise ConfigError(
            f"override {key}: a {type(value).__name__} value cannot be written as YAML; "
            "use numbers, strings, booleans, None, lists or dicts") from None
    text = text.strip()
    if text.endswith("\n..."):  # a plain scalar's document end marker
        text = text[: -len("\n...")].rstrip()
    return f"{key}={text}"


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, paths as strings and numpy numbers as Python ones (what
    YAML's safe dumper writes)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)  # numpy integers too
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- train


@dataclass
class TrainingOutcome:
    """What :func:`run_training` did: the run folder, the end-of-run metrics (rank 0, when
    evaluated; else None) and whether this process is the global rank 0."""

    run_dir: Path
    metrics: dict | None
    is_global_zero: bool


def run_training(
    config: str | os.PathLike | None,
    overrides: list[str] | None = None,
    *,
    resume: str | os.PathLike | None = None,
    evaluate: bool = True,
) -> TrainingOutcome:
    """``snngen train [CONFIG] [overrides] [--resume RUN] [--no-eval]``: check everything
    (:func:`~snngen.preflight.prepare_training`, nothing written on a bad value), write the run
    folder's config (its header: :mod:`snngen.provenance`), train, then write ``recon.png``,
    ``samples.png``, ``curves.png`` and (``evaluate``) ``metrics.json``. Prints what the
    command prints.

    ``config`` None: the config of the ``resume`` run. A resumed run already at its budget
    prints ``already trained N of N steps; nothing to do`` and writes nothing. Ctrl-C raises
    :class:`~snngen.training.TrainingInterrupted` (a KeyboardInterrupt) after writing a
    checkpoint at the step it stopped at.

    Under DDP, Lightning starts the other ranks as copies of this process with
    ``SNNGEN_RUN_DIR`` set (here, by rank 0) and ``LOCAL_RANK`` > 0: they train in rank 0's
    run folder and write nothing of their own.
    """
    from snngen.config import save_config
    from snngen.console import describe_finish
    from snngen.evaluation import finish_run
    from snngen.preflight import describe_training, prepare_training
    from snngen.runs import CONFIG_FILE
    from snngen.training import fit

    child = os.environ.get("SNNGEN_RUN_DIR") and os.environ.get("LOCAL_RANK", "0") != "0"
    plan = prepare_training(  # validates everything; writes nothing
        config,
        overrides,
        resume=resume,
        evaluate=evaluate,
        run_dir=Path(os.environ["SNNGEN_RUN_DIR"]) if child else None,
    )
    cfg, run_dir, fixed = plan.cfg, plan.run_dir, plan.fixed_batch
    if plan.nothing_to_do:  # a finished run resumed at its budget: no step, no file
        print(f"snngen: {plan.nothing_to_do}")
        return TrainingOutcome(Path(run_dir), None, True)
    if not child:
        # what, on what data, how long, where
        print(describe_training(plan, config if config is not None else run_dir / CONFIG_FILE))
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG_FILE, header=provenance.header(
            provenance.collect(_training_device(cfg.trainer.accelerator))))
        os.environ["SNNGEN_RUN_DIR"] = str(run_dir)  # DDP children started by Lightning reuse it
    lit = fit(cfg, run_dir, plan.train_set, plan.info, fixed_batch=fixed, resume=plan.resume,
              model=plan.model)
    inheritance = getattr(lit.model, "inheritance", None)
    if inheritance is not None and lit.trainer.is_global_zero:
        print(f"weights from {lit.cfg.model.init_from}: {inheritance.summary()}")
    # on the training accelerator (Lightning moved the model to the CPU when fit ended); every
    # DDP rank draws its share of the evaluation's samples, rank 0 writes the files
    trainer = lit.trainer
    metrics = finish_run(run_dir, lit.eval_model.to(trainer.strategy.root_device), cfg,
                         plan.test_set, fixed, evaluate=evaluate, rank=trainer.global_rank,
                         world=trainer.world_size)
    if trainer.is_global_zero:
        _write_curves(Path(run_dir))
        print(describe_finish(run_dir, metrics))  # the run folder and the headline metrics
    return TrainingOutcome(Path(run_dir), metrics, bool(trainer.is_global_zero))


def _write_curves(run_dir: Path) -> Path | None:
    """``RUN/curves.png``: the training curves of the run's logs (skipped without matplotlib
    or without logged rows)."""
    from snngen.plots import draw_curves, training_curves

    try:
        curves = training_curves(run_dir)
        return draw_curves(curves, run_dir / "curves.png",
                           f"Training curves: {run_dir.name}") if curves else None
    except SnngenError:  # matplotlib is not installed: the run is complete without it
        return None


def _training_device(accelerator: str) -> str:
    """The device ``trainer.accelerator`` trains on (for the run's provenance)."""
    import torch

    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "cuda" if cuda else "cpu"


def _call(func: str, /, *args: Any, **kw: Any) -> str:
    """``snngen.func(args, kw=...)`` as written, for the provenance of an API call."""
    parts = [repr(os.fspath(a) if isinstance(a, os.PathLike) else a) for a in args]
    parts += [f"{k}={v!r}" for k, v in kw.items()]
    return f"snngen.{func}({', '.join(parts)})"


def train(
    config: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    *,
    resume: str | os.PathLike | None = None,
    evaluate: bool = True,
    **kw: Any,
) -> Run:
    """Train a model from a YAML config, exactly as ``snngen train``; return the opened run.

    ``overrides``: ``{"trainer.max_steps": 100}`` or ``["trainer.max_steps=100"]``; keyword
    overrides use ``__`` for ``.`` (``trainer__max_steps=100``, ``model__channels=[4, 8, 8]``)
    and win over ``overrides``. ``resume``: a run folder to continue exactly (``config`` may
    then be None: the run's own ``config.yaml``; only the keys of
    :data:`~snngen.config.RESUMABLE_KEYS` may change, e.g. a larger ``trainer.max_steps``; a
    run already at its budget trains nothing); ``evaluate=False``: skip the end-of-run
    evaluation (``--no-eval``).

    Returns a :class:`~snngen.runs.Run`: ``.path`` (the run folder), ``.cfg``, ``.info``,
    ``.model`` (:func:`load`'s model, EMA weights where the run keeps them, on the CPU) and
    ``.metrics`` (the ``metrics.json`` dict, or None without the evaluation). Raises
    :class:`~snngen.errors.SnngenError` naming the first bad value (an unknown override key,
    a missing config file or data set) before anything is written, and
    :class:`~snngen.training.TrainingInterrupted` (a ``KeyboardInterrupt``) on Ctrl-C, after
    writing a checkpoint at the step it stopped at.
    """
    from snngen.console import configure_warnings

    if config is not None:
        _check_path("config", config, "the path of a YAML run config")
    if resume is not None:
        _check_path("resume", resume, "a run folder to continue")
    args = format_overrides(overrides, **kw)
    configure_warnings()  # Lightning's framework warnings, as the command (unless verbose)
    call = _call("train", config, overrides, resume=resume, evaluate=evaluate, **kw)
    with provenance.invocation(call):
        outcome = run_training(config, args, resume=resume, evaluate=evaluate)
    run = open_run(outcome.run_dir)
    run.metrics = outcome.metrics
    return run


# ----------------------------------------------------------------------------- load




def open_run(
    run_dir: str | os.PathLike, device: str | torch.device | None = "cpu", *, ema: bool = True
) -> Run:
    """Open a run folder (:func:`~snngen.runs.load_run`) onto ``device`` (``auto``, ``cpu``,
    ``cuda``, ``cuda:N``), its training set attached for Analytic-DPM, its model bound to it
    (``model.run``; ``model.sample`` checks its options as the command line does)."""
    import torch

    from snngen.devices import API_NAMES, resolve_device
    from snngen.runs import attach_training_set, load_run

    dev = (device if isinstance(device, torch.device) or device is None
           else resolve_device(device, API_NAMES))
    run = load_run(_run_path(run_dir), ema=ema)
    if dev is not None:
        run.model.to(dev)
    attach_training_set(run)
    _bind(run)
    return run


def load(run_dir: str | os.PathLike, *, device: str = "cpu", ema: bool = True) -> GenerativeModel:
    """Return the trained model of a run folder, in eval mode, on ``device``.

    ``ema``: the EMA copy of the weights where the run keeps one (as ``snngen sample`` and
    ``snngen eval`` use), else the trained weights. The model has its :class:`~snngen.runs.Run`
    as ``model.run`` (config, data info, checkpoint metadata; not a submodule, the state dict
    is the checkpoint's), and a diffusion model its training set for Analytic-DPM.

    ``model.sample(n, *, generator=None, **options)`` returns images ``[n, C, H, W]`` in
    [0, 1] (event models: counts ``[T, n, 2, H, W]``); diffusion models take ``solver``
    (``ddpm`` | ``ddim`` | ``analytic-dpm`` | ``dpm-solver``), ``steps`` and
    ``threshold_scale``, priors ``temperature`` and ``top_k``. These are checked as
    ``snngen sample`` checks them. Raises :class:`~snngen.errors.SnngenError` if ``run_dir``
    is not a run folder or its checkpoint does not fit.
    """
    return open_run(run_dir, device, ema=ema).model


class _CheckedSample:
    """``model.sample`` of a loaded model: the options ``snngen sample`` takes are checked with
    :func:`~snngen.evaluation.sample_kwargs` (one-line errors), the rest passed on as they are.
    A plain object (not a closure), so the model still pickles and deep-copies."""

    def __init__(self, model: GenerativeModel) -> None:
        self.model = model
        bound = type(model).sample.__get__(model)
        self.__signature__ = inspect.signature(bound)
        self.__doc__ = bound.__doc__

    def __call__(self, n: int, **options: Any) -> Tensor:
        from snngen.evaluation import sample_kwargs

        _check_whole("n", n)
        checked = {k: options.pop(k) for k in CHECKED_SAMPLE_OPTIONS if k in options}
        options.update(sample_kwargs(self.model, True, **checked))
        return type(self.model).sample(self.model, n, **options)


def _bind(run: Run) -> None:
    model = run.model
    object.__setattr__(model, "run", run)  # a plain attribute: Run is no nn.Module
    if model.can_sample:
        object.__setattr__(model, "sample", _CheckedSample(model))


# ----------------------------------------------------------------------------- sample


def sample(
    model_or_run_dir: GenerativeModel | Run | str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = False,
    **options: Any,
) -> Tensor:
    """Draw ``n`` samples as ``snngen sample`` does: the same images for the same ``seed``
    (shards of 1,000, each from its own generator seeded from ``(seed, shard)``, on the model's
    device), drawn ``batch_size`` at a time.

    ``model_or_run_dir``: a run folder, a :class:`~snngen.runs.Run` or a model; ``device``:
    where to sample (``auto``, ``cpu``, ``cuda[:N]``; default: a run folder on the CPU, a model
    where it is); ``options``: ``solver``, ``steps``, ``threshold_scale`` (diffusion),
    ``temperature``, ``top_k`` (priors), checked as the command checks them. Returns a CPU
    tensor: images ``[n, C, H, W]`` in [0, 1] (event models: counts ``[T, n, 2, H, W]``).
    """
    from snngen.evaluation import generate, require_sampling, sample_kwargs

    _check_keywords(sample, options)
    _check_whole("n", n)
    _check_whole("batch_size", batch_size)
    _check_seed(seed)
    run, model = _open_model(model_or_run_dir, device)
    require_sampling(model, run.path if run is not None else "snngen.sample")
    kwargs = sample_kwargs(model, True, **options)
    return generate(model, n, batch_size, seed=seed, progress=progress, **kwargs)


# ----------------------------------------------------------------------------- evaluate


def check_metrics(metrics: str | Sequence[str], name: str = "--metrics") -> list[str]:
    """The metric names of ``--metrics`` (a comma list or a list); a one-line
    :class:`SnngenError` for an unknown one or none, naming the option as ``name``."""
    from snngen.evaluation import METRICS

    if not isinstance(metrics, (str, Iterable)):
        raise SnngenError(f"{name} {metrics!r}: expected metric names, e.g. 'mse,fid'")
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = [str(m).strip() for m in items if str(m).strip()]
    known = set(METRICS)
    bad = [m for m in names if m not in known]
    if bad or not names:
        raise SnngenError(f"{name}: unknown {bad or names}; choose from {sorted(known)}")
    return names


def evaluate_run(
    run: Run,
    metrics: list[str] | None,
    device: torch.device | None = None,
    *,
    protocol: str | None = None,
    n: int | None = None,
    features: str | None = None,
    ref_stats: str | os.PathLike | None = None,
    inception_logits: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    out: str | os.PathLike | None = None,
    devices: int = 1,
    shard_size: int | None = None,
    fresh: bool = False,
    sample_options: dict | None = None,
    keywords: bool = False,
) -> dict:
    """``snngen eval RUN`` on an opened run (after its ``--metrics`` and ``--device`` checks):
    check the request (``metrics`` None: the run's configured ones,
    :func:`~snngen.evaluation.configured_metrics`; each must apply to the model), move the
    model to ``device`` (None: leave it), evaluate with the samples kept in
    ``RUN/samples/<protocol>[/<sampler>]/``, merge the result into ``out`` (default
    ``RUN/metrics.json``; earlier results are kept, :mod:`snngen.results`) and return it.
    Messages name the options as the command's flags, or with ``keywords`` as
    :func:`evaluate`'s keyword arguments."""
    from snngen.evaluation import (
        SampleFolder,
        check_evaluation_request,
        configured_metrics,
        evaluate_model,
        sample_kwargs,
        write_metrics,
    )
    from snngen.files import check_writable_folder
    from snngen.metrics.plan import CLI_FLAGS
    from snngen.results import read_metrics_file
    from snngen.runs import attach_training_set, open_datasets

    names = {**CLI_FLAGS, "out": "--out"}
    if keywords:
        names = {key: key for key in names}
    if metrics is None:
        metrics = configured_metrics(run.cfg, run.model)
    protocol = protocol or run.cfg.eval.protocol
    check_evaluation_request(metrics, n, features, run.model, protocol=protocol,
                             dataset=run.cfg.data.name, ref_stats=ref_stats,
                             inception_logits=inception_logits, metrics_flag=names["metrics"],
                             n_flag=names["n"], features_flag=names["features"], flags=names)
    kwargs = sample_kwargs(run.model, keywords, **(sample_options or {}))
    out = Path(out) if out else run.path / "metrics.json"
    check_writable_folder(out.parent, 1_000_000, what=names["out"])
    read_metrics_file(out)  # an unreadable earlier file is refused now, not after the work
    if device is not None:
        run.model.to(device)
    _, test_set = open_datasets(run.cfg)
    attach_training_set(run)
    batch_size = batch_size or run.cfg.eval.batch_size
    result = evaluate_model(
        run.model, run.cfg, test_set, metrics, n, features, seed=seed,
        batch_size=batch_size, samples=SampleFolder(
            run.path, devices, shard_size or run.cfg.eval.shard_size, fresh),
        protocol=protocol, ref_stats=ref_stats, inception_logits=inception_logits,
        **kwargs,
    )
    write_metrics(result, out)
    return result


def evaluate(
    model_or_run_dir: GenerativeModel | Run | str | os.PathLike,
    metrics: str | Sequence[str] | None = None,
    *,
    protocol: str | None = None,
    n: int | None = None,
    features: str | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    out: str | os.PathLike | None = None,
    ref_stats: str | os.PathLike | None = None,
    inception_logits: str | os.PathLike | None = None,
    device: str | None = None,
    devices: int = 1,
    shard_size: int | None = None,
    fresh: bool = False,
    **sample_options: Any,
) -> dict:
    """Evaluate a trained model exactly as ``snngen eval``; return the metrics dict, also
    written to ``out`` (default ``RUN/metrics.json``, as the command).

    ``model_or_run_dir``: a run folder, a :class:`~snngen.runs.Run`, or a model from
    :func:`load` (whose run folder keeps the samples). ``metrics``: names or a comma list of
    ``mse, fid, kid, is, pr, aefd`` (default: the run's ``eval.metrics``; one that does not
    apply to the model is refused); ``protocol``: ``snngen`` |
    ``sddpm`` | ``fsvae`` | ``tts_vqvae`` (default: the run's ``eval.protocol``), which fixes the
    feature network, resize, sample count and reference split; ``n``: samples (default: the
    protocol's); ``features``: ``classifier`` | ``inception`` (snngen protocol); ``seed``,
    ``batch_size``, ``ref_stats``, ``inception_logits``, ``devices``, ``shard_size``,
    ``fresh``: as the command's options; ``device``: where to evaluate (default: a run folder
    as the command, ``auto``; a model where it is). ``sample_options``: ``solver``, ``steps``,
    ``temperature``. The samples are kept as shards in ``RUN/samples/<protocol>/`` (with
    sampler options ``RUN/samples/<protocol>/<sampler>/``, e.g. ``ddim-50``): the same call
    again reuses them. The result is merged into ``out``, every earlier result kept
    (:mod:`snngen.results`). Raises :class:`~snngen.errors.SnngenError` naming a bad value.
    """
    from snngen.devices import API_NAMES, check_devices

    _check_keywords(evaluate, sample_options)
    names = None if metrics is None else check_metrics(metrics, "metrics")
    _check_whole("devices", devices)
    for key, value in (("n", n), ("batch_size", batch_size), ("shard_size", shard_size)):
        if value is not None:
            _check_whole(key, value)
    _check_seed(seed)
    is_path = isinstance(model_or_run_dir, (str, os.PathLike))
    dev = (check_devices(device or "auto", devices, API_NAMES)
           if device is not None or is_path else None)
    run = _require_run(_open_model(model_or_run_dir, None)[0])
    call = _call("evaluate", run.path, metrics, n=n, protocol=protocol, seed=seed,
                 **sample_options)
    with provenance.invocation(call):
        return evaluate_run(
            run, names, dev, protocol=protocol, n=n, features=features, ref_stats=ref_stats,
            inception_logits=inception_logits, seed=seed, batch_size=batch_size, out=out,
            devices=devices, shard_size=shard_size, fresh=fresh, sample_options=sample_options,
            keywords=True,
        )


# ----------------------------------------------------------------------------- plot


def plot(
    run_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    layers: Sequence[str] | None = None,
    n: int = 8,
    chain: int = 4,
    seed: int = 0,
    only: Sequence[str] | None = None,
    device: str = "cpu",
    keywords: bool = True,
    **sample_options: Any,
) -> list[Path]:
    """``snngen plot RUN``: the pictures of :mod:`snngen.plots` that apply to a run, written into
    ``out`` (default ``RUN/plots/``); returns their paths. ``n``: test items to measure activity
    on (as ``snngen info --batch``); ``layers``: spiking layers for the raster and membrane
    pictures (default: a few across the network); ``chain``: samples in the denoising chain;
    ``only``: some of ``rates, raster, membrane, chain, codebook, curves``; ``sample_options``
    (``solver``, ``steps``) are checked as ``snngen sample`` checks them. A bad value is a
    one-line error naming the keyword argument (``keywords=False``: the command's flag, as
    ``snngen plot`` reports it)."""
    from snngen.evaluation import sample_kwargs, test_batches
    from snngen.files import check_writable_folder
    from snngen.plots import PICTURES, choose_layers, plot_model, style
    from snngen.runs import open_datasets

    def name(key: str) -> str:
        return f"{key}=" if keywords else f"--{key} "

    which = list(PICTURES if only is None else only)
    bad = [w for w in which if w not in PICTURES]
    if bad or not which:
        raise SnngenError(f"{name('only')}{','.join(bad or which)}: choose from "
                          f"{', '.join(PICTURES)}")
    for key, value in (("n", n), ("chain", chain)):
        _check_whole(key, value)
    _check_seed(seed)
    style()  # matplotlib present, before any work
    run = open_run(run_dir, device)
    layers = None if layers is None else choose_layers(run.model, list(layers),
                                                       what=name("layers").strip())
    opts = sample_kwargs(run.model, keywords, **sample_options)
    folder = Path(out) if out is not None else run.path / "plots"
    check_writable_folder(folder, 5_000_000, what=name("out").strip().rstrip("="))
    _, test_set = open_datasets(run.cfg)
    x = next(test_batches(test_set, n, n))
    items = x.shape[1] if run.info.events else x.shape[0]
    return plot_model(run.model, x, folder, layers=layers, run_dir=run.path, chain_n=chain,
                      seed=seed, which=which, n=items, **opts)


# ----------------------------------------------------------------------------- leaderboard


def leaderboard(**kwargs: Any) -> Any:
    """``snngen leaderboard``: the same table from Python; ``kwargs`` are the keyword
    arguments of :func:`snngen.board.run_leaderboard` (the command's options)."""
    from snngen.board import run_leaderboard

    return run_leaderboard(**kwargs)


# ----------------------------------------------------------------------------- helpers


def _run_path(run_dir: Any) -> Path:
    if not isinstance(run_dir, (str, os.PathLike)):
        raise SnngenError(f"expected a run folder (a path), a Run or a loaded model, got "
                          f"{type(run_dir).__name__}")
    return Path(run_dir)


def _open_model(source: Any, device: str | None) -> tuple[Run | None, GenerativeModel]:
    """``(run, model)`` of a run folder (opened on ``device``, default the CPU), a Run or a
    model (moved to ``device`` when given). A model without a run has run None."""
    import torch

    from snngen.runs import Run

    if isinstance(source, Run):
        run, model = source, source.model
    elif isinstance(source, torch.nn.Module):
        run, model = getattr(source, "run", None), source
    else:
        run = open_run(_run_path(source), device or "cpu")
        return run, run.model
    if device is not None:
        from snngen.devices import API_NAMES, resolve_device

        model.to(resolve_device(device, API_NAMES))
    return run, model


def _require_run(run: Run | None) -> Run:
    if run is None:
        raise SnngenError("this model has no run folder; pass a run folder or a model from "
                          "snngen.load(RUN)")
    return run


def _check_keywords(function: Any, options: Mapping[str, Any]) -> None:
    """Refuse keyword arguments of ``function`` (:func:`sample`, :func:`evaluate`) that are
    neither its parameters nor sampling options (:data:`CHECKED_SAMPLE_OPTIONS`): one line
    naming the keyword, the closest valid one, and the sampling options."""
    import difflib

    unknown = [key for key in options if key not in CHECKED_SAMPLE_OPTIONS]
    if not unknown:
        return
    valid = [p for p in inspect.signature(function).parameters
             if p not in ("model_or_run_dir", "options", "sample_options")]
    close = difflib.get_close_matches(unknown[0], [*valid, *CHECKED_SAMPLE_OPTIONS], n=1)
    hint = f"; did you mean {close[0]}=?" if close else ""
    if unknown[0] == "out" and function is sample:  # the command's --out writes files
        hint = "; it returns the samples: snngen.viz.save_grid(samples, path) writes a PNG"
    raise ArgumentError(
        f"snngen.{function.__name__}() got an unexpected keyword argument {unknown[0]!r}{hint} "
        f"(its keywords: {', '.join(valid)}; sampling options: "
        f"{', '.join(CHECKED_SAMPLE_OPTIONS)})"
    )


def _check_path(name: str, value: Any, what: str) -> None:
    if not isinstance(value, (str, os.PathLike)):
        raise ArgumentError(f"{name} {value!r}: expected {what} (a str or a path)")


def _check_whole(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise SnngenError(f"{name} {value!r}: must be a whole number >= 1")


def _check_seed(seed: Any) -> None:
    if (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
            or not 0 <= seed < 2**63):
        raise SnngenError(f"seed {seed!r}: must be a whole number in [0, 2**63)")

