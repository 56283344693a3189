"""GenDA networks: adaptor identity and granularity, D feature taps, adapted generator export (budget ~5 s)."""

from __future__ import annotations

import pytest
import torch

from networks.checkpoint import load_networks, save_networks
from networks.genda import (
    AdaptedGenerator,
    AttributeAdaptor,
    AttributeClassifier,
    discriminator_features,
    feature_dim,
)
from tests.lightning_modules.gan_helpers import tiny_networks


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run faster on one thread (no OpenMP hand-off); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pretrained_tiny():
    torch.manual_seed(0)
    G, D = tiny_networks()
    with torch.no_grad():
        for _ in range(3):
            G.mapping(torch.randn(64, G.z_dim), None, update_emas=True)
    return G.eval(), D.eval()


@pytest.mark.parametrize("granularity", ["shared", "per_layer"])
def test_identity_adaptor_reproduces_source_generator_exactly(granularity):
    G, _ = _pretrained_tiny()
    AG = AdaptedGenerator(G, AttributeAdaptor.for_generator(G, granularity))
    z = torch.randn(4, G.z_dim)
    for psi in (1.0, 0.7):
        with torch.no_grad():
            assert torch.equal(AG(z, None, truncation_psi=psi, noise_mode="const"), G(z, None, psi, noise_mode="const"))
    ws = G.mapping(z, None)
    assert torch.equal(AG.adaptor(ws), ws)


def test_adaptor_parameter_count_and_per_layer_action():
    G, _ = _pretrained_tiny()
    shared = AttributeAdaptor.for_generator(G, "shared")
    per_layer = AttributeAdaptor.for_generator(G, "per_layer")
    assert sum(p.numel() for p in shared.parameters()) == 2 * G.w_dim  # 2·512 at full size
    assert sum(p.numel() for p in per_layer.parameters()) == 2 * G.num_ws * G.w_dim
    ws = torch.randn(3, G.num_ws, G.w_dim)
    with torch.no_grad():
        per_layer.scale[2].fill_(2.0)
        per_layer.bias[2].fill_(0.5)
        shared.bias.fill_(-1.0)
    out = per_layer(ws)
    torch.testing.assert_close(out[:, 2], 2 * ws[:, 2] + 0.5)
    assert torch.equal(out[:, :2], ws[:, :2]) and torch.equal(out[:, 3:], ws[:, 3:])
    torch.testing.assert_close(shared(ws), ws - 1)
    assert float(shared.deviation().detach()) == pytest.approx(G.w_dim)


def test_adaptor_errors_name_the_key():
    with pytest.raises(ValueError, match="model.adaptor.granularity"):
        AttributeAdaptor(16, 6, "global")
    with pytest.raises(ValueError, match=r"ws \[N, 6, 16\]"):
        AttributeAdaptor(16, 6)(torch.zeros(2, 5, 16))


def test_epilogue_fc_feature_is_d_penultimate_output():
    """The epilogue_fc tap equals the epilogue recomputed by hand: mbstd -> conv -> fc of the last block output."""
    _, D = _pretrained_tiny()
    img = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        feats = discriminator_features(D, img, None, "epilogue_fc")
        logits, blocks = D(img, None, taps=["b8"])
        x = D.b4.conv(D.b4.mbstd(blocks["b8"]))
        fc = D.b4.fc(x.flatten(1))
    assert feats.shape == (4, feature_dim(D, "epilogue_fc"))
    torch.testing.assert_close(feats, fc, rtol=0, atol=0)
    torch.testing.assert_close(D.b4.out(fc), logits)


@pytest.mark.parametrize("feature", ["b16", "b8"])
def test_block_feature_dims_and_classifier_depth(feature):
    _, D = _pretrained_tiny()
    feats = discriminator_features(D, torch.randn(2, 3, 16, 16), None, feature)
    assert feats.shape == (2, feature_dim(D, feature))
    head = AttributeClassifier.for_discriminator(D, feature=feature, depth=2, hidden_features=8)
    assert len(head.layers) == 2 and head(feats).shape == (2, 1)
    with pytest.raises(ValueError, match="model.classifier.feature"):
        feature_dim(D, "b64")
    with pytest.raises(ValueError, match="model.classifier.depth"):
        AttributeClassifier(16, depth=0)


def test_adapted_generator_round_trips_through_network_file(tmp_path):
    G, D = _pretrained_tiny()
    AG = AdaptedGenerator(G, AttributeAdaptor.for_generator(G, "per_layer"))
    with torch.no_grad():
        AG.adaptor.scale.mul_(1.5)
        AG.adaptor.bias.add_(0.25)
    save_networks(tmp_path / "adapted.pt", {"G": G, "D": D, "G_ema": AG})
    nets = load_networks(tmp_path / "adapted.pt")
    assert isinstance(nets["G_ema"], AdaptedGenerator)
    z = torch.randn(3, G.z_dim)
    with torch.no_grad():
        expect = AG(z, None, noise_mode="const")
        assert torch.equal(nets["G_ema"](z, None, noise_mode="const"), expect)
        assert not torch.equal(G(z, None, noise_mode="const"), expect)


def test_default_classifier_output_of_a_sample_does_not_depend_on_the_rest_of_the_batch():
    """The default feature (pooled b8) is per sample; epilogue_fc (the ablation) mixes the batch through
    minibatch-std, so a batch of copies of one reference differs from a batch of distinct fakes by spread alone."""
    _, D = _pretrained_tiny()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 3, 16, 16, generator=g)
    diverse = torch.cat([x0, torch.randn(3, 3, 16, 16, generator=g)])
    copies = x0.repeat(4, 1, 1, 1)  # how the one-shot reference arrives
    default = AttributeClassifier.for_discriminator(D)
    assert default.feature == "b8"
    with torch.no_grad():
        outs = [default(discriminator_features(D, batch, None, default.feature))[0] for batch in (diverse, copies)]
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)
        ablation = AttributeClassifier.for_discriminator(D, feature="epilogue_fc")
        outs = [ablation(discriminator_features(D, batch, None, "epilogue_fc"))[0] for batch in (diverse, copies)]
    assert (outs[0] - outs[1]).abs().max() > 1e-3
