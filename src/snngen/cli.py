"""The ``snngen`` command line: train, sample, eval, info, and small helpers.

Every command has ``--help`` with an example. A user error (missing file, bad key, a folder that
is not a run, a checkpoint of another model, ``--n 0``) prints one line and exits with status 2,
writing nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import typing
from pathlib import Path

from snngen.config import RESUMABLE_KEYS
from snngen.errors import SnngenError

if typing.TYPE_CHECKING:
    pass
from snngen.importers.run_folder import FAMILY_MODELS

EPILOG_TRAIN = """examples:
  snngen train configs/sae_mnist5k.yaml
  snngen train configs/fsvae_mnist.yaml trainer.max_epochs=5 data.batch_size=128
  snngen train configs/sae_mnist5k.yaml --no-eval trainer.max_steps=100
  snngen train --resume runs/sae_mnist5k                    (continue: the run's own config)
  snngen train --resume runs/sae_mnist5k trainer.max_steps=2000    (train on to step 2000)
  snngen train configs/sae_mnist5k.yaml trainer.devices=2 trainer.strategy=ddp
""" + textwrap.fill(
    "key=value overrides may stand anywhere on the line. --resume continues a run exactly "
    "(data order, optimiser, RNG); a run already at its budget has nothing to do. On resume "
    "only these may change: " + ", ".join(k + "*" if k.endswith(".") else k
                                          for k in RESUMABLE_KEYS)
    + "; any other key (data.batch_size, optim.lr, trainer.seed, the model, ...) is refused: "
    "start a new run for it. name, out_dir and model.init_from stay the run's. Ctrl-C "
    "finishes the running step, writes a checkpoint there and says how to continue (exit "
    "130); a second Ctrl-C stops at once.", width=79) + "\n"
EPILOG_SAMPLE = """examples:
  snngen sample runs/sae_mnist5k --n 64 --out samples.png
  snngen sample runs/ddpm_mnist5k --n 16 --solver dpm-solver --steps 20 --out dpm20.png
  snngen sample runs/sae_mnist5k --n 50000 --batch-size 500 --out samples/   (one PNG each)
  snngen sample runs/sae_mnist5k --n 50000 --out samples.npy                 (one array)
  snngen sample runs/ddpm_mnist5k --n 64 --device cuda:1
"""
EPILOG_EVAL = """examples:
  snngen eval runs/sae_mnist5k --metrics fid,kid,is,pr --n 1000
  snngen eval runs/fsvae_mnist5k --metrics mse,fid --features inception --out eval.json
  snngen eval runs/sddpm_cifar10 --protocol sddpm --metrics fid --ref-stats train_stats.npz
  snngen eval runs/fsvae_cifar10 --protocol fsvae --metrics fid,is --inception-logits pt.pth
  snngen eval runs/sddpm_cifar10 --protocol sddpm --device cuda --devices 4   (4 GPUs)
samples go to RUN/samples/<protocol>/ in shards (with --solver/--steps: a folder of their own,
e.g. RUN/samples/snngen/ddim-50/); run the same command again to resume. The result is merged
into RUN/metrics.json: every protocol's and sampler's results are kept under "results"
"""
EPILOG_PLOT = """examples:
  snngen plot runs/quickstart_mnist5k
  snngen plot runs/sae_mnist5k --layers encoder.2,decoder.2 --n 16
  snngen plot runs/sddpm_mnist5k_small --only chain --solver dpm-solver --steps 20 --chain 6
  snngen plot runs/vqvae_vanilla_mnist5k_small --only codebook,curves --out /tmp/vq_plots
writes PNGs into RUN/plots/ (firing_rates, raster, membrane, denoising_chain, codebook, curves:
those that apply to the model) and prints their paths; activity is measured as 'snngen info'
measures it (a reconstruction of --n test items, or sampling for a model without one)
"""
EPILOG_INFO = """examples:
  snngen info runs/sae_mnist5k
  snngen info runs/sae_mnist5k --batch 16 --json info.json
  snngen info runs/fsvae_mnist --batch 250 --count original   # FSVAE's cost as the original counts
the run's provenance (snngen version, git commit, torch, device, command) is shown below the
table: from config.yaml's header (training) and metrics.json (the newest evaluation)
"""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def seed_int(text: str) -> int:
    """argparse type: a generator seed, a whole number in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**63), got {value}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (then exit status 2)."""

    def error(self, message: str) -> typing.NoReturn:
        first = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {first} (see '{self.prog} --help')\n")


class IntermixedParser(OneLineParser):
    """A command's parser whose positionals (``key=value`` overrides) may stand before, between
    or after its options: ``snngen train CFG --no-eval trainer.max_steps=2`` (argparse's
    intermixed parsing, also when the command is parsed as a sub-command)."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing or self._subparsers is not None:
            # the intermixed parse's own two passes; a command group (``snngen datasets
            # download``) leaves the rest of the line to its sub-command's parser
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
EPILOG_IMPORT = """examples:
  snngen import sddpm ckpt.pt --config configs/sddpm_cifar10.yaml --out runs/sddpm_original
  snngen import sdm tsm.pt --config configs/sdm_tsm_cifar10.yaml --out runs/sdm_original
  snngen import fsvae checkpoint/CelebA/best.pth --config configs/fsvae_celeba.yaml --out runs/fs
  snngen import tts-vqvae last.ckpt --config configs/vqvae_celeba.yaml --out runs/tts_stage1
  snngen import sddpm ckpt.pt --config configs/sddpm_cifar10.yaml --out runs/raw --no-ema
  snngen import sddpm t8.pt --config configs/sddpm_cifar10.yaml --out runs/t8 model.timesteps=8
then: snngen sample runs/sddpm_original --n 64 --solver ddim --steps 50

The checkpoint is loaded as data only (weights_only); its weights must fit the config's model
key by key (the first missing or mis-shaped key is named). Families: sae (snnTorch tutorial),
fsvae and ann-vae (kamata1729/FullySpikingVAE), sddpm (AndyCao1125/SDDPM), sdm (AndyCao1125/SDM,
TSM), tts-vqvae and tts-prior (Brain-Cog-Lab/tts_vqvae; import the stage-1 run first and name it
in the prior's config).
"""


