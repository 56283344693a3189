"""Limited-data study: StyleGAN2-ADA vs InsGen on the embedded faces at an equal image budget (issue 6).

Every run uses the experiment files as they are (``experiment=demo`` and ``experiment=insgen_demo``: same
networks, batch, schedule and seed; 100 LFW faces + x-flip, 32x32) with ``data.max_images=100`` and
``model.total_kimg=<budget>``; ``insgen`` ramps ADA's p linearly (the InsGen README's advice for small sets),
``insgen_adaptive_p`` keeps the adaptive rule of ``ada``. G_ema is then evaluated with the metrics module: FID
against the full embedded set (reference = all 100 faces, no x-flip), with the OFFLINE ``random-cnn`` feature
network (a seeded random CNN, not Inception: the numbers only compare runs of this script). Per-iteration
losses (adversarial and the three InfoNCE terms) are written to ``<out>/losses_<method>.json``; sample grids
(fixed latents, G_ema) to ``<out>/insgen_study_<method>.png``; the table to ``<out>/study_insgen.json``.

    python experiments/study_insgen.py --kimg 10 --out /tmp/study   # about 10 minutes per method on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# method -> (experiment, extra overrides). insgen_demo ramps p linearly to 0.6 (the InsGen README's advice for
# < 5k images); insgen_adaptive_p keeps ADA's adaptive rule, so it differs from `ada` by the ID terms alone.
METHODS = {
    "ada": ("demo", []),
    "insgen": ("insgen_demo", []),
    "insgen_adaptive_p": ("insgen_demo", ["model.insgen.ada_linear=false"]),
}


def build(experiment: str, extra: list[str], kimg: float, seed: int):
    import hydra
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    overrides = [f"experiment={experiment}", "data.max_images=100", f"model.total_kimg={kimg}", f"seed={seed}"]
    overrides += ["model.sample_grid=[4,8]", "model.sample_every_kimg=1e9", *extra]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return hydra.utils.instantiate(cfg.data), hydra.utils.instantiate(cfg.model, _convert_="partial")


def train_and_evaluate(method: str, kimg: float, seed: int, out: Path, n_fake: int) -> dict:
    import pytorch_lightning as pl
    import torch

    from networks.image_output import save_image_grid
    from metrics.detectors import load_detector
    from metrics.evaluation import evaluate_generator
    from metrics.protocol import MetricProtocol

    class Losses(pl.Callback):
        def __init__(self):
            self.rows: list[dict[str, float]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            row = {k: float(v) for k, v in pl_module._stats.items()}
            row["kimg"] = int(pl_module.seen_img) / 1000
            self.rows.append(row)

    pl.seed_everything(seed)
    dm, module = build(*METHODS[method], kimg, seed)
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
        default_root_dir=str(out / f"run_{method}"),
        num_sanity_val_steps=0,
    )
    t0 = time.time()
    trainer.fit(module, datamodule=dm)
    train_s = time.time() - t0
    module.G_ema.eval()
    protocol = MetricProtocol(
        name="fid_full_randomcnn", metric="fid", n_fake=n_fake, reference="full", detector="random-cnn", seed=0
    )
    result = evaluate_generator(
        module.G_ema,
        [protocol],
        reference=lambda p: dm.reference_dataset(p.reference),
        detector=load_detector,
        batch_size=100,
    )[0]
    save_image_grid(module.render_grid(), out / f"insgen_study_{method}.png", (4, 8))
    (out / f"losses_{method}.json").write_text(json.dumps(losses.rows))
    with torch.no_grad():
        p = float(module.augment_pipe.p) if module.augment_pipe is not None else 0.0
    return {
        "method": method,
        "kimg": int(module.seen_img) / 1000,
        "iterations": int(module.iteration),
        "train_s": round(train_s, 1),
        "fid_randomcnn": round(result["results"][protocol.name], 3),
        "augment_p": round(p, 4),
        "reference_images": result["protocol"]["reference_images"],
        "detector": result["protocol"]["detector"],
    }


def summarise(rows: list[dict[str, float]], key: str, k: int = 10) -> tuple[float, float] | None:
    vals = [r[key] for r in rows if key in r]
    if len(vals) < 2 * k:
        return None
    return sum(vals[:k]) / k, sum(vals[-k:]) / k


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kimg", type=float, default=3.0, help="image budget per method (thousands of real images)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-fake", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("study_insgen"))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = [train_and_evaluate(m, args.kimg, args.seed, args.out, args.n_fake) for m in args.methods]
    (args.out / "study_insgen.json").write_text(json.dumps(results, indent=1))
    print("\n| method | kimg | iterations | train s | FID (random-cnn, ref = 100 faces) | final p |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['method']} | {r['kimg']} | {r['iterations']} | {r['train_s']} | {r['fid_randomcnn']} "
            f"| {r['augment_p']} |"
        )
    for m in args.methods:
        rows = json.loads((args.out / f"losses_{m}.json").read_text())
        for key in ("insgen/real_id", "insgen/fake_id", "insgen/g_id", "loss/D/real", "loss/G/adv"):
            s = summarise(rows, key)
            if s:
                print(f"{m}: {key} first-10 mean {s[0]:.3f} -> last-10 mean {s[1]:.3f}")


if __name__ == "__main__":
    main()
