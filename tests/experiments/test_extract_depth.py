"""Tests of experiments/extract_depth.py with a tiny depth network defined here. Budget: under 5 s."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn

from datamodules.images import preprocess
from datamodules.rgbd import RGBDDataset, encode_depth_uint16, normalize_depth
from experiments import extract_depth as xd

CLASS_PATH = f"{__name__}.RedDepth"


class RedDepth(nn.Module):
    """1x1 conv that undoes the ImageNet normalisation of the red channel: depth = red in [0, 1]."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        self.scale = scale

    def forward(self, x):
        return self.conv(x) * self.scale


def _checkpoint(tmp_path):
    net = RedDepth()
    with torch.no_grad():
        net.conv.weight.copy_(torch.tensor([xd.IMAGENET_STD[0], 0.0, 0.0]).reshape(1, 3, 1, 1))
        net.conv.bias.fill_(xd.IMAGENET_MEAN[0])
    path = tmp_path / "red.pth"
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return net, path


def _images(tmp_path, n=3):
    src = tmp_path / "images"
    src.mkdir()
    arrays = []
    for i in range(n):
        arr = np.random.default_rng(i).integers(0, 256, (12, 16, 3), dtype=np.uint8)
        PIL.Image.fromarray(arr).save(src / f"{i}.png")
        arrays.append(arr)
    (src / "broken.png").write_bytes(b"not an image")
    return src, arrays


def test_extract_writes_a_zip_the_rgbd_reader_reads_back(tmp_path, monkeypatch):
    monkeypatch.setattr(xd, "DEPTH_NETWORK_CLASSES", set())
    xd.register_depth_network(CLASS_PATH)
    _, ckpt = _checkpoint(tmp_path)
    src, arrays = _images(tmp_path)
    dest = tmp_path / "out" / "rgbd.zip"
    counts = xd.main(
        ["--source", str(src), "--dest", str(dest), "--network", CLASS_PATH, "--checkpoint", str(ckpt)]
        + ["--state-key", "model", "--strip-prefix", "module.", "--resolution", "8", "--rgb-format", "png"]
    )
    assert counts == {"written": 3, "undecodable (UnidentifiedImageError)": 1}
    with zipfile.ZipFile(dest) as zf:
        meta = json.loads(zf.read("dataset.json"))
    assert meta["pairs"][0] == ["rgb/00000000.png", "depth/00000000.png"]
    assert meta["depth"]["rule"] == "minmax" and meta["depth"]["network"] == CLASS_PATH
    assert len(meta["depth"]["checkpoint_sha256"]) == 64 and "[X]" in meta["depth"]["note"]
    ds = RGBDDataset(dest, split="all")
    assert len(ds) == 3 and ds.skips.count == 0
    for i in range(3):
        rgb = preprocess(arrays[i], 8, "center-crop", "lanczos")
        x = ds[i][0]
        np.testing.assert_allclose(x[:3].permute(1, 2, 0).numpy(), rgb / np.float32(127.5) - 1, atol=1e-6)
        expected = normalize_depth(encode_depth_uint16(rgb[..., 0].astype(np.float64) / 255, "minmax"))
        np.testing.assert_allclose(x[3].numpy(), expected, atol=2 / 30000)  # float32 conv rounding: one code


def test_unsafe_or_unlisted_networks_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(xd, "DEPTH_NETWORK_CLASSES", set())
    net, ckpt = _checkpoint(tmp_path)
    with pytest.raises(ValueError, match="not on the allow-list"):
        xd.build_depth_network(CLASS_PATH, ckpt, state_key="model", strip_prefix="module.")
    xd.register_depth_network(CLASS_PATH)
    built = xd.build_depth_network(CLASS_PATH, ckpt, {"scale": 2.0}, state_key="model", strip_prefix="module.")
    assert built.scale == 2.0 and not built.training
    pickled = tmp_path / "whole_model.pth"
    torch.save(net, pickled)  # a pickled module object: would need code to unpickle
    with pytest.raises(ValueError, match="not plain data"):
        xd.build_depth_network(CLASS_PATH, pickled)
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(net).save(str(scripted))
    with pytest.raises(ValueError, match="TorchScript"):
        xd.build_depth_network(CLASS_PATH, scripted)
    with pytest.raises(ValueError, match="does not fit"):
        xd.build_depth_network(CLASS_PATH, ckpt, state_key="model")  # keys still carry 'module.'
