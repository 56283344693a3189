"""GAN base: phases as data, D records and taps, lazy regularisation, EMA, run state, checkpoints, exact resume,
a toy method built from the public API (budget ~70 s)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.callbacks.checkpointing import KimgCheckpoint
from lightning_modules.config import ConfigError, check_keys
from lightning_modules.gan import ema_beta, update_ema
from lightning_modules.phases import Phase, PhaseOutput, lazy_adam, replace_phase
from lightning_modules.stylegan2_ada import StyleGAN2ADAModule
from tests.lightning_modules.gan_helpers import random_batch, tiny_datamodule, tiny_module, tiny_networks, tiny_trainer


def test_lazy_adam_applies_interval_correction():
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = lazy_adam(p, lr=0.002, betas=(0.0, 0.99), eps=1e-8, reg_interval=16)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.002 * 16 / 17)
    assert group["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    plain = lazy_adam(p, lr=0.002, betas=(0.0, 0.99), eps=1e-8, reg_interval=None).param_groups[0]
    assert plain["lr"] == 0.002 and plain["betas"] == (0.0, 0.99)


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_adam_implementations_take_the_same_steps(impl):
    """``OptimizerSpec.impl``: torch's fused kernel and multi-tensor ops update as the per-tensor loop (rounding)."""
    torch.manual_seed(0)
    start = [torch.randn(16, 8), torch.randn(8)]
    grads = [[torch.randn_like(t) for t in start] for _ in range(5)]
    finals = {}
    for name in ("loop", impl):
        params = [nn.Parameter(t.clone()) for t in start]
        opt = lazy_adam(params, lr=0.01, betas=(0.0, 0.99), eps=1e-8, reg_interval=4, impl=name)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        finals[name] = [p.detach() for p in params]
    for a, b, s in zip(finals["loop"], finals[impl], start):
        assert not torch.equal(a, s)  # the steps moved the weights
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="optimizer impl='fast'"):
        lazy_adam([nn.Parameter(torch.zeros(1))], 0.1, (0.0, 0.99), 1e-8, None, impl="fast")


def test_ema_beta_half_life_and_rampup():
    # batch 64, 20 kimg half-life -> 0.5 ** (64 / 20000).
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


def test_stylegan2_phases_run_regularisation_lazily_from_iteration_zero():
    module = tiny_module(g_reg_interval=4, d_reg_interval=16)

    def due(it):
        return [p.name for p in module.phases if p.runs_at(it)]

    assert due(0) == ["Gmain", "Greg", "Dmain", "Dreg"]
    assert due(1) == ["Gmain", "Dmain"]
    assert due(4) == ["Gmain", "Greg", "Dmain"]
    assert due(16) == ["Gmain", "Greg", "Dmain", "Dreg"]
    gains = {p.name: p.gain for p in module.phases}
    assert gains == {"Gmain": 1, "Greg": 4, "Dmain": 1, "Dreg": 16}
    # A weight of 0 disables the phase; replace_phase refuses an unknown name.
    assert not [p for p in tiny_module(r1_gamma=0.0).phases if p.name == "Dreg" and p.runs_at(0)]
    with pytest.raises(KeyError, match="no phase 'Dfoo'"):
        replace_phase(module.phases, "Dfoo", interval=2)


class PhaseRecorder(StyleGAN2ADAModule):
    """Records which network changed in each phase (through the public after_phase hook)."""

    def on_train_start(self):
        self.changes = []
        self._snap = {"G": self._flat(self.G), "D": self._flat(self.D)}

    @staticmethod
    def _flat(net):
        return torch.cat([p.detach().flatten() for p in net.parameters()]).clone()

    def after_phase(self, phase, out):
        now = {"G": self._flat(self.G), "D": self._flat(self.D)}
        changed = {k: not torch.equal(now[k], self._snap[k]) for k in now}
        grads = {
            k: any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(self, k).parameters())
            for k in ("G", "D")
        }
        self.changes.append((phase.name, changed, grads, sorted(out.records)))
        self._snap = now
        for p in self.parameters():
            p.grad = None


