"""GenDA module: frozen G/D, gradients only to adaptor + classifier, short adaptation run (budget ~40 s)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.one_shot import OneShotDataModule
from lightning_modules.genda import GenDAModule, mean_pairwise_distance
from networks.checkpoint import load_networks, save_networks
from networks.genda import AdaptedGenerator
from tests.lightning_modules.gan_helpers import RES, random_batch, tiny_networks, tiny_trainer

BATCH = 4
ITERATIONS = 40
DIVERSITY_FRACTION = 0.5  # adapted samples keep at least half the source's mean pairwise distance


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions run faster on one thread (no OpenMP hand-off); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def source_file(tmp_path_factory):
    """A tiny 'pretrained' StyleGAN2 (w_avg tracked) saved as a suite network file."""
    torch.manual_seed(0)
    G, D = tiny_networks()
    with torch.no_grad():
        for _ in range(3):
            G.mapping(torch.randn(64, G.z_dim), None, update_emas=True)
    path = tmp_path_factory.mktemp("source") / "source.pt"
    save_networks(path, {"G": G, "D": D, "G_ema": G})
    return path


def make_module(source_file, **kwargs) -> GenDAModule:
    G, D = tiny_networks()
    defaults = dict(
        init_from=str(source_file),
        batch_size=BATCH,
        total_kimg=ITERATIONS * BATCH / 1000,
        lr=0.02,
        sample_grid=(2, 3),
        sample_every_kimg=100,
        seed=0,
    )
    defaults.update(kwargs)
    return GenDAModule(G, D, **defaults)


@pytest.fixture(scope="module")
def adapted(source_file, tmp_path_factory):
    """One short adaptation run to the astronaut reference, shared by the tests below."""
    root = tmp_path_factory.mktemp("run")
    module = make_module(source_file)
    dm = OneShotDataModule(resolution=RES, batch_size=BATCH, grayscale=False, translate=0.125)
    trainer = tiny_trainer(root)
    trainer.fit(module, dm)
    ckpt = root / "genda.ckpt"
    trainer.save_checkpoint(ckpt)
    return module, root, ckpt


def test_g_and_d_are_bit_identical_after_training(adapted, source_file):
    module, _, _ = adapted
    assert module.progress.iteration == ITERATIONS
    nets = load_networks(source_file)
    for own, ref in ((module.G, nets["G_ema"]), (module.D, nets["D"])):
        want = ref.state_dict()
        for key, value in own.state_dict().items():  # parameters and buffers (w_avg included)
            assert torch.equal(value, want[key]), key
    assert module.G_ema.generator is module.G


def test_only_adaptor_and_classifier_receive_gradients(adapted):
    module, _, _ = adapted
    for net in (module.G, module.D):
        assert all(not p.requires_grad and p.grad is None for p in net.parameters())
    for net in (module.adaptor, module.classifier):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert not torch.equal(module.adaptor.scale, torch.ones_like(module.adaptor.scale))


def test_classifier_scores_adapted_samples_above_the_source(adapted):
    """Adaptation starts at the source (a=1, b=0); under the trained classifier its samples score higher."""
    module, _, _ = adapted
    z = torch.randn(32, module.G.z_dim, generator=torch.Generator().manual_seed(1))
    c = torch.zeros(32, 0)
    with torch.no_grad():
        source = module.classifier(module.features(module.G(z, c, truncation_psi=0.7, noise_mode="const"), c)).mean()
        adapted_img = module.G_ema(z, c, truncation_psi=0.7, noise_mode="const")
        adapted_score = module.classifier(module.features(adapted_img, c)).mean()
    assert adapted_score > source + 0.1


def test_diversity_stays_above_a_fraction_of_the_source(adapted):
    module, _, _ = adapted
    z = torch.randn(32, module.G.z_dim, generator=torch.Generator().manual_seed(2))
    c = torch.zeros(32, 0)
    with torch.no_grad():
        d_source = mean_pairwise_distance(module.G(z, c, noise_mode="const"))
        d_adapted = mean_pairwise_distance(module.synthesize(z, c, training=False))
    assert d_adapted > DIVERSITY_FRACTION * d_source


def test_source_vs_adapted_grid_written_and_checkpoint_exports_adapted_generator(adapted):
    module, root, ckpt = adapted
    grids = sorted((root / "samples").glob("source_vs_adapted*.png"))
    assert grids, "no sample grid written"
    arr = np.asarray(Image.open(grids[-1]))
    assert arr.shape == (2 * 2 * RES, 3 * RES, 3)  # (source row, adapted row) x 2, 3 columns
    expect = module.render_grid()
    top_source = expect[0].permute(1, 2, 0).numpy()
    assert np.array_equal(arr[:RES, :RES], top_source)
    ref = np.asarray(Image.open(root / "samples" / "reference.png"))
    assert ref.shape == (RES, RES, 3)
    nets = load_networks(ckpt)
    assert isinstance(nets["G_ema"], AdaptedGenerator)
    z = torch.randn(4, module.G.z_dim)
    with torch.no_grad():
        assert torch.equal(nets["G_ema"](z, None, noise_mode="const"), module.G_ema(z, None, noise_mode="const"))


def test_resume_continues_exactly(source_file, tmp_path):
    """3 + 3 iterations through a checkpoint == 6 iterations (RNG, optimisers, adaptor, classifier)."""

    def run(iterations, root, ckpt=None):
        module = make_module(source_file, total_kimg=iterations * BATCH / 1000)
        dm = OneShotDataModule(resolution=RES, batch_size=BATCH, grayscale=False, translate=0.125)
        trainer = tiny_trainer(root)
        trainer.fit(module, dm, ckpt_path=ckpt)
        return module, trainer

    straight, _ = run(6, tmp_path / "a")
    _, first = run(3, tmp_path / "b")
    first.save_checkpoint(tmp_path / "b" / "half.ckpt")
    resumed, _ = run(6, tmp_path / "c", ckpt=str(tmp_path / "b" / "half.ckpt"))
    assert resumed.progress.iteration == 6
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_losses_route_gradients_to_their_module_only(source_file):
    module = make_module(source_file, adaptor={"granularity": "per_layer"}, classifier={"depth": 2})
    real = random_batch(BATCH)
    assert [p.name for p in module.phases] == ["classifier", "adaptor"]
    sum(module.classifier_loss(real).terms.values()).backward()
    assert module.adaptor.scale.grad is None and module.adaptor.bias.grad is None
    assert all(p.grad is not None for p in module.classifier.parameters())
    module.classifier.zero_grad(set_to_none=True)
    module.classifier.requires_grad_(False)  # as the engine does for the adaptor phase
    sum(module.adaptor_loss(real).terms.values()).backward()
    assert module.adaptor.scale.grad.abs().sum() > 0 and module.adaptor.bias.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.classifier.parameters())
    assert all(p.grad is None for p in module.G.parameters()) and all(p.grad is None for p in module.D.parameters())


def test_truncation_beta_only_in_training(source_file):
    module = make_module(source_file, train_truncation=0.5, eval_truncation=1.0)
    module.load_init(str(source_file))
    z = torch.randn(8, module.G.z_dim)
    c = torch.zeros(8, 0)
    with torch.no_grad():
        torch.manual_seed(3)
        train = module.synthesize(z, c, training=True)
        torch.manual_seed(3)
        assert torch.equal(train, module.G_ema(z, c, truncation_psi=0.5, noise_mode="random"))
        evaluated = module.synthesize(z, c, training=False)
        assert torch.equal(evaluated, module.G_ema(z, c, truncation_psi=1.0, noise_mode="const"))
        # the constraint shrinks diversity during training only
        assert mean_pairwise_distance(train) < mean_pairwise_distance(evaluated)


def test_missing_or_mismatched_pretrained_file_is_explained(source_file, tmp_path):
    module = make_module(source_file)
    with pytest.raises(FileNotFoundError, match="make train"):
        module.load_init(str(tmp_path / "missing.ckpt"))
    G, D = tiny_networks()
    wide = type(G)(**{**G.init_kwargs, "w_dim": 8})
    save_networks(tmp_path / "other.pt", {"G": wide, "D": D})
    with pytest.raises(ValueError, match=r"network 'G' does not match.*w_dim: 16 here vs 8 in the file"):
        module.load_init(str(tmp_path / "other.pt"))


def test_fakes_get_the_reference_augmentation_before_d(source_file, monkeypatch):
    """Both phases show D flipped fakes as the datamodule shows it the flipped reference (``fake_augment``, tied to
    data.hflip/translate in the configs); ``enabled: false`` keeps the fakes as synthesised (the ablation)."""
    n = 16
    real = random_batch(n)
    for enabled in (True, False):
        module = make_module(source_file, fake_augment={"enabled": enabled, "hflip": True, "translate": 0.0})
        module.load_init(str(source_file))
        seen = []

        def record(img, c, seen=seen, width=module.classifier.in_features):
            seen.append(img.detach())
            return torch.zeros(len(img), width)

        monkeypatch.setattr(module, "features", record)
        for loss in (module.classifier_loss, module.adaptor_loss):
            seen.clear()
            torch.manual_seed(7)
            loss(real)
            torch.manual_seed(7)
            with torch.no_grad():
                fakes = module.synthesize(module.sample_z(n), real.c, training=True)
            shown = seen[0]  # the fakes reach D first in both phases
            same = [torch.equal(a, b) for a, b in zip(shown, fakes)]
            mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(shown, fakes)]
            assert all(s or m for s, m in zip(same, mirrored)), loss.__name__
            assert any(mirrored) == enabled and all(same) == (not enabled), loss.__name__


def test_nested_blocks_refuse_unknown_keys_naming_them(source_file):
    from lightning_modules.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.adaptor\.granularty"):
        make_module(source_file, adaptor={"granularty": "shared"})
    with pytest.raises(ConfigError, match=r"model\.classifier\.depth"):
        make_module(source_file, classifier={"depth": 0})
