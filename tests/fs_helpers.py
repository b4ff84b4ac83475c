"""File-system snapshots and malicious payloads for the safety tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

#: the config of the safety tests' small run (tiny model, mnist5k at 8 px, 2 steps)
BASE_CONFIG = (
    "name: base\n"
    "model: {name: tiny, hidden: 8}\n"
    "data: {name: mnist5k, image_size: 8, batch_size: 500}\n"
    "trainer: {max_steps: 2, accelerator: cpu, progress_bar: false, ckpt_every_n_steps: 1,\n"
    "          grids_every_epoch: false}\n"
    "eval: {n_samples: 20, metrics: [mse], batch_size: 20}\n"
)



def snapshot(root: Path) -> dict[str, str]:
    """Map every path under ``root`` (relative) to the sha256 of its bytes, or "dir"."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Exploit:
    """Unpickling this calls ``os.system("touch MARKER")``: what a hostile checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_malicious_checkpoint(path: Path, marker: Path, fmt: str = "torch") -> Path:
    """Write a file that creates ``marker`` when loaded with ``weights_only=False``.

    ``fmt="torch"``: torch's zip format (what a ``last.ckpt`` is), the payload inside a dict that
    looks like a snngen checkpoint; ``fmt="legacy"``: torch's older plain-pickle format.
    """
    payload = {
        "state_dict": {"model.w": torch.zeros(1)},
        "snngen": {"model_name": "tiny", "hook": Exploit(marker)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torch":
        torch.save(payload, path)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    return path


def shown_lines(err: str) -> list[str]:
    """The non-blank lines a terminal shows of ``err`` (a progress bar erased with carriage
    returns leaves nothing)."""
    shown = [line.split("\r")[-1] for line in err.split("\n")]
    return [line for line in shown if line.strip()]


def assert_one_line_exit2(code: int, err: str, *fragments: str) -> None:
    """The CLI's user-error contract: status 2, one line on stderr containing ``fragments``."""
    lines = shown_lines(err)
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
