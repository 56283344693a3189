"""InsGen module: phases, momentum D, heads, queues, losses, resume from plain StyleGAN2, configs (budget ~60 s)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules import contrastive
from lightning_modules.callbacks.checkpointing import KimgCheckpoint
from lightning_modules.config import ConfigError, parse_block
from lightning_modules.gan import RealBatch
from lightning_modules.insgen import InsGenConfig, InsGenModule, default_queue_size
from networks.checkpoint import save_networks
from tests.lightning_modules.gan_helpers import random_batch, tiny_datamodule, tiny_module, tiny_networks, tiny_trainer

CONF = Path(__file__).resolve().parents[2] / "conf"


def tiny_insgen(cls=InsGenModule, insgen=None, **kwargs):
    kwargs.setdefault("total_kimg", 0.008)
    cfg = {"queue": {"real_size": 6, "fake_size": 6}, **(insgen or {})}
    return tiny_module(cls=cls, insgen=cfg, **kwargs)


def flat(module) -> torch.Tensor:
    return torch.cat([t.detach().flatten().float() for t in module.state_dict().values()]).clone()


def flat_params(module) -> torch.Tensor:
    """Parameters only (G's w_avg buffer is tracked in every phase that runs G)."""
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


class InsGenRecorder(InsGenModule):
    """Snapshots networks, heads and queues around every phase and around the D_ema update."""

    def on_train_start(self):
        self.records, self.ema_checks = [], []
        self._snap = self._state()

    def update_d_ema(self):
        before = [p.detach().clone() for p in self.D_ema.parameters()]
        super().update_d_ema()
        m = self.cfg.momentum_d_ema
        expected = [m * b + (1 - m) * p.detach() for b, p in zip(before, self.D.parameters(), strict=True)]
        self.ema_checks.append(
            max((e - p).abs().max().item() for e, p in zip(expected, self.D_ema.parameters(), strict=True))
        )

    def _state(self):
        return {
            "G": flat_params(self.G),
            "D": flat_params(self.D),
            "DHead.mlp": flat(self.DHead.mlp),
            "GHead.mlp": flat(self.GHead.mlp),
            "DHead.momentum_mlp": [p.detach().clone() for p in self.DHead.momentum_mlp.parameters()],
            "GHead.momentum_mlp": [p.detach().clone() for p in self.GHead.momentum_mlp.parameters()],
            "GHead.mlp.params": [p.detach().clone() for p in self.GHead.mlp.parameters()],
            "queues": torch.cat([self.DHead.queue.flatten(), self.GHead.queue.flatten()]).clone(),
            "ptr": (int(self.DHead.queue_ptr), int(self.GHead.queue_ptr)),
        }

    def after_phase(self, phase, out):
        super().after_phase(phase, out)
        now = self._state()
        G_grads = any(p.grad is not None and p.grad.abs().sum() > 0 for p in self.G.parameters())
        self.records.append((phase.name, self._snap, now, G_grads, {k: v.detach() for k, v in out.terms.items()}))
        self._snap = now
        for p in self.parameters():
            p.grad = None


def test_phases_update_only_their_parts_and_momentum_updates_follow_formulas(tmp_path):
    module = tiny_insgen(InsGenRecorder)
    tiny_trainer(tmp_path).fit(module, datamodule=tiny_datamodule())
    assert [r[0] for r in module.records] == ["Gmain", "Greg", "Dmain", "Dreg", "Gmain", "Dmain"]
    m = module.cfg.momentum_head
    for phase, before, after, G_grads, stats in module.records:
        changed = {k: not torch.equal(before[k], after[k]) for k in ("G", "D", "DHead.mlp", "GHead.mlp", "queues")}
        if phase == "Gmain":
            assert changed["G"] and not changed["D"]
            # Heads and queues frozen in the G phase; GHead's momentum MLP still moves (faithful genforce/insgen quirk).
            assert not changed["DHead.mlp"] and not changed["GHead.mlp"] and not changed["queues"]
            for b, a, q in zip(
                before["GHead.momentum_mlp"],
                after["GHead.momentum_mlp"],
                before["GHead.mlp.params"],
                strict=True,
            ):
                torch.testing.assert_close(a, m * b + (1 - m) * q)
            assert all(torch.equal(a, b) for a, b in zip(before["DHead.momentum_mlp"], after["DHead.momentum_mlp"]))
            assert torch.isfinite(stats["G/id"])
        if phase == "Dmain":
            assert changed["D"] and not changed["G"] and not G_grads, "D phase must leave G without gradient"
            assert changed["DHead.mlp"] and changed["GHead.mlp"], "heads are stepped in the D phase"
            assert after["ptr"] == tuple((p + 4) % 6 for p in before["ptr"])  # batch 4 enqueued, K = 6
            assert torch.isfinite(stats["D/real_id"]) and torch.isfinite(stats["D/fake_id"])
    assert len(module.ema_checks) == 2 and max(module.ema_checks) < 1e-6
    assert not torch.equal(flat(module.D_ema), flat(module.D))


def test_d_phase_only_keeps_g_phase_heads_fixed_and_zero_lambda_g_skips_the_term():
    torch.manual_seed(0)
    module = tiny_insgen(insgen={"head_momentum_update": "d_phase_only"})
    real = random_batch()
    before = flat(module.GHead)
    terms = module.gmain_loss(real).terms
    assert "G/id" in terms and torch.equal(before, flat(module.GHead))
    terms["G/id"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.G.parameters())
    no_g = tiny_insgen(insgen={"lambda_g": 0.0})
    assert "G/id" not in no_g.gmain_loss(real).terms
    assert "gmain.fake" not in no_g.d_taps, "no tap is requested for a term that is off"


@pytest.mark.parametrize("view", ["adversarial", "separate"])
@pytest.mark.parametrize("fill", ["query", "key"])
def test_fake_queue_is_filled_from_query_features_or_keys(fill, view, monkeypatch):
    torch.manual_seed(0)
    module = tiny_insgen(insgen={"fill_fake_from": fill, "query_view": view})
    seen = {}
    original = contrastive.instance_loss

    def spy(head, feat_q, feat_k, tau, momentum=None):
        seen["DHead" if head is module.DHead else "GHead"] = (feat_q.detach(), feat_k.detach())
        return original(head, feat_q, feat_k, tau, momentum)

    monkeypatch.setattr("lightning_modules.insgen.instance_loss", spy)
    out = module.dmain_loss(random_batch())
    fq, fk = seen["GHead"]
    expected = module.GHead.key(fq if fill == "query" else fk)
    torch.testing.assert_close(module.GHead.queue[:, :4], expected.T)
    torch.testing.assert_close(module.DHead.queue[:, :4], module.DHead.key(seen["DHead"][1]).T)
    if view == "adversarial":  # the queries are the pooled b8 taps of the adversarial passes, by name
        tapped = out.records["d_real"].taps["b8"].float().mean([2, 3])
        torch.testing.assert_close(seen["DHead"][0], tapped.detach())
    else:
        assert out.records["d_real"].taps == {}


def test_adversarial_query_view_trains_as_the_separate_passes_without_augmentation(tmp_path):
    """With p = 0 the query view of the adversarial pass and the original's separate pass see the same image, so
    both settings must give the same networks, heads and queues after a run (up to float summation order)."""
    states = {}
    for view in ("adversarial", "separate"):
        torch.manual_seed(0)
        module = tiny_insgen(insgen={"query_view": view}, augment_p=0.0, ada=None)
        tiny_trainer(tmp_path / view).fit(module, datamodule=tiny_datamodule())
        assert module.progress.iteration == 2
        states[view] = module.state_dict()
    for key, value in states["adversarial"].items():
        torch.testing.assert_close(value, states["separate"][key], rtol=1e-4, atol=1e-5, msg=key)


def test_heads_trained_on_fixed_embedded_features_lower_both_contrastive_losses():
    """Heads only, on fixed features (a full D + G run is too slow for the test budget; docs/insgen.md reports
    the losses of the study runs): D features of 64 embedded faces (real ID) and of G(z) vs G(z + delta) (fake
    ID, query-side queue fill), ADA p = 0 as at the start of a run, head momentum 0.9 so that 120 steps suffice.
    Both InfoNCE losses fall once the queues hold real keys."""
    torch.manual_seed(0)
    module = tiny_insgen(augment_p=0.0, insgen={"queue": {"real_size": 32, "fake_size": 32}})
    dm = tiny_datamodule(batch_size=64)
    dm.setup("fit")
    batch = module.preprocess_batch(next(iter(dm.train_dataloader())))
    real, c = batch.img, batch.c
    with torch.no_grad():
        z = torch.randn(64, module.G.z_dim)
        fake = module.G(z, c)
        noisy = module.G(z + module.cfg.delta_sigma * torch.randn_like(z), c)
        feats = {
            "DHead": (module.query_features(real), module.key_features(real)),
            "GHead": (module.query_features(fake), module.key_features(noisy)),
        }
    g = torch.Generator().manual_seed(0)
    for name, (feat_q, feat_k) in feats.items():
        head = getattr(module, name)
        opt = torch.optim.Adam(head.mlp.parameters(), lr=1e-2, betas=(0.0, 0.99))
        history = []
        for _ in range(120):
            idx = torch.randperm(64, generator=g)[:16]
            loss, _, k = contrastive.instance_loss(head, feat_q[idx], feat_k[idx], tau=0.2, momentum=0.9)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            contrastive.enqueue(head, head.key(feat_q[idx]) if name == "GHead" else k)
            history.append(loss.item())
        first, last = sum(history[2:22]) / 20, sum(history[-20:]) / 20  # after the queue has filled (2 steps)
        assert last < 0.85 * first, f"{name}: InfoNCE did not fall ({first:.3f} -> {last:.3f})"


def test_resume_from_plain_stylegan2_checkpoint_initialises_missing_parts(tmp_path, caplog):
    # A plain StyleGAN2-ADA run writes a Lightning checkpoint after one iteration.
    torch.manual_seed(0)
    plain = tiny_module(total_kimg=0.004)
    ckpt_dir = tmp_path / "plain"
    tiny_trainer(tmp_path, callbacks=[KimgCheckpoint(str(ckpt_dir), every_kimg=100)], enable_checkpointing=True).fit(
        plain, datamodule=tiny_datamodule()
    )
    last = ckpt_dir / "last.ckpt"
    D_ckpt = {k: v.clone() for k, v in plain.D.state_dict().items()}

    # init_from (network file and Lightning checkpoint): D_ema = D, fresh heads, each logged.
    net_file = tmp_path / "plain_nets.pt"
    save_networks(net_file, {"G": plain.G, "D": plain.D, "G_ema": plain.G_ema})
    for source in (net_file, last):
        module = tiny_insgen()
        heads = flat(module.DHead), flat(module.GHead)
        with caplog.at_level(logging.INFO, logger="lightning_modules.gan"):
            caplog.clear()
            module.load_init(str(source))
        for k, v in module.D_ema.state_dict().items():
            assert torch.equal(v, D_ckpt[k]), f"D_ema.{k} not initialised from D"
        assert torch.equal(heads[0], flat(module.DHead)) and torch.equal(heads[1], flat(module.GHead))
        assert module.init_record["parts"]["D_ema"] == "fallback:D"
        assert module.init_record["parts"]["DHead"] == module.init_record["parts"]["GHead"] == "absent"
        assert "has no DHead: keeping its fresh initialisation" in caplog.text

    # An InsGen checkpoint carries D_ema and both heads in its bundle: init_from restores them from one read.
    torch.manual_seed(3)
    donor = tiny_insgen()
    donor_file = tmp_path / "insgen_nets.ckpt"
    ckpt = {"state_dict": donor.state_dict(), "networks": {}}
    donor.on_save_checkpoint(ckpt)
    torch.save({k: ckpt[k] for k in ("state_dict", "networks")}, donor_file)
    module = tiny_insgen()
    module.load_init(str(donor_file))
    assert module.init_record["parts"]["DHead"] == "file:DHead" and module.init_record["parts"]["D_ema"] == "file:D_ema"
    assert torch.equal(flat(module.DHead), flat(donor.DHead)) and torch.equal(flat(module.D_ema), flat(donor.D_ema))

    # Lightning resume (ckpt_path) into InsGen: missing D_ema / heads / head optimiser states filled in.
    module = tiny_insgen(total_kimg=0.008)
    with caplog.at_level(logging.INFO, logger="lightning_modules.insgen"):
        caplog.clear()
        tiny_trainer(tmp_path / "insgen").fit(module, datamodule=tiny_datamodule(), ckpt_path=str(last))
    assert "checkpoint has no D_ema" in caplog.text and "checkpoint has no DHead" in caplog.text
    assert module.progress.seen_img == 8 and module.progress.iteration == 2
    # D_ema was D of the checkpoint and the first resumed update mixes it with that same D.
    for k, v in module.D_ema.named_parameters():
        torch.testing.assert_close(v, D_ckpt[k], atol=1e-6, rtol=0)
    assert int(module.DHead.queue_ptr) == 4


def test_ada_linear_replaces_adaptive_rule_with_a_ramp():
    module = tiny_insgen(total_kimg=10, insgen={"ada_linear": True, "ada_linear_max": 0.6})
    assert module.ada is None
    module.progress.seen_img = 2500
    module.after_iteration()
    assert float(module.augment_pipe.p) == pytest.approx(0.6 * 2.5 / 10) and module.augment_p == pytest.approx(0.15)
    module.progress.seen_img = 20000
    module.after_iteration()
    assert float(module.augment_pipe.p) == pytest.approx(0.6)


def test_config_errors_name_the_key_and_queue_rule():
    with pytest.raises(ConfigError, match=r"model\.insgen\.temperature"):
        parse_block("model.insgen", InsGenConfig, {"temperature": 0.2})
    with pytest.raises(ConfigError, match="fill_fake_from"):
        parse_block("model.insgen", InsGenConfig, {"fill_fake_from": "keys"})
    with pytest.raises(ConfigError, match=r"model\.insgen\.queue\.size"):
        parse_block("model.insgen", InsGenConfig, {"queue": {"size": 4}})
    with pytest.raises(ConfigError, match=r"model\.insgen\.queue\.fraction"):
        parse_block("model.insgen", InsGenConfig, {"queue": {"fraction": 0}})
    G, D = tiny_networks()
    with pytest.raises(ValueError, match="augment_pipe"):
        InsGenModule(G, D, augment_pipe=None)

    class Flipped(list):
        xflip = True

    assert default_queue_size(Flipped(range(4000)), 0.05) == 200  # FFHQ-2K + mirror
    assert default_queue_size(Flipped(range(2 * 5153)), 0.05) == 514  # AFHQ-Cat + mirror
    assert default_queue_size(list(range(70000)), 0.05) == 3500


def test_experiment_configs_compose_with_root_config():
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    names = sorted(p.stem for p in (CONF / "experiment").glob("insgen_*.yaml"))
    assert {"insgen_demo", "insgen_ffhq256_2k", "insgen_ffhq256_10k", "insgen_ffhq256_140k"} <= set(names)
    assert {"insgen_afhq_cat512", "insgen_afhq_dog512", "insgen_afhq_wild512"} <= set(names)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in names:
            cfg = compose("train", overrides=[f"experiment={name}"])
            assert cfg.model._target_ == "lightning_modules.insgen.InsGenModule", name
            assert cfg.model.insgen.tau == 0.2 and cfg.model.insgen.lambda_g == 0.1, name
            if name != "insgen_demo":
                refs = {p.reference for p in cfg.metrics.protocols}
                assert refs == {"full"}, f"{name}: FID reference must be the full dataset"
        cfg = compose(
            "train",
            overrides=["experiment=insgen_demo", "hparams_search=insgen_ablation"],
            return_hydra_config=True,
        )
        params = OmegaConf.to_container(cfg.hydra.sweeper.params)
        jobs = BasicSweeper.split_arguments(
            OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()]), None
        )[0]
        assert len({tuple(job) for job in jobs}) == len(jobs) == 54
        pairs = {}  # one composed job per (lambda_fake, lambda_g) setting: the dict override merges into the block
        for job in jobs:
            insgen = dict(o.split("=", 1) for o in job)["model.insgen"]
            if insgen not in pairs:
                block = compose("train", overrides=["experiment=insgen_demo", *job]).model.insgen
                assert (
                    block.tau == 0.2
                    and str(block.delta_sigma) == dict(o.split("=", 1) for o in job)["model.insgen.delta_sigma"]
                )
                pairs[insgen] = (block.lambda_fake, block.lambda_g)
        assert sorted(pairs.values()) == [(0.0, 0.0), (1.0, 0.0), (1.0, 0.1)], "no lambda_g > 0 without the fake queue"
        for key in ("queue.fraction", "delta_sigma", "lambda_real"):
            assert f"model.insgen.{key}" in params, f"ablation sweeps no {key}"
        assert cfg.logger.wandb.group == "insgen_demo_ablation"