EPILOG_LEADERBOARD = """examples:
  snngen leaderboard                          # 5 CPU-minutes per model, 2-2.5 h on 2 cores
  snngen leaderboard --budget-minutes 15      # a longer budget, its own board folder
  snngen leaderboard --quick                  # a smoke test of the whole pipeline (minutes)
  snngen leaderboard --rows sddpm,sdm --jobs 2
  snngen leaderboard --budget-minutes 20 --rows fsvae,ddpm --inception-samples 0
  snngen leaderboard --rows fsvae,my_model.yaml   # your own model's config as a row
run from the repository root; writes docs/leaderboard.md (+ .json) and docs/img/*.png; an
interrupted board resumes: finished stages are not retrained, measured rows not remeasured
"""
#: the leaderboard's row keys (kept here so that --help does not import torch)
LEADERBOARD_ROWS = ("sae, fsvae, ann_vae, vq_temporal, vq_vanilla, sddpm, sdm, ddpm, "
                    "ddpm_converted")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def add_device_options(p: argparse.ArgumentParser, *, shards: bool) -> None:
    """``--device`` (and with ``shards``: ``--devices``, ``--shard-size``, ``--fresh``)."""
    p.add_argument("--device", default="auto",
                   help="auto (a GPU when present), cpu, cuda or cuda:N (default auto)")
    if not shards:
        return
    p.add_argument("--devices", type=positive_int, default=1,
                   help="processes drawing the samples' shards: GPUs 0..N-1 with a GPU "
                   "--device, else CPU processes (default 1); the samples do not change")
    p.add_argument("--shard-size", type=positive_int, default=None,
                   help="samples per shard file in RUN/samples/<protocol>[/<sampler>]/ "
                   "(default: the "
                   "config's eval.shard_size, 1000); an interrupted eval resumes from the "
                   "shards it finished")
    p.add_argument("--fresh", action="store_true",
                   help="delete this request's saved shards (its protocol and sampler only) "
                   "and draw its samples again")


EPILOG_DATASETS = """examples:
  snngen datasets                                   # every dataset; which can be downloaded
  snngen datasets download cifar10 --root data      # fetch, check md5, unpack into data/
  snngen datasets download mnist --mirror http://intranet/mnist/   # the published names there
  snngen datasets verify celeba --root data         # check files placed by hand
a cut or Ctrl-C keeps DATA/.snngen/downloads/NAME/FILE.part: the same command resumes it;
SNNGEN_DATA_MIRROR=URL (space-separated, {name} = the dataset) replaces the published URLs
"""


