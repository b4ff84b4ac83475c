"""scripts/gpu_check.sh rehearsed on the CPU (``GPU_CHECK_DEVICE=cpu``): every step's command
and options run, so that the one GPU run a lent machine allows is not lost to a typo."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKS = 23  # tests, 3 benchmarks, 6 configs trained (5 sampled and evaluated), SDM, prior, eval


@pytest.mark.slow
def test_gpu_check_rehearsal_on_cpu(tmp_path):
    """~5 min on 2 cores: exit 0 and a table of 23 checks, all ok."""
    env = dict(os.environ, GPU_CHECK_DEVICE="cpu", OUT=str(tmp_path), PYTHON=sys.executable)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=1200)
    table = (tmp_path / "table.txt").read_text().splitlines()
    rows = [line.split() for line in table if line.strip() and not line.startswith("check")]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(rows) == CHECKS and all(r[1] == "ok" for r in rows), table
    assert (tmp_path / "neurons.json").is_file() and (tmp_path / "model_steps.json").is_file()
    assert (tmp_path / "memory.json").is_file()