def test_init_from_an_original_insgen_snapshot_restores_d_ema_heads_and_queues(tmp_path, monkeypatch):
    """A genforce/insgen training-loop pickle (plain torch.nn MLPs inside the CLHeads) starts a run with its D_ema,
    heads and queues (queue pointer included): the first Dmain writes the batch's keys at the pickled pointer."""
    from tests.networks.original_pickles import head, insgen_snapshot, write_original_pickle

    torch.manual_seed(5)
    G, D = tiny_networks()
    D_ema = tiny_networks()[1]
    DHead, GHead = head(6, 2), head(6, 3)  # pointer 3, K = 6 = this run's queue size
    path = tmp_path / "network-snapshot-000200.pkl"
    write_original_pickle(path, insgen_snapshot(G, D, D_ema, DHead, GHead), monkeypatch)
    module = tiny_insgen(init_from=str(path), total_kimg=0.004)
    module.load_init(str(path))
    parts = module.init_record["parts"]
    assert parts["D_ema"] == "file:D_ema" and parts["DHead"] == "file:DHead" and parts["GHead"] == "file:GHead"
    assert torch.equal(flat(module.D_ema), flat(D_ema)) and torch.equal(flat(module.D), flat(D))
    assert torch.equal(flat(module.DHead), flat(DHead)) and torch.equal(flat(module.GHead), flat(GHead))
    tiny_trainer(tmp_path / "run").fit(module, datamodule=tiny_datamodule())
    assert module.progress.iteration == 1 and module.init_record["source"] == str(path)
    for ours, theirs in ((module.DHead, DHead), (module.GHead, GHead)):
        assert int(ours.queue_ptr) == (3 + 4) % 6
        kept = [1, 2]  # columns 3, 4, 5, 0 were overwritten by the 4 new keys
        assert torch.equal(ours.queue[:, kept], theirs.queue[:, kept])
        assert not torch.equal(ours.queue[:, [3, 4, 5, 0]], theirs.queue[:, [3, 4, 5, 0]])


