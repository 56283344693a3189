"""`make train`'s demo: it composes with the KID metrics callback, whose protocol ranks the faces themselves far
below blobs and layout-free textures, and the demos that start from its checkpoint or copy its settings keep its
networks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from tests.test_configs import compose_experiment


def demo_config(*overrides: str):
    cfg = compose_experiment("demo", list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


class TableGenerator(nn.Module):
    """A stand-in G_ema: image ``k`` of a fixed table for latent row ``k`` (cycling), in [-1, 1]."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.z_dim, self.c_dim = 8, 0
        self.register_buffer("table", table)
        self.anchor = nn.Parameter(torch.zeros([]))  # evaluate_generator reads the device off a parameter
        self.calls = 0

    def forward(self, z, c, truncation_psi=1.0, noise_mode="random"):
        idx = (torch.arange(z.shape[0]) + self.calls) % self.table.shape[0]
        self.calls += z.shape[0]
        return self.table[idx]


def evaluate_with_demo_callback(cfg, G: nn.Module, tmp_path, seen_img: int, hook: str = "on_train_batch_end"):
    """Drive the demo's metrics callback as training does (``hook`` at ``seen_img``); the logged KID or None."""
    cfg.metrics.protocols[0].n_fake = 300  # the demo's 1000 fakes cost nothing here, but keep the test tiny
    callback = hydra.utils.instantiate(cfg.metrics)
    datamodule = hydra.utils.instantiate(cfg.data)
    trainer = SimpleNamespace(datamodule=datamodule, loggers=[], is_global_zero=True, default_root_dir=str(tmp_path))
    logged = {}
    module = SimpleNamespace(
        G_ema=G,
        progress=SimpleNamespace(seen_img=seen_img, kimg=seen_img / 1000),
        log=lambda name, value, **kwargs: logged.__setitem__(name, value),
    )
    if hook == "on_train_start":
        callback.on_train_start(trainer, module)
    else:
        callback.on_train_batch_end(trainer, module, None, None, 0)
    return logged.get("metrics/kid_demo")


def test_demo_uses_the_kid_demo_protocol():
    cfg = demo_config()
    assert cfg.metrics._target_ == "lightning_modules.callbacks.metrics.MetricsCallback"
    (proto,) = cfg.metrics.protocols
    assert (proto.name, proto.metric, proto.detector, proto.reference) == (
        "kid_demo",
        "kid",
        "pixels",
        "train_subset",
    )
    assert proto.n_fake == 1000 and proto.use_ema
    assert 0 < cfg.metrics.every_kimg < cfg.model.total_kimg  # a curve, not one point


def test_kid_demo_ranks_the_faces_far_below_blobs_and_textures(tmp_path):
    cfg = demo_config()
    faces = hydra.utils.instantiate(cfg.data).train_dataset
    assert len(faces) == 200  # the 100 faces and their x-flips
    assert faces[0][0].shape == (1, 32, 32)  # gray, as the LFW subset
    table = torch.stack([faces[i][0] for i in range(len(faces))]).float() / 127.5 - 1
    every = int(cfg.metrics.every_kimg * 1000)

    # Not due yet: nothing evaluated.
    assert evaluate_with_demo_callback(cfg, TableGenerator(table), tmp_path / "early", every - 16) is None

    kid_faces = evaluate_with_demo_callback(cfg, TableGenerator(table), tmp_path / "faces", every)
    blur = nn.functional.avg_pool2d(table, 8)  # 4x4 blobs of the same faces, upsampled back
    blobs = nn.functional.interpolate(blur, scale_factor=8, mode="bilinear", align_corners=False)
    kid_blobs = evaluate_with_demo_callback(cfg, TableGenerator(blobs), tmp_path / "blobs", every)
    assert kid_faces is not None and kid_blobs is not None
    assert abs(kid_faces) < 0.1 * kid_blobs, (kid_faces, kid_blobs)
    # The same pixels of every face in a random order: brightness kept, the layout of a face gone.
    order = torch.randperm(32 * 32, generator=torch.Generator().manual_seed(0))
    textures = table.flatten(2)[:, :, order].reshape(table.shape)
    kid_textures = evaluate_with_demo_callback(cfg, TableGenerator(textures), tmp_path / "textures", every)
    assert abs(kid_faces) < 0.1 * kid_textures, (kid_faces, kid_textures)

    (line,) = (tmp_path / "blobs" / "metric-kid_demo.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["kimg"] == pytest.approx(every / 1000)
    assert record["protocol"]["detector"] == "pixels" and record["protocol"]["reference_images"] == 200
    assert "NOT comparable" in record["protocol"]["detector_note"]
    curve = Image.open(tmp_path / "blobs" / "metric-kid_demo.png")  # the curve is redrawn at every evaluation
    assert curve.size == (480, 300)


def test_demo_curve_starts_at_the_untrained_generator(tmp_path):
    """``at_train_start``: a fresh run evaluates at kimg 0 (the first point of the curve); a resumed run does not."""
    cfg = demo_config()
    G = TableGenerator(torch.zeros(4, 1, 32, 32))
    evaluate_with_demo_callback(cfg, G, tmp_path / "fresh", 0, hook="on_train_start")
    (line,) = (tmp_path / "fresh" / "metric-kid_demo.jsonl").read_text().splitlines()
    assert json.loads(line)["kimg"] == 0
    evaluate_with_demo_callback(cfg, G, tmp_path / "resumed", 4000, hook="on_train_start")
    assert not (tmp_path / "resumed" / "metric-kid_demo.jsonl").exists()


@pytest.mark.parametrize("name", ["insgen_demo", "eqgan_sa_demo"])
def test_demo_variants_log_the_same_kid(name):
    cfg = compose_experiment(name)
    assert [p.name for p in cfg.metrics.protocols] == ["kid_demo"]


def test_genda_demo_networks_match_the_demo_checkpoint():
    """genda_demo loads logs/demo/seed0/checkpoints/last.ckpt: its networks must be the demo's."""
    demo, genda = demo_config(), compose_experiment("genda_demo")
    OmegaConf.resolve(genda)
    for part in ("generator", "discriminator"):
        assert OmegaConf.to_container(genda.model[part]) == OmegaConf.to_container(demo.model[part]), part
