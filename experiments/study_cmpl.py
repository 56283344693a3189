"""Study: supervised-only vs FixMatch vs CMPL at equal budget on the embedded actions (CMPL, arXiv 2112.09690, in
miniature).

Composes ``conf/train.yaml`` with ``experiment={supervised,fixmatch,cmpl}_demo`` (same network, labeled split, steps
and labeled batch), trains each on the CPU, keeps the checkpoint with the best top-1 on the validation videos held out
of the training list, tests it on the test list (``test_clips`` x ``test_crops`` views, and one centre view) and
prints a Markdown table: test top-1 (primary network; CMPL also reports its auxiliary), the selecting validation
top-1, pseudo-label diagnostics, wall and process CPU time.

    python experiments/study_cmpl.py [--epochs 12] [--seeds 0] [--threads 1] [overrides ...]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from experiments.compose import compose_experiment, instantiate_datamodule, instantiate_module

METHODS = ("supervised", "fixmatch", "cmpl")


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v.numel() == 1}


def run(method: str, seed: int, epochs: int, overrides: list[str], out_dir: Path) -> dict[str, float]:
    """Train one method from its demo experiment, test its best-validation checkpoint; metrics plus timing."""
    cfg = compose_experiment(f"{method}_demo", [f"seed={seed}", f"trainer.max_epochs={epochs}", *overrides])
    run_dir = out_dir / f"{method}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    pl.seed_everything(seed, workers=True)
    dm = instantiate_datamodule(cfg)
    model = instantiate_module(cfg)
    best = ModelCheckpoint(dirpath=run_dir, filename="best", monitor="val/top1", mode="max", save_top_k=1)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, callbacks=[best], enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=min(epochs, cfg.trainer.check_val_every_n_epoch), default_root_dir=str(run_dir),
    )  # fmt: skip
    wall, cpu = time.time(), time.process_time()
    trainer.fit(model, datamodule=dm)
    res = _scalars(trainer.callback_metrics)
    res["steps"] = trainer.global_step
    res["val_best"] = float(best.best_model_score)
    res["best_epoch"] = float(torch.load(best.best_model_path, map_location="cpu", weights_only=True)["epoch"]) + 1
    trainer.test(model, datamodule=dm, ckpt_path=best.best_model_path, verbose=False)
    res.update(_scalars(trainer.callback_metrics))
    res["wall_s"], res["cpu_s"] = time.time() - wall, time.process_time() - cpu
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
    nan = float("nan")
    print(
        "\n| method | seed | steps | test top-1 (10x3) | test top-1 (1x1) | test top-5 (10x3) | aux test top-1 (10x3) "
        "| val top-1 (best epoch) | mask rate | pseudo-label acc | wall s | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for method, seed, r in rows:
        mask = r.get("train/A_to_F/mask_rate", r.get("train/self/mask_rate", nan))
        acc = r.get("train/A_to_F/pl_acc", r.get("train/self/pl_acc", nan))
        aux = 100 * r.get("test/aux_top1", nan)
        print(f"| {method} | {seed} | {int(r['steps'])} | {100 * r['test/top1']:.1f} | "
              f"{100 * r['test_1x1/top1']:.1f} | {100 * r['test/top5']:.1f} | {aux:.1f} | "
              f"{100 * r['val_best']:.1f} ({int(r['best_epoch'])}) | {mask:.2f} | {acc:.2f} | {r['wall_s']:.0f} | "
              f"{r['cpu_s']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