class _TapD(nn.Module):
    """A tiny D with the tap API the module uses (``D(img, c, taps)``, ``D.features``): conv -> 4x4 ``b8`` -> logit."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.out = nn.Linear(channels * 16, 1)
        self.b4 = nn.Module()
        self.b4.in_channels = channels

    def features(self, img, c, taps):
        return {"b8": F.adaptive_avg_pool2d(F.leaky_relu(self.conv(img), 0.2), 4)}

    def forward(self, img, c, taps=()):
        b8 = self.features(img, c, ["b8"])["b8"]
        logits = self.out(b8.flatten(1))
        return (logits, {"b8": b8}) if taps else logits


class _LinearG(nn.Module):
    """A tiny G with the mapping/synthesis API: z -> w (repeated) -> tanh(linear) image [N, 3, 8, 8]."""

    z_dim, c_dim, w_dim, num_ws = 8, 0, 8, 2

    def __init__(self):
        super().__init__()
        self.map = nn.Linear(8, 8)
        self.syn = nn.Linear(8, 3 * 8 * 8)

    def mapping(self, z, c, update_emas=False):
        return self.map(z)[:, None].repeat(1, self.num_ws, 1)

    def synthesis(self, ws, update_emas=False):
        return torch.tanh(self.syn(ws[:, 0])).view(-1, 3, 8, 8)


class _FlipJitter(nn.Module):
    """A cheap per-sample augmentation with ADA's interface: x-flip and a brightness shift, each with probability p."""

    def __init__(self):
        super().__init__()
        self.register_buffer("p", torch.zeros([]))

    def forward(self, img):
        n = img.shape[0]
        flip = torch.rand(n, 1, 1, 1) < self.p
        img = torch.where(flip, img.flip(3), img)
        shift = (torch.rand(n, 1, 1, 1) < self.p) * torch.randn(n, 1, 1, 1) * 0.5
        return img + shift


