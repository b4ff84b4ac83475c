"""DDP on CPU (gloo), two processes: the same code path a GPU cluster runs."""

import os
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).parent / "ddp_worker.py"


def train(run_dir: Path, devices: int, batches: list[int], steps: int = 5) -> list[dict]:
    """The weights trained in one launch at each per-device batch size of ``batches``."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(run_dir), str(devices), ",".join(map(str, batches)),
         str(steps)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(run_dir / f"b{b}" / "weights.pt", weights_only=False) for b in batches]


def test_two_process_ddp_equals_one_process_with_the_global_batch(tmp_path):
    [ddp] = train(tmp_path / "ddp", devices=2, batches=[8])
    single, other = train(tmp_path / "one", devices=1, batches=[16, 8])
    assert ddp["world"] == 2 and single["world"] == 1
    assert ddp["batches_seen"] == single["batches_seen"] == 5
    # each rank sees half of every global batch; averaged gradients = the full batch's gradient
    for k, v in single["weights"].items():
        torch.testing.assert_close(ddp["weights"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert (tmp_path / "ddp" / "b8" / "checkpoints" / "last.ckpt").is_file()
    # and a different global batch gives different weights (the comparison can fail)
    assert not torch.allclose(other["weights"]["dec.weight"], single["weights"]["dec.weight"])