def test_each_phase_updates_only_its_network_and_returns_its_records(tmp_path):
    G, D = tiny_networks()
    module = PhaseRecorder(
        G, D, batch_size=4, total_kimg=0.008, g_reg_interval=2, d_reg_interval=2, r1_gamma=1.0, sample_every_kimg=100
    )
    tiny_trainer(tmp_path).fit(module, datamodule=tiny_datamodule())
    assert [c[0] for c in module.changes] == ["Gmain", "Greg", "Dmain", "Dreg", "Gmain", "Dmain"]
    for phase, changed, grads, _ in module.changes:
        trained, frozen = ("G", "D") if phase.startswith("G") else ("D", "G")
        assert changed[trained], f"{phase} did not update {trained}"
        assert not changed[frozen], f"{phase} changed {frozen}"
        assert not grads[frozen], f"{phase} left gradients on {frozen}"
    records = {phase: rec for phase, _, _, rec in module.changes}
    assert records["Gmain"] == ["d_fake", "fake"] and records["Dmain"] == ["d_fake", "d_real", "fake", "real"]
    assert module.progress.seen_img == 8 and module.progress.iteration == 2
    assert "seen_img" not in module.state_dict(), "run state lives on the host, not in module buffers"


def test_d_records_carry_the_declared_taps_of_each_pass():
    torch.manual_seed(0)
    module = tiny_module()
    module.d_taps = {"gmain.fake": ("b8", "epilogue_fc"), "dmain.real": ("b16",)}
    real = random_batch()
    g = module.gmain_loss(real)
    d_fake = g.records["d_fake"]
    assert sorted(d_fake.taps) == ["b8", "epilogue_fc"] and d_fake.input.shape == real.img.shape
    assert d_fake.taps["b8"].requires_grad, "taps stay in the graph (G's loss can use them)"
    d = module.dmain_loss(real)
    assert sorted(d.records["d_real"].taps) == ["b16"] and d.records["d_fake"].taps == {}
    # The logits of the record are D's output on the record's input.
    torch.testing.assert_close(module.D(d_fake.input, real.c), d_fake.logits)


def test_r1_and_path_length_give_finite_second_order_gradients():
    module = tiny_module()
    real = random_batch()
    for loss_fn, net in ((module.dreg_loss, module.D), (module.greg_loss, module.G)):
        loss = sum(loss_fn(real).terms.values())
        grads = torch.autograd.grad(loss, [p for p in net.parameters() if p.requires_grad], allow_unused=True)
        got = [g for g in grads if g is not None]
        assert got and all(torch.isfinite(g).all() for g in got)
        assert sum(g.abs().sum() for g in got) > 0
    assert float(module.pl_mean) != 0.0