def add_datasets_parser(sub, fmt) -> None:
    """``snngen datasets [download NAME | verify NAME]``."""
    p = sub.add_parser("datasets", help="list the datasets; download or verify one",
                       epilog=EPILOG_DATASETS, formatter_class=fmt)
    actions = p.add_subparsers(dest="datasets_action", metavar="ACTION")
    q = actions.add_parser("download", help="fetch a dataset's published files, check, unpack",
                           epilog=EPILOG_DATASETS, formatter_class=fmt)
    q.add_argument("name", help="dataset name (see 'snngen datasets')")
    q.add_argument("--root", default=None, metavar="DIR",
                   help="data root (default $SNNGEN_DATA, else ./data)")
    q.add_argument("--mirror", action="append", default=None, metavar="URL",
                   help="base URL serving the published file names, tried instead of the "
                   "published URLs (repeat for several, in order; default $SNNGEN_DATA_MIRROR)")
    q = actions.add_parser("verify", help="check placed files against the published checksums",
                           epilog=EPILOG_DATASETS, formatter_class=fmt)
    q.add_argument("name", help="dataset name (see 'snngen datasets')")
    q.add_argument("--root", default=None, metavar="DIR",
                   help="data root (default $SNNGEN_DATA, else ./data)")
    for q in actions.choices.values():
        q.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show Lightning's own messages (see 'snngen --help')")


def _add_train_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    """``snngen train``: its arguments, help and examples."""
    p = sub.add_parser(
        "train", help="train a model from a YAML config", epilog=EPILOG_TRAIN, formatter_class=fmt
    )
    p.add_argument("config", nargs="?", default=None,
                   help="YAML run config (see configs/); with --resume it may be left out: "
                   "the run's own config.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=100")
    p.add_argument("--resume", metavar="RUN",
                   help="continue the run in this folder exactly, up to its (or a larger) budget")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")


def _add_sample_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    """``snngen sample``: its arguments, help and examples."""
    p = sub.add_parser(
        "sample", help="draw samples from a trained run", epilog=EPILOG_SAMPLE, formatter_class=fmt
    )
    p.add_argument("run", help="run folder")
    p.add_argument("--n", type=positive_int, default=64, help="number of samples (default 64)")
    p.add_argument(
        "--out",
        default=None,
        help="FILE.png grid (default RUN/samples/sample-<sampler>-n<N>-seed<S>.png, never "
        "training's samples.png; at most 4096 samples), FOLDER/ (one PNG per sample) or "
        "FILE.npy (float32 array); the last two as large as the disk allows",
    )
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="samples drawn at once (default 64): memory use, not the result")
    p.add_argument("--seed", type=seed_int, default=0, help="generator seed (default 0)")
    p.add_argument(
        "--solver", default=None, help="diffusion sampler: ddpm|ddim|analytic-dpm|dpm-solver"
    )
    p.add_argument("--steps", type=positive_int, default=None, help="sampler steps (diffusion)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature >= 0 (priors; 0: most likely token)")
    p.add_argument("--top-k", type=positive_int, default=None, help="top-k sampling (priors)")
    p.add_argument(
        "--threshold-scale",
        type=float,
        default=None,
        help="threshold-guided sampling: scale every neuron threshold, > 0 (spiking diffusion)",
    )
    add_device_options(p, shards=False)


