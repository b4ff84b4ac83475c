"""Pieces the benchmark scripts share: a trained-run command line, and writing their JSON.

A script imports it after putting its own folder on ``sys.path`` (it is run as
``python benchmarks/<script>.py``, where that folder comes first anyway, or loaded by path from
the tests)::

    sys.path.append(str(Path(__file__).resolve().parent))
    from bench_common import ...  # noqa: E402
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def run_parser(doc: str, run_help: str, quick_help: str) -> argparse.ArgumentParser:
    """The command line of a benchmark of one trained run: the description is the first
    paragraph of the script's docstring ``doc`` and the epilog the rest (verbatim), with an
    optional positional ``run`` folder and ``--quick`` (one of the two is required, see
    :func:`parse_run_args`)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=doc.split("\n\n", 1)[1])  # fmt: skip
    p.add_argument("run", nargs="?", help=run_help)
    p.add_argument("--quick", action="store_true", help=quick_help)
    return p


def parse_run_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Add ``--out`` (the last option) to a :func:`run_parser` parser, parse ``argv``, insist on
    a run folder or ``--quick`` (not both) and apply ``--threads`` (an option of the parser)."""
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    args = p.parse_args(argv)
    if args.quick == bool(args.run):
        p.error("give a run folder, or --quick (not both)")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def write_json(path: str | Path, record: dict) -> Path:
    """Write ``record`` as indented JSON to ``path`` (its folder created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    return path


def write_results(out: str | None, default: Path, record: dict) -> None:
    """Write a run benchmark's ``record`` to ``out`` (``--out``), else to ``default``, and say
    where."""
    print(f"\nwrote {write_json(out or default, record)}")


def write_timings(path: str | Path, device: torch.device, **fields) -> None:
    """Write a timing benchmark's JSON: ``{"device": ..., **fields, "date": today}`` (in that
    order)."""
    write_json(path, {"device": str(device), **fields, "date": time.strftime("%Y-%m-%d")})
