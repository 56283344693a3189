"""Supervised / FixMatch / CMPL LightningModules (lightning_modules/semi_supervised.py; spec cmpl.md §3, §9).

Budget: ~60 s on 2 idle CPU cores (most of it the short training run on generated videos)."""

import functools

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from datamodules.embedded_actions import EmbeddedActionsDataModule
from lightning_modules.semi_supervised import (
    CMPLModule,
    FixMatchModule,
    SupervisedVideoModule,
    pseudo_label_loss,
)
from networks.resnet3d import ResNet3d


def _net(width=0.125, classes=4, seed=0):
    torch.manual_seed(seed)
    return ResNet3d(depth=18, num_classes=classes, width_mult=width, inflate=[1, 1, 1, 1], dropout=0.0)


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
    """CMPL on generated UCF-layout videos (90 % labeled, so 100 steps suffice): primary top-1 on the
    held-out groups clearly above chance (1/6)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pl.seed_everything(0)
        dm = EmbeddedActionsDataModule(
            root=str(tmp_path / "embedded_actions"), generator=dict(groups=8, clips_per_group=2, test_groups=2),
            labeled_percent=90, batch_size=12, mu=1, steps_per_epoch=20, num_workers=0, frames=8, stride=2,
            val_clips=1, eval_batch_size=24, num_classes=6,
        )  # fmt: skip
        opt = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        model = CMPLModule(_net(classes=6), _net(width=0.03125, classes=6, seed=1), threshold=0.95, optimizer=opt,
                           warmup_epochs=0.2)  # fmt: skip
        trainer = pl.Trainer(accelerator="cpu", max_epochs=5, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             check_val_every_n_epoch=5)  # fmt: skip
        trainer.fit(model, datamodule=dm)
    finally:
        torch.set_num_threads(threads)
    m = trainer.callback_metrics
    assert dm.split_file.is_file() and dm.skipped == 0
    assert float(m["val/top1"]) > 0.25, float(m["val/top1"])  # chance 1/6; 6 of 24 test videos
    for direction in ("A_to_F", "F_to_A"):
        assert 0.0 <= float(m[f"train/{direction}/mask_rate"]) <= 1.0
    assert torch.isfinite(m["train/loss_epoch"])


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
