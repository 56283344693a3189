"""Base adversarial module: phases, lazy regularisation, EMA, checkpoints and exact resume (budget ~60 s)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.callbacks.checkpointing import KimgCheckpoint
from lightning_modules.gan import AdversarialModule, ema_beta, lazy_adam, update_ema
from tests.lightning_modules.gan_helpers import tiny_datamodule, tiny_module, tiny_networks, tiny_trainer


def test_lazy_adam_applies_interval_correction():
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = lazy_adam(p, lr=0.002, betas=(0.0, 0.99), eps=1e-8, reg_interval=16)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.002 * 16 / 17)
    assert group["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    plain = lazy_adam(p, lr=0.002, betas=(0.0, 0.99), eps=1e-8, reg_interval=None).param_groups[0]
    assert plain["lr"] == 0.002 and plain["betas"] == (0.0, 0.99)


def test_ema_beta_half_life_and_rampup():
    # batch 64, 20 kimg half-life -> 0.5 ** (64 / 20000) (spec §7.3 example).
    assert ema_beta(64, 20, None, 10**9) == pytest.approx(0.5 ** (64 / 20000))
    # Ramp-up caps the half-life at seen_img * rampup.
    assert ema_beta(64, 20, 0.05, 1000) == pytest.approx(0.5 ** (64 / 50))


def test_update_ema_averages_parameters_and_copies_buffers():
    G, _ = tiny_networks()
    ema, _ = tiny_networks()
    with torch.no_grad():
        G.mapping.w_avg.fill_(3.0)
    p_live = next(G.parameters()).detach().clone()
    p_ema = next(ema.parameters()).detach().clone()
    update_ema(ema, G, beta=0.25)
    torch.testing.assert_close(next(ema.parameters()), 0.25 * p_ema + 0.75 * p_live)
    assert torch.equal(ema.mapping.w_avg, G.mapping.w_avg)


def test_phase_schedule_runs_regularisation_lazily_from_iteration_zero():
    module = tiny_module(g_reg_interval=4, d_reg_interval=16)
    assert module.phase_schedule(0) == ["Gmain", "Greg", "Dmain", "Dreg"]
    assert module.phase_schedule(1) == ["Gmain", "Dmain"]
    assert module.phase_schedule(4) == ["Gmain", "Greg", "Dmain"]
    assert module.phase_schedule(16) == ["Gmain", "Greg", "Dmain", "Dreg"]


class PhaseRecorder(AdversarialModule):
    """Records which network changed in each phase."""

    def on_train_start(self):
        self.changes = []

    def training_step(self, batch, batch_idx):
        self._snap = {"G": self._flat(self.G), "D": self._flat(self.D)}
        return super().training_step(batch, batch_idx)

    @staticmethod
    def _flat(net):
        return torch.cat([p.detach().flatten() for p in net.parameters()]).clone()

    def after_phase(self, phase, real_img, real_c):
        now = {"G": self._flat(self.G), "D": self._flat(self.D)}
        changed = {k: not torch.equal(now[k], self._snap[k]) for k in now}
        grads = {
            k: any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(self, k).parameters())
            for k in ("G", "D")
        }
        self.changes.append((phase, changed, grads))
        self._snap = now
        for p in self.parameters():
            p.grad = None


def test_each_phase_updates_only_its_network(tmp_path):
    G, D = tiny_networks()
    module = PhaseRecorder(
        G,
        D,
        batch_size=4,
        total_kimg=0.008,
        g_reg_interval=2,
        d_reg_interval=2,
        r1_gamma=1.0,
        sample_every_kimg=100,
    )
    tiny_trainer(tmp_path).fit(module, datamodule=tiny_datamodule())
    phases = [p for p, _, _ in module.changes]
    assert phases == ["Gmain", "Greg", "Dmain", "Dreg", "Gmain", "Dmain"]
    for phase, changed, grads in module.changes:
        trained, frozen = ("G", "D") if phase.startswith("G") else ("D", "G")
        assert changed[trained], f"{phase} did not update {trained}"
        assert not changed[frozen], f"{phase} changed {frozen}"
        assert not grads[frozen], f"{phase} left gradients on {frozen}"
    assert int(module.seen_img) == 8 and int(module.iteration) == 2


def test_r1_and_path_length_give_finite_second_order_gradients():
    module = tiny_module()
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    c = torch.zeros(4, 0)
    module._stats = {}
    for loss_fn, net in ((module.dreg_loss, module.D), (module.greg_loss, module.G)):
        terms = loss_fn(real, c)
        loss = sum(terms.values())
        grads = torch.autograd.grad(loss, [p for p in net.parameters() if p.requires_grad], allow_unused=True)
        got = [g for g in grads if g is not None]
        assert got and all(torch.isfinite(g).all() for g in got)
        assert sum(g.abs().sum() for g in got) > 0
    assert float(module.pl_mean) != 0.0


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_training_changes_weights_writes_checkpoint_and_resumes_exactly(tmp_path):
    # Uninterrupted: 5 iterations of batch 4 (0.02 kimg).
    torch.manual_seed(0)
    full = tiny_module(total_kimg=0.02)
    start = _weights(full)
    tiny_trainer(tmp_path / "full").fit(full, datamodule=tiny_datamodule())
    assert int(full.iteration) == 5
    changed = [k for k in start if k.startswith(("G.", "D.")) and not torch.equal(start[k], full.state_dict()[k])]
    assert changed, "training did not change any weight"

    # Interrupted after 3 iterations (checkpoint at the end), then resumed to 5.
    torch.manual_seed(0)
    part = tiny_module(total_kimg=0.012)
    ckpt_dir = tmp_path / "part" / "ckpt"
    tiny_trainer(tmp_path / "part", callbacks=[KimgCheckpoint(str(ckpt_dir), every_kimg=100)]).fit(
        part, datamodule=tiny_datamodule()
    )
    last = ckpt_dir / "last.ckpt"
    assert last.is_file() and not (ckpt_dir / "last.ckpt.tmp").exists()
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["networks"]["G"]["init_kwargs"]["img_resolution"] == 16
    assert int(ckpt["state_dict"]["seen_img"]) == 12

    torch.manual_seed(123)  # a different global state: resume must restore its own streams
    resumed = tiny_module(total_kimg=0.02)
    tiny_trainer(tmp_path / "resumed").fit(resumed, datamodule=tiny_datamodule(), ckpt_path=str(last))
    assert int(resumed.iteration) == 5
    ref, got = full.state_dict(), resumed.state_dict()
    for k in ref:
        assert torch.equal(ref[k], got[k]), f"resume diverged at {k}"
    assert math.isclose(float(full.augment_pipe.p), float(resumed.augment_pipe.p))

    # A checkpoint of another architecture is refused with the tensor's name and both shapes.
    G, D = tiny_networks()
    other_G = type(G)(**{**G.init_kwargs, "synthesis_kwargs": {"channel_base": 256, "channel_max": 32}})
    other = AdversarialModule(other_G, D, batch_size=4, total_kimg=0.02)
    with pytest.raises(RuntimeError, match=r"size mismatch for G\.synthesis.*torch\.Size"):
        tiny_trainer(tmp_path / "other").fit(other, datamodule=tiny_datamodule(), ckpt_path=str(last))
