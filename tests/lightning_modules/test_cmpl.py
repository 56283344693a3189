"""Supervised / FixMatch / CMPL LightningModules (lightning_modules/semi_supervised.py) and the test-after-fit
protocol of experiments/train.py.

Budget: ~90 s on 2 idle CPU cores (most of it the short training runs on generated videos)."""

import copy
import csv
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from datamodules.embedded_actions import EmbeddedActionsDataModule
from lightning_modules.semi_supervised import (
    CMPLModule,
    FixMatchModule,
    SupervisedVideoModule,
    pseudo_label_loss,
    view_logits,
)
from networks.resnet3d import ResNet3d

ROOT = Path(__file__).resolve().parents[2]


def _net(width=0.125, classes=4, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return ResNet3d(depth=18, num_classes=classes, width_mult=width, inflate=[1, 1, 1, 1], dropout=dropout)


def _batch(b=4, mu=2, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    clip = lambda n: torch.randn(n, 3, 4, 16, 16, generator=g)  # noqa: E731
    return {"x": clip(b), "y": torch.randint(0, classes, (b,), generator=g), "u_weak": clip(b * mu),
            "u_strong": clip(b * mu), "u_y": torch.randint(0, classes, (b * mu,), generator=g)}  # fmt: skip


def test_pseudo_label_loss_masks_by_threshold_and_matches_formula():
    weak = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 6.0], [0.0, 3.0, 0.0]])
    strong = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    loss, mask, pseudo = pseudo_label_loss(weak, strong, threshold=0.9)
    conf = weak.softmax(1).max(1).values
    assert mask.tolist() == (conf >= 0.9).float().tolist() == [1.0, 0.0, 1.0, 1.0]
    assert pseudo.tolist() == [0, 0, 2, 1]
    expected = (F.cross_entropy(strong, pseudo, reduction="none") * mask).sum() / 4  # 1/(mu B), not 1/#accepted
    torch.testing.assert_close(loss, expected)


def test_pseudo_labels_carry_no_gradient():
    """Gradients reach only the network that receives the strong view, never the labelling network."""
    labeller, student = _net(seed=1), _net(width=0.0625, seed=2)
    b = _batch()
    loss, mask, _ = pseudo_label_loss(labeller(b["u_weak"]), student(b["u_strong"]), threshold=0.0)
    assert mask.all()
    loss.backward()
    assert all(p.grad is None for p in labeller.parameters())
    assert sum(p.grad.abs().sum() for p in student.parameters() if p.grad is not None) > 0
    weak = torch.randn(6, 4, requires_grad=True)
    strong = torch.randn(6, 4, requires_grad=True)
    pseudo_label_loss(weak, strong, 0.0)[0].backward()
    assert weak.grad is None and strong.grad.abs().sum() > 0


