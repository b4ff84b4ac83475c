"""The leaderboard's outputs: one Markdown table, one JSON file, three pictures.

:func:`check_rows` refuses to put rows measured at different budgets, settings or protocols in
one table; :func:`markdown_table` writes the table with its caption (budget and protocol), the
exact command, the machine and the date.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
from pathlib import Path
from typing import Any

from snngen.board.entries import ENTRIES
from snngen.board.settings import BoardSettings
from snngen.errors import SnngenError

#: what every row of one table must share
SHARED_FIELDS = ("budget_minutes", "settings", "protocol")


def check_rows(rows: list[dict[str, Any]]) -> None:
    """Raise :class:`SnngenError` unless every row has the same budget, settings and protocol
    (and, where measured, the same Inception protocol)."""
    if not rows:
        raise SnngenError("no leaderboard rows to write")
    first = rows[0]
    for r in rows[1:]:
        for key in SHARED_FIELDS + ("inception_protocol",):
            if key == "inception_protocol" and (key not in r or key not in first):
                if (key in r) != (key in first):
                    raise SnngenError(f"row {r['row']!r}: Inception FID measured for some rows "
                                      f"only (not {first['row']!r}); one table, one protocol")
                continue
            if r.get(key) != first.get(key):
                what = "budget" if key == "budget_minutes" else key
                raise SnngenError(
                    f"row {r['row']!r} was measured with another {what} than row "
                    f"{first['row']!r} ({r.get(key)!r} vs {first.get(key)!r}); one table "
                    "holds one budget and one protocol"
                )


def _num(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return format(v, fmt)


def _si(v: float | None) -> str:
    if v is None:
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return f"{v:.0f}"


def sampler_text(r: dict[str, Any]) -> str:
    s = r.get("sampler")
    return f"{s['solver']} {s['steps']}" if s else "one pass"


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by classifier FID, best first."""
    return sorted(rows, key=lambda r: r["fid"])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The table (ranked by classifier FID) with a caption stating budget and protocol."""
    check_rows(rows)
    r0 = rows[0]
    st = r0["settings"]
    incep = "inception_fid" in r0
    head = ["#", "model", "SNN", "FID ↓", "output px", "resolution floor FID", "KID (std)",
            "precision", "recall"]
    head += ["Inception FID"] if incep else []
    head += ["recon MSE", "SOPs", "MACs", "energy µJ", "firing rate", "CPU ms", "sampler",
             "training CPU-min (steps)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(ranked(rows), 1):
        c = r["cost"]
        steps = "+".join(str(s["steps"]) for s in r["training"]["stages"])
        cells = [str(i), r["label"], "yes" if r["spiking"] else "no", _num(r["fid"], ".1f"),
                 _num(r.get("output_px"), "d"), _num(r.get("resolution_floor_fid"), ".1f"),
                 f"{_num(r['kid'], '.3g')} ({_num(r['kid_std'], '.2g')})",
                 _num(r["precision"], ".3f"), _num(r["recall"], ".3f")]
        cells += [_num(r.get("inception_fid"), ".1f")] if incep else []
        cells += [_num(r.get("mse"), ".4f"), _si(c["sops"]), _si(c["macs"]),
                  _num(c["energy_uj"], ".2f"), _num(c["firing_rate"], ".3f"),
                  _num(r["sample_cpu_ms"], ".1f"), sampler_text(r),
                  f"{r['training']['cpu_minutes']:.2f} ({steps})"]
        lines.append("| " + " | ".join(cells) + " |")
    caption = (
        f"Every model trained for **{r0['budget_minutes']:g} CPU-minutes** (one thread; "
        f"two-stage rows split it, see below) on mnist5k (4,500 training digits) and measured "
        f"under protocol **`{r0['protocol']['name']}` v{r0['protocol']['version']}**: FID, KID "
        f"(mean and std over 100 subsets of 1,000) and precision/recall (k = 3) of "
        f"{st['n_samples']:,} samples (seed {st['seed']}) against the "
        f"{r0['protocol'].get('reference', {}).get('n', 4500):,} training images on the "
        f"in-package classifier's 128-d features at 32 px"
    )
    if incep:
        caption += (f"; Inception FID: the first {st['inception_n']:,} samples against the 500 "
                    "test images on Inception-v3 pool3 (protocol `snngen`, TF1 bilinear to 299)")
    caption += (
        ". One common scoring resolution: every sample is brought to the classifier's 32 px, "
        "whatever size its model draws at (output px). Resolution floor FID: the FID the 500 "
        "real test digits get under the same protocol once brought to the row's output size "
        "as its training data is, the best a model drawing at that size could score: compare "
        "a row with its floor, and rows of one output size with each other"
        ". Recon MSE: 500 test digits in [0, 1]. SOPs, MACs, energy (0.9 pJ per SOP, 4.6 pJ "
        "per MAC) and firing rate: per sample, counted while drawing 8 samples (diffusion: the "
        "whole chain of the chosen sampler). CPU ms: sampling CPU time per sample, one thread. "
        "Sampler: diffusion rows use the sampler with the lowest classifier FID among "
        + ", ".join(f"{s} {n}" for s, n in st["sweep"])
        + f" ({st['sweep_n']} samples each). Classifier FIDs are not comparable with papers' "
        "Inception FIDs."
    )
    return caption + "\n\n" + "\n".join(lines)


def machine_text() -> str:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def load_rows(board, entries) -> list[dict[str, Any]]:
    rows = []
    for e in entries:
        path = board.row_file(e.key)
        if not path.is_file():
            raise SnngenError(f"row {e.key!r} has not been measured ({path} missing)")
        rows.append(json.loads(path.read_text()))
    return rows


def write_board(board, entries, *, wall_seconds: float, doc, img_dir, echo=print) -> dict:
    """Write the table, the JSON and the pictures of a finished board; returns the record."""
    from snngen.board.plots import plot_fid_vs_budget, plot_fid_vs_energy, plot_samples
    from snngen.files import write_text

    rows = load_rows(board, entries)
    check_rows(rows)
    wall_file = board.root / "wall_seconds.json"
    history = json.loads(wall_file.read_text()) if wall_file.is_file() else []
    history.append(round(wall_seconds, 1))
    write_text(wall_file, json.dumps(history))
    total_wall = sum(history)
    record = {
        "date": _dt.date.today().isoformat(), "machine": machine_text(),
        "command": command_text(board, entries),
        "wall_seconds": round(total_wall, 1), "invocations_wall_seconds": history,
        "settings": board.settings.record(), "rows": ranked(rows),
    }
    images = {}
    if img_dir is not None:
        img = Path(img_dir)
        img.mkdir(parents=True, exist_ok=True)
        images = {
            "samples": plot_samples(board, record["rows"], img / IMAGES["samples"]),
            "fid_vs_budget": plot_fid_vs_budget(record["rows"], img / IMAGES["fid_vs_budget"]),
            "fid_vs_energy": plot_fid_vs_energy(record["rows"], img / IMAGES["fid_vs_energy"]),
        }
    text = markdown_doc(record, images, Path(doc) if doc else None)
    outputs = [board.root / "leaderboard.json"]
    write_text(board.root / "leaderboard.json", json.dumps(record, indent=2))
    if doc is not None:
        write_text(doc, text + kept_analysis(Path(doc)))
        json_path = Path(doc).with_suffix(".json")
        write_text(json_path, json.dumps(record, indent=2))
        outputs += [Path(doc), json_path]
    echo(markdown_table(rows))
    echo(f"board wall time {total_wall / 60:.1f} min; wrote "
         + ", ".join(str(p) for p in outputs + list(images.values())))
    return record


#: the pictures of a board, by key, in its image folder
IMAGES = {"samples": "leaderboard_samples.png", "fid_vs_budget": "fid_vs_budget.png",
          "fid_vs_energy": "fid_vs_energy.png"}


def rerender(json_path: Path, doc: Path, *, floors: Path, img_dir: Path | None,
             echo=print) -> dict:
    """Write ``doc`` again from a board's JSON (``json_path``, rewritten too) without re-running
    any row: today's table (rows measured before resolution floors get theirs, measured once
    per size in ``floors``), the pictures already in ``img_dir``, the analysis kept."""
    from snngen.board.floor import add_floors
    from snngen.files import write_text

    record = json.loads(Path(json_path).read_text())
    add_floors(record["rows"], Path(floors), {e.key: e for e in ENTRIES},
               record["settings"].get("batch_size", 250))
    images = {k: Path(img_dir) / name for k, name in IMAGES.items()
              if img_dir is not None and (Path(img_dir) / name).is_file()}
    text = markdown_doc(record, images, Path(doc))
    write_text(doc, text + kept_analysis(Path(doc)))
    write_text(json_path, json.dumps(record, indent=2))
    echo(markdown_table(record["rows"]))
    return record


def main(argv: list[str] | None = None) -> int:
    """``python -m snngen.board.report BOARD.json``: :func:`rerender` its page."""
    import argparse

    p = argparse.ArgumentParser(description="re-write a leaderboard page from its JSON")
    p.add_argument("json", type=Path, help="the board's JSON (e.g. docs/leaderboard.json)")
    p.add_argument("--doc", type=Path, help="the page (default: the JSON's .md)")
    p.add_argument("--img-dir", type=Path, default=Path("docs/img"))
    p.add_argument("--floors", type=Path, default=Path("runs/leaderboard/floors"),
                   help="where resolution floors are cached (default runs/leaderboard/floors)")
    args = p.parse_args(argv)
    rerender(args.json, args.doc or args.json.with_suffix(".md"), floors=args.floors,
             img_dir=args.img_dir)
    return 0


#: a written page keeps everything from this line on when the board rewrites it
ANALYSIS_MARKER = "<!-- analysis: kept when the board rewrites this page -->"


def kept_analysis(doc: Path) -> str:
    """The hand-written part of an existing page (from :data:`ANALYSIS_MARKER` on), else ''."""
    if not doc.is_file():
        return ""
    text = doc.read_text()
    i = text.find(ANALYSIS_MARKER)
    return "" if i < 0 else "\n" + text[i:]


def command_text(board, entries=None) -> str:
    """The command that reproduces ``board`` with its rows ``entries`` (default: all)."""
    s = board.settings
    if s.quick:
        return "snngen leaderboard --quick"
    cmd = f"snngen leaderboard --budget-minutes {s.budget_minutes:g}"
    if s.inception_n != BoardSettings().inception_n:
        cmd += f" --inception-samples {s.inception_n}"
    keys = [e.key for e in entries] if entries is not None else None
    if keys is not None and not every_row(keys):
        cmd += " --rows " + ",".join(keys)
    return cmd


def every_row(keys) -> bool:
    """Whether the row keys ``keys`` are exactly snngen's own rows (:data:`ENTRIES`)."""
    return sorted(keys) == sorted(e.key for e in ENTRIES)