def test_style_mixing_draws_on_the_device_and_mixes_from_the_cutoff():
    torch.manual_seed(0)
    module = tiny_module(style_mixing_prob=1.0)
    z, c = torch.randn(4, 16), torch.zeros(4, 0)
    ws = module.G.mapping(z, c)
    cutoffs = set()
    for seed in range(12):
        torch.manual_seed(seed)
        mixed = module.mix_styles(ws, z, c)
        same = (mixed == ws).all(dim=2).all(dim=0)
        cutoff = int(same.long().argmin()) if not same.all() else ws.shape[1]
        assert same[:cutoff].all() and not same[cutoff:].any()
        cutoffs.add(cutoff)
    assert cutoffs <= set(range(1, ws.shape[1])) and len(cutoffs) > 1
    module.hparams.style_mixing_prob = 0.0
    assert torch.equal(module.mix_styles(ws, z, c), ws)


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_training_changes_weights_writes_checkpoint_and_resumes_exactly(tmp_path):
    # Uninterrupted: 5 iterations of batch 4 (0.02 kimg).
    torch.manual_seed(0)
    full = tiny_module(total_kimg=0.02)
    start = _state(full)
    tiny_trainer(tmp_path / "full").fit(full, datamodule=tiny_datamodule())
    assert full.progress.iteration == 5
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
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["networks"]["G"]["init_kwargs"]["img_resolution"] == 16
    assert ckpt["run_state"]["progress"] == {"seen_img": 12, "iteration": 3}

    torch.manual_seed(123)  # a different global state: resume must restore its own streams
    resumed = tiny_module(total_kimg=0.02)
    tiny_trainer(tmp_path / "resumed").fit(resumed, datamodule=tiny_datamodule(), ckpt_path=str(last))
    assert resumed.progress.iteration == 5
    ref, got = full.state_dict(), resumed.state_dict()
    for k in ref:
        assert torch.equal(ref[k], got[k]), f"resume diverged at {k}"
    assert math.isclose(full.augment_p, resumed.augment_p) and full.augment_p == float(full.augment_pipe.p)

    # A checkpoint of another architecture is refused with the tensor's name and both shapes.
    G, D = tiny_networks()
    other_G = type(G)(**{**G.init_kwargs, "synthesis_kwargs": {"channel_base": 256, "channel_max": 32}})
    other = StyleGAN2ADAModule(other_G, D, batch_size=4, total_kimg=0.02)
    with pytest.raises(RuntimeError, match=r"size mismatch for G\.synthesis.*torch\.Size"):
        tiny_trainer(tmp_path / "other").fit(other, datamodule=tiny_datamodule(), ckpt_path=str(last))


def test_init_from_is_read_once_at_a_fresh_start_and_recorded_as_state(tmp_path):
    from networks.checkpoint import save_networks

    torch.manual_seed(1)
    source = tiny_module()
    net_file = tmp_path / "nets.pt"
    save_networks(net_file, {"G": source.G, "D": source.D})  # no G_ema: falls back to the file's G
    module = tiny_module(init_from=str(net_file), ema_rampup=0.05, total_kimg=0.004)
    ckpt_dir = tmp_path / "ckpt"
    tiny_trainer(tmp_path, callbacks=[KimgCheckpoint(str(ckpt_dir), every_kimg=100)]).fit(
        module, datamodule=tiny_datamodule()
    )
    assert module.init_record["parts"] == {"G": "file:G", "D": "file:D", "G_ema": "fallback:G"}
    assert module.hparams.ema_rampup == 0.05 and module.ema_rampup is None, "config untouched, effect recorded"
    assert module.ada.kimg == 100  # NVlabs --resume speeds ADA up
    # Resume reads the checkpoint only: the init file may be gone.
    net_file.unlink()
    resumed = tiny_module(init_from=str(net_file), ema_rampup=0.05, total_kimg=0.008)
    tiny_trainer(tmp_path / "r").fit(resumed, datamodule=tiny_datamodule(), ckpt_path=str(ckpt_dir / "last.ckpt"))
    assert resumed.progress.iteration == 2 and resumed.init_record["source"] == str(net_file)
    assert resumed.ema_rampup is None and resumed.ada.kimg == 100