def _add_eval_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    """``snngen eval``: its arguments, help and examples."""
    p = sub.add_parser(
        "eval", help="evaluate a trained run", epilog=EPILOG_EVAL, formatter_class=fmt
    )
    p.add_argument("run", help="run folder")
    p.add_argument(
        "--metrics",
        default=None,
        help="comma list of mse,fid,kid,is,pr,aefd (aefd: FSVAE's autoencoder FD; default: "
        "the run's eval.metrics)",
    )
    p.add_argument("--n", type=positive_int, default=None,
                   help="number of samples (default: the protocol's, e.g. 1000 for snngen)")
    p.add_argument(
        "--features",
        default=None,
        choices=["classifier", "inception"],
        help="feature network of the snngen protocol (default: its classifier where the "
        "dataset has one, else inception); the paper protocols fix Inception",
    )
    p.add_argument("--protocol", default=None,
                   choices=["snngen", "leaderboard", "sddpm", "fsvae", "tts_vqvae"],
                   help="metric protocol: feature network, resize, sample count, reference split "
                   "(default: the run's eval.protocol)")
    p.add_argument("--ref-stats", default=None, metavar="FILE",
                   help="FID against this pytorch-fid / clean-fid statistics .npz (mu, sigma)")
    p.add_argument("--inception-logits", default=None, metavar="FILE",
                   help="Inception logits state dict (fc.weight [1008, 2048]) for IS on Inception "
                   "features (default $SNNGEN_INCEPTION_LOGITS)")
    p.add_argument("--seed", type=seed_int, default=0, help="generator seed (default 0)")
    p.add_argument("--out", default=None,
                   help="JSON file the result is merged into, earlier results kept (default "
                   "RUN/metrics.json)")
    p.add_argument(
        "--solver", default=None, help="diffusion sampler: ddpm|ddim|analytic-dpm|dpm-solver"
    )
    p.add_argument("--steps", type=positive_int, default=None, help="sampler steps (diffusion)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature >= 0 (priors)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="samples drawn at once (default: the config's eval.batch_size)")
    add_device_options(p, shards=True)


def _add_info_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    """``snngen info``: its arguments, help and examples."""
    p = sub.add_parser(
        "info",
        help="parameters, firing rates, SOPs, MACs, energy of a run",
        epilog=EPILOG_INFO,
        formatter_class=fmt,
    )
    p.add_argument("run", help="run folder")
    p.add_argument("--batch", type=positive_int, default=8, help="test images to measure on")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    p.add_argument("--count", choices=["original"], default=None,
                   help="FSVAE: also count additions/multiplications as the original code does")


def _add_plot_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    """``snngen plot``: its arguments, help and examples."""
    p = sub.add_parser(
        "plot",
        help="pictures of a run: firing rates, spike rasters, membranes, chains, curves",
        epilog=EPILOG_PLOT,
        formatter_class=fmt,
    )
    p.add_argument("run", help="run folder")
    p.add_argument("--layers", default=None,
                   help="comma list of spiking layers for the raster and membrane pictures "
                   "(default: 4 across the network; 'snngen info RUN' lists them)")
    p.add_argument("--n", type=positive_int, default=8,
                   help="test items to measure activity on (default 8, as 'snngen info')")
    p.add_argument("--chain", type=positive_int, default=4,
                   help="samples in the denoising chain (diffusion; default 4)")
    p.add_argument("--solver", default=None,
                   help="diffusion sampler of the chain: ddpm|ddim|analytic-dpm|dpm-solver")
    p.add_argument("--steps", type=positive_int, default=None, help="sampler steps (diffusion)")
    p.add_argument("--seed", type=seed_int, default=0, help="generator seed (default 0)")
    p.add_argument("--only", default=None,
                   help="comma list of rates,raster,membrane,chain,codebook,curves")
    p.add_argument("--out", default=None, help="folder for the PNGs (default RUN/plots/)")


def _add_import_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    """``snngen import``: its arguments, help and examples."""
    p = sub.add_parser(
        "import",
        help="turn an original system's checkpoint into a run folder",
        epilog=EPILOG_IMPORT,
        formatter_class=fmt,
    )
    p.add_argument("family", choices=list(FAMILY_MODELS),
                   help="which original wrote the checkpoint")
    p.add_argument("checkpoint", help="the original's checkpoint file")
    p.add_argument("--config", required=True, help="snngen YAML config describing its network")
    p.add_argument("--out", required=True, metavar="RUN", help="new run folder to write")
    p.add_argument("--no-ema", action="store_true",
                   help="take the trained weights, not the original's EMA copy")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")


def _add_leaderboard_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    """``snngen leaderboard``: its arguments, help and examples."""
    p = sub.add_parser(
        "leaderboard",
        help="train every model family at one CPU budget on mnist5k, measure, tabulate",
        epilog=EPILOG_LEADERBOARD,
        formatter_class=fmt,
    )
    p.add_argument("--budget-minutes", type=positive_float, default=None,
                   help="training CPU-minutes per model, one thread each (default 5: the whole "
                   "board takes 2-2.5 h on 2 cores, under 1.5 h without Inception FID; "
                   "docs/leaderboard.md)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test: 3 CPU-seconds per model, 100 samples, no Inception "
                   "(writes into the board folder, not docs/)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="board folder (default runs/leaderboard/mnist5k_<budget>min): runs, "
                   "per-row results, logs; run the same command again to resume")
    p.add_argument("--doc", default="docs/leaderboard.md",
                   help="Markdown page to write (default docs/leaderboard.md; JSON beside it)")
    p.add_argument("--img-dir", default="docs/img", help="folder of the three pictures")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="processes at once, one thread each (default: the CPU count)")
    p.add_argument("--rows", default=None,
                   help="comma list of rows to run (default all): " + LEADERBOARD_ROWS
                   + ", or a config file (.yaml) for a row of your own model")
    p.add_argument("--remeasure", action="store_true",
                   help="measure every row again (trained stages are kept)")
    p.add_argument("--inception-samples", type=int, default=None, metavar="N",
                   help="samples per row scored for Inception FID (default 1000; 0 skips the "
                   "column, about 4 CPU-minutes per row)")


def _add_models_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    """``snngen models``: lists snngen's models and those of installed packages."""
    sub.add_parser(
        "models", help="list the models", epilog="examples:\n  snngen models", formatter_class=fmt
    )


def _add_classifier_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    """``snngen classifier``: its arguments, help and examples."""
    p = sub.add_parser(
        "classifier",
        help="train (or show) the in-package feature classifier",
        epilog="examples:\n  snngen classifier mnist5k",
        formatter_class=fmt,
    )
    p.add_argument("dataset", help="dataset name, e.g. mnist5k")
    p.add_argument("--root", default=None, help="data root for datasets that need one")


COMMAND_PARSERS = (
    _add_train_parser, _add_sample_parser, _add_eval_parser, _add_info_parser,
    _add_plot_parser, _add_import_parser, _add_leaderboard_parser, add_datasets_parser,
    _add_models_parser, _add_classifier_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``snngen`` command."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = OneLineParser(
        prog="snngen",
        description="Spiking-neural-network generative models: train, sample, evaluate.",
        epilog="run 'snngen COMMAND --help' for a command's options and examples",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show Lightning's own messages: its banners (GPU/TPU "
                        "available, tips), logs and framework warnings (the same: "
                        "SNNGEN_VERBOSE=1); also accepted after the command")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=IntermixedParser)

    for add in COMMAND_PARSERS:  # one function per command, in the order --help lists them
        add(sub, fmt)
    for command in sub.choices.values():  # `snngen train ... --verbose` works too
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="show Lightning's own messages (see 'snngen --help')")
    return parser




