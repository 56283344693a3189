"""Tests of metrics/ (FID, KID, PR, protocol, cache, evaluation), the metrics callback and evaluate.py.

Budget: under 40 s on 2 cores (tiny feature modules; one tiny StyleGAN2 generator for evaluate.py).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from metrics.cache import cache_file, cache_key, load_stats, save_stats
from metrics.detectors import RandomCNNFeatures, load_detector
from metrics.evaluation import evaluate_generator
from metrics.fid import FID
from metrics.kid import KID
from metrics.pr import PrecisionRecall, precision_recall
from metrics.protocol import MetricProtocol, load_preset


class AsIs(nn.Module):
    """'Detector' that returns its input: lets tests feed features directly."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class TinyG(nn.Module):
    """Generator stand-in: tanh of a fixed random linear map of z, images in [-1, 1]."""

    def __init__(self, z_dim: int = 8, res: int = 16, channels: int = 3, c_dim: int = 0) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution, self.img_channels = z_dim, c_dim, res, channels
        self.lin = nn.Linear(z_dim + c_dim, channels * res * res)

    def forward(self, z, c, truncation_psi=1.0, noise_mode="random"):
        x = torch.cat([z, c], 1) * truncation_psi
        return torch.tanh(self.lin(x) + 0.1 * torch.randn(z.shape[0], 1)).view(-1, self.img_channels, 16, 16)


class TinyReal(torch.utils.data.Dataset):
    """Reference dataset stand-in with the interface metrics need."""

    def __init__(self, n: int = 40, labels: bool = False) -> None:
        gen = torch.Generator().manual_seed(0)
        self.imgs = torch.randint(0, 256, (n, 3, 16, 16), generator=gen, dtype=torch.uint8)
        self.name, self.has_labels = "tiny", labels

    def __len__(self):
        return len(self.imgs)

    def __getitem__(self, i):
        return self.imgs[i], torch.zeros(0)

    def get_label(self, i):
        return np.eye(2, dtype=np.float32)[i % 2]

    def identity(self):
        return {"name": self.name, "n": len(self)}