def test_cmpl_with_identical_networks_is_twice_fixmatch():
    net = _net()
    torch.nn.init.normal_(net.fc.weight, std=2.0)  # confident, varied predictions so the threshold matters
    batch = _batch()
    with torch.no_grad():  # the same concatenated forward as compute_losses: threshold at the median confidence
        logits = net(torch.cat([batch["x"], batch["u_weak"], batch["u_strong"]]))
    conf = logits[4:12].softmax(1).max(1).values.sort().values
    for threshold in (0.0, float(conf[4])):
        cmpl = CMPLModule(net, net, threshold=threshold, lambda_u=0.7)
        fixmatch = FixMatchModule(net, threshold=threshold, lambda_u=0.7)
        net.zero_grad()
        lc = cmpl.compute_losses(batch)
        lc["loss"].backward()
        grads_c = [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        lf = fixmatch.compute_losses(batch)
        lf["loss"].backward()
        torch.testing.assert_close(lc["loss"], 2 * lf["loss"])
        torch.testing.assert_close(lc["loss_u"], 2 * lf["loss_u"])
        mask_rate = float(fixmatch.pl_stats["self"].mask_rate.compute())
        for gc, p in zip(grads_c, net.parameters()):
            torch.testing.assert_close(gc, 2 * p.grad, rtol=1e-4, atol=1e-6)
    assert 0 < mask_rate < 1 and lf["loss_u"] > 0  # about half the pseudo-labels accepted


def test_cmpl_differs_from_fixmatch_with_distinct_networks():
    batch = _batch()
    primary, aux = _net(seed=1), _net(width=0.0625, seed=2)
    out = CMPLModule(primary, aux, threshold=0.0).compute_losses(batch)
    lf_p = FixMatchModule(primary, threshold=0.0).compute_losses(batch)
    lf_a = FixMatchModule(aux, threshold=0.0).compute_losses(batch)
    torch.testing.assert_close(out["loss_s"], lf_p["loss_s"] + lf_a["loss_s"])
    assert not torch.allclose(out["loss_u"], lf_p["loss_u"] + lf_a["loss_u"])  # cross, not self, labelling


def test_short_run_on_embedded_actions_beats_chance(tmp_path):
    """CMPL on generated UCF-layout videos (70 % labeled, so 100 steps suffice): selected on videos held out of the
    training list, tested on the test list (2 clips x 3 crops and 1 x 1), primary top-1 clearly above chance."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pl.seed_everything(0)
        dm = EmbeddedActionsDataModule(
            root=str(tmp_path / "embedded_actions"), generator=dict(groups=8, clips_per_group=2, test_groups=2),
            labeled_percent=70, batch_size=12, mu=1, steps_per_epoch=20, num_workers=0, frames=8, stride=2,
            val_clips=1, test_clips=2, eval_batch_size=24, num_classes=6,
        )  # fmt: skip
        opt = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        model = CMPLModule(_net(classes=6), _net(width=0.03125, classes=6, seed=1), threshold=0.95, optimizer=opt,
                           warmup_epochs=0.2, ema_decay=0.9)  # fmt: skip
        trainer = pl.Trainer(accelerator="cpu", max_epochs=5, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             check_val_every_n_epoch=5)  # fmt: skip
        trainer.fit(model, datamodule=dm)
        val = dict(trainer.callback_metrics)
        trainer.test(model, datamodule=dm)
    finally:
        torch.set_num_threads(threads)
    m = trainer.callback_metrics
    assert dm.split_file.is_file() and dm.skipped == 0
    assert len(dm.val_idx) == 12 and len(dm._datasets["test"]) == 24  # 1 group x 2 clips x 6 classes held out
    assert 0.0 <= float(val["val/top1"]) <= 1.0
    for direction in ("A_to_F", "F_to_A"):
        assert 0.0 <= float(val[f"train/{direction}/mask_rate"]) <= 1.0
    assert torch.isfinite(val["train/loss_epoch"])
    assert {"test/top1", "test/aux_top1", "test_1x1/top1", "test_1x1/aux_top1"} <= set(m)
    assert float(m["test/top1"]) > 0.25, float(m["test/top1"])  # chance 1/6; 6 of 24 test videos
    assert float(m["test_1x1/top1"]) > 0.25, float(m["test_1x1/top1"])


def test_supervised_module_loss_falls():
    net = _net()
    model = SupervisedVideoModule(net, optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    batch = _batch()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    first = model.compute_losses(batch)["loss"]
    for _ in range(15):
        opt.zero_grad()
        model.compute_losses(batch)["loss"].backward()
        opt.step()
    assert model.compute_losses(batch)["loss"] < 0.5 * first


@pytest.mark.parametrize("method", ["fixmatch", "cmpl"])
def test_pseudo_labels_are_computed_without_dropout(method):
    """With dropout 0.5 before the classifier, the weak-view pseudo-labels are those of the same weights without
    dropout (FixMatch has none: google-research/fixmatch libml/models.py dropout=0), draw after draw; the labeled
    and strong views still get dropout."""
    net = _net(dropout=0.5)
    torch.nn.init.normal_(net.fc.weight, std=3.0)
    plain = copy.deepcopy(net)
    plain.dropout.p = 0.0
    batch = _batch(b=8, mu=4)  # 32 unlabeled clips
    with torch.no_grad():  # same concatenated training-mode forward, so BatchNorm sees the same batch
        reference = plain(torch.cat([batch["x"], batch["u_weak"], batch["u_strong"]]))[8:40].argmax(1)
    batch["u_y"] = reference
    model = FixMatchModule(net, threshold=0.0) if method == "fixmatch" else CMPLModule(net, net, threshold=0.0)
    losses = []
    for seed in range(3):
        torch.manual_seed(seed)
        losses.append(float(model.compute_losses(batch)["loss_s"]))
        for stats in model.pl_stats.values():  # u_y = the dropout-free labels: every pseudo-label matches
            assert float(stats.acc_all.compute()) == 1.0
            stats.acc_all.reset()
    assert len(set(losses)) == 3  # dropout still acts on the labeled (and strong) views
    weak = view_logits(net, [batch["u_weak"], batch["x"]], plain=(True, False))[0]
    assert torch.equal(weak.argmax(1), plain(torch.cat([batch["u_weak"], batch["x"]]))[:32].argmax(1))


class _RecordLive(pl.Callback):
    def __init__(self):
        self.live = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.live.append([p.detach().clone() for p in pl_module.net.parameters()])


def _fit(model, batches, epochs, ckpt_path=None, callbacks=()):
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=list(callbacks))  # fmt: skip
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None), ckpt_path=ckpt_path)
    return trainer


def _fixmatch(ema_decay):
    opt = functools.partial(torch.optim.SGD, lr=0.2, momentum=0.9)
    return FixMatchModule(_net(seed=3), threshold=0.0, optimizer=opt, cosine=False, ema_decay=ema_decay)


def test_ema_model_follows_fixmatch_update_and_is_evaluated():
    """theta_ema <- d theta_ema + (1 - d) theta after every optimiser step, BatchNorm statistics copied (FixMatch:
    tf.train.ExponentialMovingAverage over the trainable variables); evaluation and forward use the EMA network,
    which the optimiser never touches. On by default at 0.999."""
    assert FixMatchModule(_net()).ema_decay == 0.999 and CMPLModule(_net(), _net(seed=1)).ema_decay == 0.999
    torch.manual_seed(0)
    model, record = _fixmatch(0.5), _RecordLive()
    expected = [p.detach().clone() for p in model.net.parameters()]
    trainer = _fit(model, [_batch(b=2, mu=1, seed=s) for s in range(3)], 1, callbacks=[record])
    assert len(record.live) == 3 and int(model.ema_steps) == 3
    for live in record.live:
        expected = [0.5 * e + 0.5 * p for e, p in zip(expected, live)]
    ema = model.ema[0]
    for e, p in zip(expected, ema.parameters(), strict=True):
        torch.testing.assert_close(p, e)
    assert any((p - q).abs().max() > 1e-4 for p, q in zip(ema.parameters(), model.net.parameters()))
    for b_ema, b in zip(ema.buffers(), model.net.buffers()):
        assert torch.equal(b_ema, b)
    assert model.eval_nets()[0] is ema and any(k.startswith("ema.0.") for k in model.state_dict())
    optimised = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in ema.parameters()}
    model.eval()
    x = _batch(seed=5)["x"]
    torch.testing.assert_close(model(x), ema(x))


def test_ema_checkpoint_resume_is_exact(tmp_path):
    """Two epochs in one go == one epoch, checkpoint, resume for the second: live and EMA weights, EMA step count."""
    batches = [_batch(b=2, mu=1, seed=s) for s in range(2)]
    full = _fixmatch(0.9)
    _fit(full, batches, 2)
    part = _fixmatch(0.9)
    _fit(part, batches, 1).save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed = _fixmatch(0.9)
    _fit(resumed, batches, 2, ckpt_path=tmp_path / "epoch1.ckpt")
    state = resumed.state_dict()
    assert int(state["ema_steps"]) == 4
    for k, v in full.state_dict().items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0, msg=k)


def test_train_entry_point_tests_the_checkpoint_selected_on_validation(tmp_path):
    """experiments/train.py with test_after_fit (the recognition experiments): fit selects on held-out training
    videos, then the best checkpoint is tested with the 10 x 3 protocol and 1 x 1; both are logged."""
    env = dict(os.environ, SUITE_LOG_DIR=str(tmp_path / "logs"), SUITE_DATA_DIR=str(tmp_path / "data"),
               WANDB_MODE="disabled", OMP_NUM_THREADS="1")  # fmt: skip
    overrides = ["experiment=cmpl_demo", "run_id=test", "print_config=false", "logger=csv", "trainer.max_epochs=2",
                 "trainer.check_val_every_n_epoch=1", "data.steps_per_epoch=2", "data.batch_size=6", "data.mu=1",
                 "data.num_workers=0", "data.generator.groups=8", "data.generator.test_groups=2",
                 "data.eval_batch_size=12"]  # fmt: skip
    proc = subprocess.run([sys.executable, "experiments/train.py", *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "logs" / "cmpl_demo" / "test"
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    tested = [r for r in rows if r.get("test/top1")]
    assert len(tested) == 1 and tested[0].get("test_1x1/top1") and tested[0].get("test/aux_top1")
    assert any(r.get("val/top1") for r in rows)
    split = tmp_path / "data" / "embedded_actions" / "splits" / "ucf101_split1_10pct_seed0_val2.json"
    assert split.is_file() and '"val"' in split.read_text()