# ----------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from snngen.api import run_training

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).is_file():
        config, overrides = None, [config, *overrides]  # `--resume RUN key=value`: no config
    run_training(config, overrides, resume=args.resume, evaluate=not args.no_eval)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from snngen.api import open_run
    from snngen.devices import resolve_device
    from snngen.evaluation import require_sampling, sample_batches, sample_kwargs
    from snngen.sample_files import default_sample_output, plan_sample_output, write_sample_batches

    run = open_run(args.run, resolve_device(args.device))
    require_sampling(run.model, run.path)
    kwargs = sample_kwargs(
        run.model,
        solver=args.solver,
        steps=args.steps,
        temperature=args.temperature,
        top_k=args.top_k,
        threshold_scale=args.threshold_scale,
    )
    out = args.out or default_sample_output(run.path, args.n, args.seed, kwargs)
    output = plan_sample_output(out, args.n, _values_per_sample(run.info), run.info.events)
    batches = sample_batches(run.model, args.n, args.batch_size, seed=args.seed, **kwargs)
    for path in write_sample_batches(batches, output):
        print(path)
    return 0


def _values_per_sample(info) -> int:
    if info.events:
        return (info.time_bins or 1) * 2 * info.image_size**2
    return info.channels * info.image_size**2


def cmd_eval(args: argparse.Namespace) -> int:
    from snngen.api import check_metrics, evaluate_run
    from snngen.devices import check_devices
    from snngen.runs import load_run

    metrics = None if args.metrics is None else check_metrics(args.metrics)
    device = check_devices(args.device, args.devices)
    run = load_run(args.run)
    result = evaluate_run(
        run, metrics, device, protocol=args.protocol, n=args.n, features=args.features,
        ref_stats=args.ref_stats, inception_logits=args.inception_logits, seed=args.seed,
        batch_size=args.batch_size, out=args.out, devices=args.devices,
        shard_size=args.shard_size, fresh=args.fresh,
        sample_options={"solver": args.solver, "steps": args.steps,
                        "temperature": args.temperature},
    )
    print(json.dumps(result, indent=2))
    out = args.out or run.path / "metrics.json"
    print(f"snngen: merged into {out}; earlier results are kept under \"results\"",
          file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from snngen.evaluation import model_info
    from snngen.files import check_writable_folder, write_text
    from snngen.provenance import describe
    from snngen.runs import load_run, open_datasets

    if args.json:
        check_writable_folder(Path(args.json).parent, 1_000_000, what="--json")
    run = load_run(args.run)
    _, test_set = open_datasets(run.cfg)
    count = None
    if args.count == "original":  # FSVAE's cost table (refuses other models in one line)
        from snngen.evaluation import test_batches
        from snngen.models.fsvae_cost import count_report

        count = count_report(run.model, next(test_batches(test_set, args.batch, args.batch)))
    info = model_info(run.model, test_set, n=args.batch)
    info["provenance"] = _run_provenance(run.path)
    print(info["table"])
    for what, record in info["provenance"].items():
        print(f"\n{what}:\n" + describe(record))
    if count is not None:
        info["count_original"] = count[0]
        print(count[1])
    if args.json:
        write_text(args.json, json.dumps({k: v for k, v in info.items() if k != "table"},
                                         indent=2))
    return 0


def _run_provenance(run_dir: Path) -> dict[str, dict]:
    """Who made the run (``config.yaml``'s header) and its newest metrics (``metrics.json``)."""
    from snngen.provenance import read_header
    from snngen.results import read_metrics_file

    out = {}
    trained = read_header((run_dir / "config.yaml").read_text())
    if trained:
        out["trained"] = trained
    metrics = read_metrics_file(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() \
        else None
    if metrics and isinstance(metrics.get("provenance"), dict):
        out[f"evaluated ({metrics.get('measured_at', '?')})"] = metrics["provenance"]
    return out


def cmd_plot(args: argparse.Namespace) -> int:
    from snngen.api import plot

    def items(text: str | None) -> list[str] | None:
        return None if text is None else [t.strip() for t in text.split(",") if t.strip()]

    paths = plot(args.run, out=args.out, layers=items(args.layers), n=args.n, chain=args.chain,
                 seed=args.seed, only=items(args.only), solver=args.solver, steps=args.steps,
                 keywords=False)
    for path in paths:
        print(path)
    if not paths:
        print(f"snngen: nothing to plot for {args.run}", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from snngen.importers.run_folder import import_original

    out = import_original(args.family, args.checkpoint, args.config, args.out,
                          overrides=args.overrides, ema=not args.no_ema)
    print(f"imported {args.family} weights from {args.checkpoint} into {out}; "
          f"try: snngen sample {out} --n 64")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from snngen.board import run_leaderboard

    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    run_leaderboard(args.budget_minutes, quick=args.quick, out=args.out, doc=args.doc,
                    img_dir=args.img_dir, jobs=args.jobs, rows=rows, remeasure=args.remeasure,
                    inception_samples=args.inception_samples)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from snngen.data import describe_datasets, describe_downloads, download_dataset, verify_dataset

    action = getattr(args, "datasets_action", None)
    if action == "download":
        try:
            print(download_dataset(args.name, args.root, args.mirror))
        except KeyboardInterrupt:
            print("snngen: interrupted; a partial download is kept as .part: run the same "
                  "command to resume it", file=sys.stderr)
            return 130
    elif action == "verify":
        print(verify_dataset(args.name, args.root))
    else:
        print(describe_datasets())
        print()
        print(describe_downloads())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from snngen.models import list_models

    print("\n".join(list_models()))
    return 0


def cmd_classifier(args: argparse.Namespace) -> int:
    from snngen.metrics import train_classifier

    path, acc = train_classifier(args.dataset, root=args.root)
    print(f"classifier for {args.dataset}: {path} (test accuracy {acc:.4f})")
    return 0


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "eval": cmd_eval,
    "info": cmd_info,
    "plot": cmd_plot,
    "import": cmd_import,
    "leaderboard": cmd_leaderboard,
    "datasets": cmd_datasets,
    "models": cmd_models,
    "classifier": cmd_classifier,
}


def _quiet_third_party_warnings() -> None:
    """Hide Lightning's framework warnings unless verbose (:mod:`snngen.console`)."""
    from snngen.console import configure_warnings

    configure_warnings()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``snngen``; returns the exit status (2 for user errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from snngen.console import set_up

    set_up(verbose=args.verbose)  # Lightning's banners and warnings only when verbose
    from snngen.provenance import command_line, invocation

    try:
        with invocation(command_line(["snngen", *(sys.argv[1:] if argv is None else argv)])):
            return COMMANDS[args.command](args)
    except (SnngenError, OSError) as err:  # user errors: bad values, missing/unwritable files
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"snngen: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # training's says where it stopped and how to continue
        msg = str(err) or "interrupted; checkpoints written so far are kept"
        print(f"snngen: {msg}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