def _np_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _np_kid(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic kernel, whole sets (one subset = everything)."""
    d, m = real.shape[1], real.shape[0]

    def k(x, y):
        return (x @ y.T / d + 1) ** 3

    kxx, kyy, kxy = k(fake, fake), k(real, real), k(fake, real)
    off = lambda a: (a.sum() - np.trace(a)) / (m * (m - 1))  # noqa: E731
    return float(off(kxx) + off(kyy) - 2 * kxy.mean())


def test_fid_matches_numpy_scipy_and_is_batch_invariant():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(300, 8)), rng.normal(0.3, 1.2, size=(200, 8))
    metric = FID(AsIs(8))
    for chunk in np.array_split(real, 7):
        metric.update(torch.from_numpy(chunk), real=True)
    for chunk in np.array_split(fake, 3):
        metric.update(torch.from_numpy(chunk), real=False)
    assert float(metric.compute()) == pytest.approx(_np_fid(real, fake), rel=1e-6)


def test_kid_matches_unbiased_mmd_numpy():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(50, 6)), rng.normal(0.5, 1, size=(50, 6))
    metric = KID(AsIs(6), num_subsets=3, max_subset_size=1000)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    # m = all 50 samples: every subset is a permutation of the full sets, so KID = MMD^2 of the sets
    assert float(metric.compute()) == pytest.approx(_np_kid(real, fake), rel=1e-5)


def test_reset_keeps_reals_and_detector_stays_out_of_state_dict():
    metric = KID(AsIs(4), num_subsets=1)
    metric.update(torch.randn(10, 4), real=True)
    metric.update(torch.randn(10, 4), real=False)
    metric.reset()
    assert metric.num_real == 10 and len(metric.fake_features) == 0
    fid = FID(RandomCNNFeatures(num_features=8))
    assert not any("conv" in k or "detector" in k for k in fid.state_dict())
    assert not any(n.startswith("detector") for n, _ in fid.named_modules())


def test_precision_recall_constructed_cases():
    real = torch.tensor([[0.0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]])
    inside = real + 0.01
    far = real + 100
    assert precision_recall(real, inside, k=3) == (1.0, 1.0)
    assert precision_recall(real, far, k=3) == (0.0, 0.0)
    # half the fakes on the real manifold, the other half far away
    mixed = torch.cat([inside[:2], far[:3]])
    p, r = precision_recall(real, mixed, k=1)
    assert p == pytest.approx(2 / 5)
    metric = PrecisionRecall(AsIs(2), k=3)
    metric.update(real, real=True)
    metric.update(inside, real=False)
    assert metric.compute().tolist() == [1.0, 1.0]


def test_cache_key_changes_with_every_input(tmp_path):
    base_ds = {
        "path": "/d.zip",
        "content_sha256": "aa",
        "resolution": 256,
        "xflip": False,
        "max_images": None,
    }
    proto = MetricProtocol(name="fid50k_full", metric="fid", n_fake=50000)
    det = {"detector": "nvidia_inception", "detector_sha256": "x1"}
    k0 = cache_key(base_ds, proto, det)
    variants = [
        cache_key({**base_ds, "content_sha256": "ab"}, proto, det),
        cache_key({**base_ds, "resolution": 128}, proto, det),
        cache_key({**base_ds, "xflip": True}, proto, det),
        cache_key({**base_ds, "max_images": 2000}, proto, det),
        cache_key({**base_ds, "path": "/e.zip"}, proto, det),
        cache_key(base_ds, proto, {**det, "detector_sha256": "x2"}),
        cache_key(base_ds, dataclasses.replace(proto, n_real=1000), det),
        cache_key(base_ds, dataclasses.replace(proto, reference="train_subset"), det),
        cache_key(base_ds, dataclasses.replace(proto, metric="kid"), det),
    ]
    assert len({k0, *variants}) == len(variants) + 1
    assert cache_key(base_ds, dataclasses.replace(proto, n_fake=10), det) == k0  # fakes do not touch reals
    path = cache_file(tmp_path, "ffhq", proto, k0)
    save_stats(path, k0, {"real_n": np.array(3)})
    assert int(load_stats(path, k0)["real_n"]) == 3
    with pytest.raises(ValueError, match="stored key"):
        load_stats(path, variants[0])


def test_presets_and_missing_detector_message(tmp_path):
    (p,) = load_preset("fid50k_full")
    assert (p.metric, p.n_fake, p.n_real, p.reference, p.detector) == (
        "fid",
        50000,
        None,
        "full",
        "nvidia_inception",
    )
    assert {q.name for name in ("fid10k", "fid10k_full", "kid50k_full", "pr50k3_full") for q in load_preset(name)} == {
        "fid10k",
        "fid10k_full",
        "kid50k_full",
        "pr50k3_full",
    }
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt"):
        load_detector("nvidia_inception", tmp_path)
    with pytest.raises(KeyError, match="unknown keys"):
        MetricProtocol.from_dict({"name": "x", "metric": "fid", "n_fake": 10, "n_reals": 5})


def test_evaluate_generator_cache_reuse_and_fixed_fakes(tmp_path):
    G = TinyG()
    protos = [
        MetricProtocol(name="fid_t", metric="fid", n_fake=48, detector="random-cnn"),
        MetricProtocol(name="kid_t", metric="kid", n_fake=48, detector="random-cnn", kid_subsets=4),
    ]
    ds = TinyReal()
    run = lambda: evaluate_generator(  # noqa: E731
        G, protos, lambda p: ds, lambda n: load_detector(n), cache_dir=tmp_path, batch_size=16
    )
    first = run()
    assert len(list(tmp_path.glob("tiny-random-cnn-*.npz"))) == 2
    second = run()  # reals from the cache, same seeded fakes -> the same numbers
    assert [r["results"] for r in first] == [r["results"] for r in second]
    rec = first[0]["protocol"]
    assert rec["reference_images"] == 40 and rec["n_fake"] == 48 and "NOT comparable" in rec["detector_note"]
    other = evaluate_generator(
        G,
        [dataclasses.replace(protos[0], seed=1)],
        lambda p: ds,
        lambda n: load_detector(n),
        batch_size=16,
    )
    assert other[0]["results"]["fid_t"] != first[0]["results"]["fid_t"]


def test_metrics_callback_ticks_logs_and_state(tmp_path):
    from lightning_modules.callbacks.metrics import MetricsCallback

    cb = MetricsCallback(
        protocols=[{"name": "fid_t", "metric": "fid", "n_fake": 32, "detector": "nvidia_inception"}],
        every_kimg=0.064,
        detector="random-cnn",
        batch_size=16,
    )
    logged = []
    logger = SimpleNamespace(log_metrics=lambda m, step: logged.append(m), log_hyperparams=lambda p: None)
    dm = SimpleNamespace(reference_dataset=lambda ref: TinyReal())
    trainer = SimpleNamespace(
        datamodule=dm, loggers=[logger], is_global_zero=True, default_root_dir=str(tmp_path), global_step=3
    )
    from lightning_modules.run_state import RunProgress

    module = SimpleNamespace(progress=RunProgress(1.0, seen_img=32), G_ema=TinyG(), log=lambda *a, **k: None)
    cb.on_train_batch_end(trainer, module)
    assert logged == []
    module.progress.seen_img = 64
    cb.on_train_batch_end(trainer, module)
    assert len(logged) == 1 and logged[0]["kimg"] == 0.064 and "metrics/fid_t" in logged[0]
    line = json.loads((Path(tmp_path) / "metric-fid_t.jsonl").read_text().splitlines()[0])
    assert line["protocol"]["detector"] == "random-cnn" and line["protocol"]["generator"] == "G_ema"
    assert cb.state_dict() == {"last_tick": 1}


def test_evaluate_py_on_tiny_checkpoint(tmp_path):
    from experiments.evaluate import main
    from networks.checkpoint import save_networks
    from networks.stylegan2 import Generator

    G = Generator(
        z_dim=8,
        c_dim=0,
        w_dim=8,
        img_resolution=16,
        img_channels=3,
        synthesis_kwargs={"channel_base": 64, "channel_max": 8},
    )
    save_networks(tmp_path / "net.pt", {"G": G, "G_ema": G, "D": None})
    out = tmp_path / "res.jsonl"
    args = ["--network", str(tmp_path / "net.pt"), "--metrics", "fid10k_full", "--data", "embedded:faces"]
    args += [
        "--detector",
        "random-cnn",
        "--n-fake",
        "24",
        "--batch",
        "12",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    results = main(args)
    value = results[0]["results"]["fid10k_full"]
    assert np.isfinite(value) and value > 0
    rec = json.loads(out.read_text())["protocol"]
    assert rec["n_fake"] == 24 and rec["reference_images"] == 100 and rec["network"].endswith("net.pt")


def test_pixels_detector_is_the_8x8_brightness_layout():
    from metrics.detectors import load_detector

    det = load_detector("pixels")
    img = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    img[0, :, :16] = 255  # top half white
    img[1, 0] = 255  # red only: brightness 255/3
    feats = det(img)
    assert feats.shape == (2, det.num_features) == (2, 64)
    layout = feats[0].reshape(8, 8)
    assert torch.equal(layout[:4], torch.ones(4, 8)) and torch.equal(layout[4:], -torch.ones(4, 8))
    torch.testing.assert_close(feats[1], torch.full((64,), 85 / 127.5 - 1))
    gray = img[:1, :1]
    torch.testing.assert_close(det(gray), det(gray.expand(1, 3, 32, 32)))  # gray = the same gray as RGB