def markdown_doc(record: dict, images: dict, doc: Path | None) -> str:
    """The whole leaderboard page."""
    import os

    def rel(p: Path) -> str:
        return os.path.relpath(p, doc.parent) if doc is not None else str(p)

    rows = record["rows"]
    which = ("every snngen model" if every_row(r["row"] for r in rows)
             else f"{len(rows)} snngen models")
    budget = record["settings"]["budget_minutes"]
    out = [f"# Leaderboard: {which} at {budget:g} CPU-minutes", ""]
    out += [f"Measured {record['date']} on {record['machine']}; the whole board took "
            f"**{record['wall_seconds'] / 60:.0f} min** of wall time "
            f"({len(record['invocations_wall_seconds'])} invocation(s)). Reproduce with:", "",
            "```bash", record["command"], "```", ""]
    if "samples" in images:
        out += [f"![samples]({rel(images['samples'])})", ""]
    out += [markdown_table(rows), ""]
    out += [
        "How the budget is shared: one-stage models get all of it; the VQ-VAE rows give 60 % to "
        "the stage-1 VQ-VAE and 40 % to the spiking prior; SDM fine-tunes TSM for the last 25 % "
        "starting from the SDDPM row's checkpoint at 75 % of its budget; the converted DDPM is "
        "the ANN DDPM row's network converted (no training of its own; its calibration CPU time "
        "is in the JSON). Steps: per stage.",
        "",
    ]
    for key in ("fid_vs_budget", "fid_vs_energy"):
        if key in images:
            out += [f"![{key}]({rel(images[key])})", ""]
    notes = [f"- **{r['label']}**: {r['notes']}" for r in rows if r.get("notes")]
    if notes:
        out += ["Notes:", ""] + notes + [""]
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.exit(main())
