"""Limited-data studies of InsGen on the embedded faces (100 LFW faces + x-flip, 32x32), at an equal image budget.

Every run uses the experiment files as they are (``experiment=demo`` and ``experiment=insgen_demo``: same
networks, batch, schedule; seeds from ``--seeds``) with ``data.max_images=100`` and ``model.total_kimg=<budget>``.
G_ema is then evaluated with the metrics module against the full embedded set (reference = all 100 faces, no
x-flip), with two OFFLINE feature extractors: FID on the ``random-cnn`` network (a seeded random CNN, not Inception)
and KID on ``pixels`` (the 8x8 brightness layout); the numbers only compare runs of this script. Methods
(``--methods``):

- ``ada``: StyleGAN2-ADA (``experiment=demo``); ``insgen``: InsGen with the linear p ramp of ``insgen_demo`` (the
  InsGen README's advice below 5k images); ``insgen_adaptive_p``: InsGen with ADA's adaptive rule, so that it
  differs from ``ada`` by the instance-discrimination terms alone;
- ``view_adversarial`` / ``view_separate``: the A/B study of the InsGen query views at a FIXED augmentation
  probability ``--fixed-p`` (> 0 from the first iteration, no controller): ``model.insgen.query_view`` =
  ``adversarial`` (queries read off the adversarial D passes, one ADA draw shared by the adversarial and the ID
  term) vs ``separate`` (the original's extra D passes on fresh draws, genforce/insgen
  ``training/contrastive_loss.py``). Same seed = same initial networks and data order for both views.

Per-iteration losses go to ``<out>/losses_<method>_s<seed>.json``, sample grids (fixed latents, G_ema) to
``<out>/insgen_study_<method>_s<seed>.png``, every run to ``<out>/study_insgen.json`` and the per-method mean and
sample standard deviation over seeds (plus the paired view difference) to ``<out>/study_insgen_summary.json``.

    nice -n 10 python experiments/study_insgen.py --methods view_adversarial view_separate --seeds 0 1 2 \
        --kimg 2 --out /tmp/study_views
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

# method -> (experiment, extra overrides); "{p}" is replaced by --fixed-p.
# G_ema against the 100 faces (reference = full): FID on the random CNN's texture statistics and KID on the 8x8
# brightness layout (metrics/detectors.py), both offline and not comparable to any paper.
METRICS = {"fid_randomcnn": ("fid", "random-cnn"), "kid_pixels": ("kid", "pixels")}
FIXED_P = ["model.insgen.ada_linear=false", "model.ada=null", "model.augment_p={p}"]
METHODS = {
    "ada": ("demo", []),
    "insgen": ("insgen_demo", []),
    "insgen_adaptive_p": ("insgen_demo", ["model.insgen.ada_linear=false"]),
    "view_adversarial": ("insgen_demo", [*FIXED_P, "model.insgen.query_view=adversarial"]),
    "view_separate": ("insgen_demo", [*FIXED_P, "model.insgen.query_view=separate"]),
}


def build(experiment: str, extra: list[str], kimg: float, seed: int):
    from experiments.compose import compose_experiment, instantiate_datamodule, instantiate_module

    overrides = ["data.max_images=100", f"model.total_kimg={kimg}", f"seed={seed}"]
    overrides += ["model.sample_grid=[4,8]", "model.sample_every_kimg=1e9", *extra]
    cfg = compose_experiment(experiment, overrides)
    return instantiate_datamodule(cfg), instantiate_module(cfg)


def train_and_evaluate(method: str, kimg: float, seed: int, out: Path, n_fake: int, fixed_p: float) -> dict:
    import pytorch_lightning as pl

    from metrics.detectors import load_detector
    from metrics.evaluation import evaluate_generator
    from metrics.protocol import MetricProtocol
    from networks.image_output import save_image_grid

    class Losses(pl.Callback):
        """Per-iteration means of every reported statistic (a study may read the device every step)."""

        def __init__(self):
            self.rows: list[dict[str, float]] = []

        def on_train_start(self, trainer, pl_module):
            pl_module.stats.window("study")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            row = pl_module.stats.windows["study"].read()
            row["kimg"] = pl_module.progress.kimg
            self.rows.append(row)

    experiment, extra = METHODS[method]
    pl.seed_everything(seed)
    dm, module = build(experiment, [e.format(p=fixed_p) for e in extra], kimg, seed)
    losses = Losses()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[losses],
        default_root_dir=str(out / f"run_{method}_s{seed}"),
        num_sanity_val_steps=0,
    )
    t0 = time.time()
    trainer.fit(module, datamodule=dm)
    train_s = time.time() - t0
    module.G_ema.eval()
    protocols = [
        MetricProtocol(name=name, metric=metric, n_fake=n_fake, reference="full", detector=detector, seed=0)
        for name, (metric, detector) in METRICS.items()
    ]
    results = evaluate_generator(
        module.G_ema,
        protocols,
        reference=lambda p: dm.reference_dataset(p.reference),
        detector=load_detector,
        batch_size=100,
    )
    save_image_grid(module.render_grid(), out / f"insgen_study_{method}_s{seed}.png", (4, 8))
    (out / f"losses_{method}_s{seed}.json").write_text(json.dumps(losses.rows))
    return {
        "method": method,
        "seed": seed,
        "query_view": getattr(getattr(module, "cfg", None), "query_view", None),
        "kimg": module.progress.kimg,
        "iterations": module.progress.iteration,
        "train_s": round(train_s, 1),
        **{r["name"]: round(r["results"][r["name"]], 4) for r in results},
        "augment_p": round(module.augment_p, 4),
        "reference_images": results[0]["protocol"]["reference_images"],
    }


def summarise(results: list[dict], metric: str) -> dict:
    """Mean and sample std of ``metric`` per method over seeds; paired differences of the two views per seed."""
    summary: dict = {}
    for method in dict.fromkeys(r["method"] for r in results):
        values = [r[metric] for r in results if r["method"] == method]
        std = statistics.stdev(values) if len(values) > 1 else float("nan")
        summary[method] = {"n": len(values), "mean": statistics.fmean(values), "std": std, "values": values}
    by_seed = {}
    for r in results:
        if r["method"] in ("view_adversarial", "view_separate"):
            by_seed.setdefault(r["seed"], {})[r["method"]] = r[metric]
    diffs = [v["view_adversarial"] - v["view_separate"] for v in by_seed.values() if len(v) == 2]
    if diffs:
        summary["paired_adversarial_minus_separate"] = {
            "n": len(diffs),
            "mean": statistics.fmean(diffs),
            "std": statistics.stdev(diffs) if len(diffs) > 1 else float("nan"),
            "diffs": diffs,
        }
    return summary


def loss_trend(rows: list[dict[str, float]], key: str, k: int = 10) -> tuple[float, float] | None:
    vals = [r[key] for r in rows if key in r]
    if len(vals) < 2 * k:
        return None
    return sum(vals[:k]) / k, sum(vals[-k:]) / k


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kimg", type=float, default=3.0, help="image budget per run (thousands of real images)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n-fake", type=int, default=2000)
    ap.add_argument("--fixed-p", type=float, default=0.4, help="augmentation p of the view_* methods")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("study_insgen"))
    ap.add_argument("--methods", nargs="+", default=["ada", "insgen", "insgen_adaptive_p"], choices=list(METHODS))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:  # seed-major: a stopped study still holds complete pairs
        for method in args.methods:
            results.append(train_and_evaluate(method, args.kimg, seed, args.out, args.n_fake, args.fixed_p))
            (args.out / "study_insgen.json").write_text(json.dumps(results, indent=1))
    summary = {metric: summarise(results, metric) for metric in METRICS}
    (args.out / "study_insgen_summary.json").write_text(json.dumps(summary, indent=1))
    print("\n| method | seed | kimg | iterations | train s | FID (random-cnn) | KID (pixels) | final p |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['method']} | {r['seed']} | {r['kimg']} | {r['iterations']} | {r['train_s']} "
            f"| {r['fid_randomcnn']} | {r['kid_pixels']} | {r['augment_p']} |"
        )
    for metric, per_method in summary.items():
        for method, s in per_method.items():
            print(f"{metric} {method}: mean {s['mean']:.4f} +- {s['std']:.4f} (sample std, n = {s['n']})")
    for r in results:
        rows = json.loads((args.out / f"losses_{r['method']}_s{r['seed']}.json").read_text())
        for key in ("insgen/real_id", "insgen/fake_id", "insgen/g_id", "loss/D/real", "loss/G/adv"):
            trend = loss_trend(rows, key)
            if trend:
                print(f"{r['method']} s{r['seed']}: {key} first-10 mean {trend[0]:.3f} -> last-10 mean {trend[1]:.3f}")


if __name__ == "__main__":
    main()
