"""experiments/train.py end to end: checkpoint, sample grid, metrics CSV, offline W&B run, auto-resume."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "experiment=demo",
    "run_id=test",
    "print_config=false",
    "data.resolution=16",
    "data.batch_size=8",
    "model.generator.z_dim=16",
    "model.generator.w_dim=16",
    "model.generator.synthesis_kwargs.channel_base=128",
    "model.generator.synthesis_kwargs.channel_max=16",
    "model.discriminator.channel_base=128",
    "model.discriminator.channel_max=16",
    "model.sample_grid=[2,4]",
    "model.sample_every_kimg=0.016",
    "callbacks.checkpoint.every_kimg=0.016",
    "ops=ref",
]


def seen_img(ckpt_path: Path) -> int:
    """Images seen, as a GAN checkpoint records them (host-side run state, or the older buffer)."""
    ckpt = torch.load(ckpt_path, weights_only=True)
    if "run_state" in ckpt:
        return int(ckpt["run_state"]["progress"]["seen_img"])
    return int(ckpt["state_dict"]["seen_img"])


def run_train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SUITE_LOG_DIR=str(tmp_path / "logs"), WANDB_MODE="offline", WANDB_SILENT="true")
    env["SUITE_CACHE_DIR"] = str(tmp_path / "cache")
    env["WANDB_DIR"] = str(tmp_path / "wandb")
    return subprocess.run(
        [sys.executable, "experiments/train.py", *TINY, *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_train_writes_outputs_and_resumes_itself(tmp_path):
    proc = run_train(tmp_path, "model.total_kimg=0.016")
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "logs" / "demo" / "test"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert sorted((run / "samples").glob("fakes*.png")), "no sample grid written"
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    kimg = "progress/kimg" if "progress/kimg" in rows[0] else "kimg"  # the x-axis metric of GAN runs
    assert rows and kimg in rows[0]
    assert "data/skipped" in rows[0]  # the GAN run logs its count of skipped samples
    assert list((run / "wandb").glob("offline-run-*")), "no offline W&B run"
    wandb_id = (run / "wandb_id.txt").read_text()
    assert seen_img(ckpt) == 16

    # The same command with a larger budget resumes from last.ckpt in the same run directory; this time with
    # the metrics callback (offline random-cnn detector, a few fakes) evaluating at the end.
    proc = run_train(
        tmp_path,
        "model.total_kimg=0.032",
        "metrics=fid10k_full",
        "metrics.detector=random-cnn",
        "metrics.protocols.0.n_fake=32",
        "metrics.every_kimg=1000",
        "metrics.num_workers=0",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resuming from" in proc.stderr + proc.stdout
    assert seen_img(ckpt) == 32
    assert (run / "wandb_id.txt").read_text() == wandb_id
    resumed = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    assert [r[kimg] for r in resumed[: len(rows)]] == [r[kimg] for r in rows]  # earlier rows kept
    assert max(float(r[kimg]) for r in resumed if r[kimg]) > max(float(r[kimg]) for r in rows if r[kimg])
    results = (run / "metric-fid10k_full.jsonl").read_text().strip().splitlines()
    assert results and '"random-cnn"' in results[-1]


def test_missing_dataset_path_names_the_file(tmp_path):
    proc = run_train(
        tmp_path, "data=ffhq256", "data.path=/nonexistent/ffhq.zip", "model.total_kimg=0.008", "logger=csv"
    )
    assert proc.returncode != 0
    assert "/nonexistent/ffhq.zip" in proc.stderr
