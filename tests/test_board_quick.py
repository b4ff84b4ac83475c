"""``snngen leaderboard --quick`` end to end (minutes: slow marker): trains every stage for a
few CPU-seconds, measures every row, writes the doc, the JSON and the three pictures; run
again, it resumes with nothing left to do."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from snngen.board.entries import ENTRIES

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_board_end_to_end_and_resume(tmp_path):
    out, doc, img = tmp_path / "board", tmp_path / "lb.md", tmp_path / "img"
    cmd = [sys.executable, "-m", "snngen", "leaderboard", "--quick", "--out", str(out),
           "--doc", str(doc), "--img-dir", str(img)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads(doc.with_suffix(".json").read_text())
    assert {r["row"] for r in record["rows"]} == {e.key for e in ENTRIES}
    fids = [r["fid"] for r in record["rows"]]
    assert fids == sorted(fids)
    for r in record["rows"]:
        assert r["budget_minutes"] == 0.05 and r["protocol"]["name"] == "leaderboard"
        assert r["training"]["cpu_minutes"] >= 0.05 * (0.25 if r["row"] == "sdm" else 1) - 1e-9
        assert (r["sampler"] is not None) == (r["family"] == "diffusion")
    text = doc.read_text()
    assert "snngen leaderboard --quick" in text and text.count("\n| ") >= len(ENTRIES)
    for name in ("leaderboard_samples.png", "fid_vs_budget.png", "fid_vs_energy.png"):
        assert 0 < (img / name).stat().st_size < 300_000
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 jobs to run" in again.stdout