def _term_gradients(view: str, p: float, calls: int) -> dict[str, torch.Tensor]:
    """[calls, n_params] gradients of each InfoNCE term, one fresh draw of everything per call (augmentations,
    latents, delta, keys), networks, heads and queues fixed (no step, heads restored): the D terms w.r.t. D's
    parameters the instance feature depends on, the G term w.r.t. G's (D is frozen in the G phase)."""
    torch.manual_seed(0)
    G, D = _LinearG(), _TapD()
    module = InsGenModule(
        G,
        D,
        augment_pipe=_FlipJitter(),
        augment_p=p,
        ada=None,
        style_mixing_prob=0.0,
        insgen={"query_view": view, "queue": {"real_size": 16, "fake_size": 16}},
    )
    wrt = {"D/real_id": list(D.conv.parameters()), "D/fake_id": list(D.conv.parameters()), "G/id": list(G.parameters())}
    real = RealBatch(torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1, torch.zeros(16, 0))
    heads = {name: {k: v.clone() for k, v in getattr(module, name).state_dict().items()} for name in ("DHead", "GHead")}
    torch.manual_seed(123)
    rows = {key: [] for key in wrt}
    for _ in range(calls):
        for name, state in heads.items():
            getattr(module, name).load_state_dict(state)
        terms = {**module.dmain_loss(real).terms, "G/id": module.gmain_loss(real).terms["G/id"]}
        for key, params in wrt.items():
            grads = torch.autograd.grad(terms[key], params, retain_graph=True)
            rows[key].append(torch.cat([g.flatten() for g in grads]))
    return {k: torch.stack(v) for k, v in rows.items()}


