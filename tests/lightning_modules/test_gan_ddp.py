"""A 2-process CPU DDP run (gloo, in a subprocess) trains and both ranks agree on the weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_two_process_ddp_trains_and_ranks_agree(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.lightning_modules.ddp_worker", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    start = torch.load(tmp_path / "start0.pt")
    assert int(r0["__world_size"]) == 2
    # 3 iterations of the global batch 8 on each rank.
    assert int(r0["__seen_img"]) == int(r1["__seen_img"]) == 24
    # ADA's r_t is summed over both ranks: the host copies of p and the pipes' buffers agree.
    assert float(r0["__augment_p"]) == float(r1["__augment_p"]) == float(r0["augment_pipe.p"])
    trained = [k for k in r0 if k.startswith(("G.", "D.", "G_ema.")) and r0[k].is_floating_point()]
    params = [k for k in trained if "w_avg" not in k]  # buffers such as w_avg stay per rank
    for k in params:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=1e-6, msg=f"ranks disagree on {k}")
    assert any(not torch.equal(start[k], r0[k]) for k in params if k.startswith("D.")), "D did not train"
    assert any(not torch.equal(start[k], r0[k]) for k in params if k.startswith("G.")), "G did not train"
    # Per-rank random streams: the w_avg trackers saw different latents on the two ranks.
    assert not torch.equal(r0["G.mapping.w_avg"], r1["G.mapping.w_avg"])