class ToyMethod(StyleGAN2ADAModule):
    """A method built from the public API only: one extra phase (a feature-matching term on D, every 2nd
    iteration) that reads a tap of its own D pass, and one extra tap declared on the Gmain pass."""

    def __init__(self, *args, toy_weight: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.d_taps = {"gmain.fake": ("b8",)}
        self.phases = self.phases + [Phase("Dtoy", ("D",), self.toy_loss, interval=2)]
        self.toy_weight = toy_weight

    def gmain_loss(self, real):
        out = super().gmain_loss(real)
        tapped = out.records["d_fake"].taps["b8"]
        return PhaseOutput({**out.terms, "G/toy_energy": 1e-3 * tapped.square().mean()}, out.records)

    def toy_loss(self, real):
        d = self.run_D(real.img, real.c, taps=("b16",))
        with torch.no_grad():
            fake = self.run_G(self.sample_z(len(real)), self.sample_c(len(real), real.c))
        f = self.run_D(fake.img, fake.c, taps=("b16",))
        gap = F.mse_loss(d.taps["b16"].mean(0), f.taps["b16"].mean(0))
        self.stats.report("toy/gap", gap)
        return PhaseOutput({"D/toy": self.toy_weight * gap}, {"d_real": d, "d_fake": f})


def test_toy_method_with_an_extra_phase_and_tap_trains_and_resumes_exactly(tmp_path):
    runs = {}
    for name, kimg, ckpt in (("full", 0.016, None), ("part", 0.008, None), ("resumed", 0.016, "part")):
        torch.manual_seed(0)
        module = tiny_module(cls=ToyMethod, total_kimg=kimg)
        callbacks = [KimgCheckpoint(str(tmp_path / name / "ckpt"), every_kimg=100)]
        ckpt_path = str(tmp_path / ckpt / "ckpt" / "last.ckpt") if ckpt else None
        tiny_trainer(tmp_path / name, callbacks=callbacks).fit(
            module, datamodule=tiny_datamodule(), ckpt_path=ckpt_path
        )
        runs[name] = module
    assert [p.name for p in runs["full"].phases] == ["Gmain", "Greg", "Dmain", "Dreg", "Dtoy"]
    assert runs["full"].progress.iteration == 4
    for k, v in runs["full"].state_dict().items():
        assert torch.equal(v, runs["resumed"].state_dict()[k]), f"toy resume diverged at {k}"


def test_conditional_grid_labels_come_from_the_dataset():
    class Labelled:
        def __len__(self):
            return 6

        def get_label(self, i):
            return torch.nn.functional.one_hot(torch.tensor(i % 3), 3).float().numpy()

    G, D = tiny_networks(c_dim=3)
    module = StyleGAN2ADAModule(G, D, batch_size=4, sample_grid=(2, 4))
    module.trainer = type("T", (), {"datamodule": type("DM", (), {"train_dataset": Labelled()})()})()
    labels = module.grid_labels()
    assert labels.shape == (8, 3) and (labels.sum(1) == 1).all()
    classes = labels.argmax(1)
    assert set(classes.tolist()) == {0, 1, 2} and torch.equal(classes, classes.sort().values)


def test_module_keys_and_blocks_are_validated_naming_the_key():
    check_keys({"_target_": "lightning_modules.stylegan2_ada.StyleGAN2ADAModule", "r1_gamma": 1.0})
    with pytest.raises(ConfigError, match=r"model\.r1_gamma.*not used by GenDAModule"):
        check_keys({"_target_": "lightning_modules.genda.GenDAModule", "r1_gamma": 1.0, "adaptor_l2": 0.0})
    # Keys of subclasses taking **kwargs are followed up to the base.
    with pytest.raises(ConfigError, match=r"model\.r1_gama"):
        check_keys({"_target_": "lightning_modules.insgen.InsGenModule", "r1_gama": 1.0})
    with pytest.raises(ConfigError, match=r"model\.ada\.interval"):
        tiny_module(ada={"interval": 0})
    with pytest.raises(ConfigError, match=r"model\.ada\.targte"):
        tiny_module(ada={"targte": 0.6})


@pytest.mark.parametrize(
    ("total", "seen", "shown"), [(30, 12_000, "kimg 12.0/30 (40.0 %)"), (0.064, 64, "kimg 0.064/0.064")]
)
def test_progress_summary_shows_kimg_at_the_precision_of_the_budget(total, seen, shown):
    from lightning_modules.run_state import RunProgress

    progress = RunProgress(total_kimg=total)
    progress.advance(seen)
    assert progress.summary().startswith(shown)