def _mean_difference_over_noise(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mean(a) - mean(b)||^2 over its expectation when the means are equal, tr(Var a + Var b) / calls: about 1 for
    equal means, much larger when they differ."""
    noise = (a.var(dim=0).sum() + b.var(dim=0).sum()) / a.shape[0]
    return float((a.mean(0) - b.mean(0)).square().sum() / noise)


def test_query_views_give_the_same_expected_gradient_of_each_infonce_term_at_p_above_zero():
    """At p = 0.5 the adversarial view shares the query's augmentation draw with the adversarial term, the separate
    view draws it afresh: the expected gradient of each InfoNCE term is the same (statistic below 4 on 60 draws of
    everything each; about 1 expected, 1.7 / 2.7 / 1.1 measured), while the same statistic tells p = 0.5 from p = 0
    for the D terms (above 10; 59 and 77 measured; the G term's gradient moves too little with this augmentation to
    be told apart at this sample size)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is ~20x faster than two on a loaded machine
    try:
        calls = 60
        adversarial = _term_gradients("adversarial", 0.5, calls)
        separate = _term_gradients("separate", 0.5, calls)
        no_augment = _term_gradients("separate", 0.0, calls)
    finally:
        torch.set_num_threads(threads)
    for key in adversarial:
        same = _mean_difference_over_noise(adversarial[key], separate[key])
        assert same < 4.0, f"{key}: views differ in expectation ({same:.2f})"
        if key.startswith("D/"):
            control = _mean_difference_over_noise(separate[key], no_augment[key])
            assert control > 10.0, f"{key}: the statistic cannot tell p = 0.5 from p = 0 ({control:.2f})"


def test_paper_rows_use_the_original_query_views_and_have_matched_stylegan2_ada_rows():
    """InsGen paper rows run the original's separate query passes and state the linear ADA ramp; each has a
    StyleGAN2-ADA row on the same data (subset, flips), preset, length and FID protocol."""
    from hydra import compose, initialize_config_dir

    rows = ["ffhq256_2k", "ffhq256_10k", "ffhq256_140k", "afhq_cat512", "afhq_dog512", "afhq_wild512"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for row in rows:
            ins = compose("train", overrides=[f"experiment=insgen_{row}"])
            base = compose("train", overrides=[f"experiment=stylegan2_ada_{row}"])
            assert ins.model.insgen.query_view == "separate", row
            assert base.model._target_ == "lightning_modules.stylegan2_ada.StyleGAN2ADAModule", row
            for key in ("path", "max_images", "xflip", "subset_seed", "resolution", "batch_size"):
                assert ins.data[key] == base.data[key], (row, key)
            for key in ("total_kimg", "r1_gamma", "lr", "ema_kimg", "style_mixing_prob", "pl_weight"):
                assert ins.model[key] == base.model[key], (row, key)
            assert ins.metrics == base.metrics, row
        ramp_stated = ["ffhq256_2k", "afhq_cat512", "afhq_dog512", "afhq_wild512"]
        for row in ramp_stated:
            text = (CONF / "experiment" / f"insgen_{row}.yaml").read_text()
            assert "ada_linear: false" in text and "README (l. 66)" in text, row
