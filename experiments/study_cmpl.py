"""Study (spec cmpl.md §6 in miniature): supervised-only vs FixMatch vs CMPL at equal budget on the embedded actions.

Composes ``conf/train.yaml`` with ``experiment={supervised,fixmatch,cmpl}_demo`` (same network, labeled split, steps
and labeled batch), trains each on the CPU and prints a Markdown table of final top-1 (primary network; CMPL also
reports its auxiliary), pseudo-label diagnostics, wall and process CPU time.

    python experiments/study_cmpl.py [--epochs 12] [--seeds 0] [--threads 1] [overrides ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("supervised", "fixmatch", "cmpl")


def run(method: str, seed: int, epochs: int, overrides: list[str], out_dir: Path) -> dict[str, float]:
    """Train one method from its demo experiment; returns the final metrics plus timing."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"experiment={method}_demo", f"seed={seed}", f"trainer.max_epochs={epochs}", *overrides],
        )
    pl.seed_everything(seed, workers=True)
    dm = instantiate(cfg.data)
    model = instantiate(cfg.model, _convert_="partial")
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=epochs,
        default_root_dir=str(out_dir / f"{method}_seed{seed}"),
    )  # fmt: skip
    wall, cpu = time.time(), time.process_time()
    trainer.fit(model, datamodule=dm)
    res = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    res["wall_s"], res["cpu_s"] = time.time() - wall, time.process_time() - cpu
    res["steps"] = trainer.global_step
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids OpenMP spinning on busy CPUs)")
    ap.add_argument("--out", default="outputs/study_cmpl")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides applied to every method (e.g. paths.data_dir=...)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        for method in args.methods:
            r = run(method, seed, args.epochs, args.overrides, Path(args.out))
            rows.append((method, seed, r))
            print(f"[study] {method} seed {seed}: " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(r.items())),
                  flush=True)  # fmt: skip
    print(
        "\n| method | seed | steps | top-1 (primary) | top-5 | aux top-1 | mask rate | pseudo-label acc | wall s "
        "| CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, seed, r in rows:
        mask = r.get("train/A_to_F/mask_rate", r.get("train/self/mask_rate", float("nan")))
        acc = r.get("train/A_to_F/pl_acc", r.get("train/self/pl_acc", float("nan")))
        print(f"| {method} | {seed} | {int(r['steps'])} | {100 * r['val/top1']:.1f} | {100 * r['val/top5']:.1f} | "
              f"{100 * r.get('val/aux_top1', float('nan')):.1f} | {mask:.2f} | {acc:.2f} | {r['wall_s']:.0f} | "
              f"{r['cpu_s']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
