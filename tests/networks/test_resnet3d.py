"""3D-ResNet (networks/resnet3d.py): the CMPL primary / auxiliary networks. Budget: a few seconds on 2 CPU cores."""

import pytest
import torch

from networks.resnet3d import ResNet3d, auxiliary_of, count_parameters


def _clip(b=2, t=4, s=32):
    return torch.randn(b, 3, t, s, s, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("depth", [18, 50])
def test_shapes_and_gradients_reach_every_parameter(depth):
    net = ResNet3d(depth=depth, num_classes=7, width_mult=0.125, dropout=0.0)
    out = net(_clip(s=16))
    assert out.shape == (2, 7)
    out.square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert net.feature_dim == (256 if depth == 50 else 64)


def test_width_multiplier_scales_parameters_quadratically():
    full = count_parameters(ResNet3d(depth=50, num_classes=10, width_mult=0.5))
    quarter = count_parameters(ResNet3d(depth=50, num_classes=10, width_mult=0.125))
    # conv weights scale with width^2: 1/16 of the parameters, up to BN/fc terms
    assert 1 / 20 < quarter / full < 1 / 12


def test_auxiliary_is_same_architecture_at_reduced_width_or_depth():
    primary = ResNet3d(depth=50, num_classes=5, width_mult=0.25, inflate=[0, 1, 1, 1])
    aux = auxiliary_of(primary, width_mult=0.0625)
    assert aux.init_kwargs == {**primary.init_kwargs, "width_mult": 0.0625}
    assert count_parameters(aux) < count_parameters(primary) / 8
    shallow = auxiliary_of(primary, width_mult=0.25, depth=18)
    assert shallow.init_kwargs["depth"] == 18 and isinstance(shallow.stages[0][0].conv1, torch.nn.Conv3d)
    assert len(shallow.stages[2]) == 2 and len(primary.stages[2]) == 6
    assert aux(_clip()).shape == (2, 5)


def test_temporal_kernels_make_the_net_order_sensitive():
    """Without inflated stages every conv is 1xkxk and the pooled output ignores frame order; with them it does not."""
    x = _clip(t=6)
    rev = x.flip(2)
    flat = ResNet3d(depth=18, num_classes=4, width_mult=0.125, inflate=[0, 0, 0, 0], dropout=0.0).eval()
    torch.testing.assert_close(flat(x), flat(rev), rtol=1e-4, atol=1e-5)
    temporal = ResNet3d(depth=18, num_classes=4, width_mult=0.125, inflate=[1, 1, 1, 1], dropout=0.0).eval()
    torch.nn.init.normal_(temporal.fc.weight)
    for m in temporal.modules():  # undo zero-init of the last BN so residual branches contribute
        if isinstance(m, torch.nn.BatchNorm3d):
            torch.nn.init.ones_(m.weight)
    assert (temporal(x) - temporal(rev)).abs().max() > 1e-3


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="depth"):
        ResNet3d(depth=20)
    with pytest.raises(ValueError, match="inflate"):
        ResNet3d(depth=18, inflate=[1, 1])
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        ResNet3d(depth=18, width_mult=0.125)(torch.randn(2, 3, 32, 32))


def test_head_without_dropout_is_deterministic_in_training_mode():
    """``head(features, dropout=False)`` (the pseudo-labelling views) skips the dropout even in training mode."""
    net = ResNet3d(depth=18, num_classes=5, width_mult=0.125, dropout=0.5).train()
    feats = torch.randn(16, net.feature_dim, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(net.head(feats, dropout=False), net.fc(feats))
    torch.manual_seed(0)
    assert not torch.allclose(net.head(feats), net.fc(feats))
    x = _clip(s=16)
    torch.testing.assert_close(net.eval()(x), net.head(net.features(x), dropout=False))
