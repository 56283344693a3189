"""Estimate depth for every image with a LOCAL monocular depth network and write DepthGAN's RGB-D zip.

DepthGAN (arXiv 2202.08553) trains on LSUN images with depth from LeReS; the original publishes neither the
extraction script, nor the uint16 scaling of the depth, nor the split. This script is the suite's version; its
choices (recorded in ``dataset.json``) are:

- scaling [X]: ``--depth-rule minmax`` (default) maps each image's depth min..max to 0..60000, so the original's
  normalisation (v - 30000) / 30000 gives exactly [-1, 1]; ``--depth-rule fixed --depth-range NEAR FAR`` maps a
  fixed range instead (for metric depth networks);
- the split is not made here: the RGB-D DataModule writes it once (``data.val_fraction``, default the last 1 %
  of the sorted pair names) next to the zip.

Safety: the checkpoint is DATA only. It is read with ``torch.load(weights_only=True)`` (plain tensors and
containers; pickled modules, classes or functions are refused) and must be a state dict (``--state-key`` picks
a nested one, ``--strip-prefix`` drops e.g. ``module.``). TorchScript files are refused: they carry code that
would run. The architecture is YOUR code, named by a class path that must be on the allow-list
:data:`DEPTH_NETWORK_CLASSES`. Add your class in a short launcher, so that a config or a shared command line can
never make this script import and call an arbitrary object::

    # my_extract.py (next to your LeReS checkout)
    from experiments.extract_depth import main, register_depth_network
    register_depth_network("my_leres.LeReSDepth")   # an nn.Module: forward(x [N,3,h,w]) -> depth [N,1,h,w]
    main()

    python my_extract.py --source data/lsun_bedroom_train_lmdb --dest data/lsun_bedroom256_rgbd.zip \
        --resolution 256 --network my_leres.LeReSDepth --checkpoint res101.pth --state-key depth_model \
        --input-size 448 --device cuda

The network gets RGB in [0, 1] normalised by ``--mean``/``--std`` (ImageNet by default), resized to
``--input-size`` (square) when given, and must return depth (larger = farther; ``--output disparity`` inverts
1/x) as [N, 1, h, w] or [N, h, w]; it is resized back to the image bilinearly. RGB images are centre-cropped
and resized to ``--resolution`` (as ``prepare_data.py``), written as ``rgb/<index>.jpg`` (or png) beside
``depth/<index>.png`` (16-bit), and paired explicitly in ``dataset.json``. Undecodable images are skipped and
counted by reason. The zip is written to ``<dest>.partial`` and renamed when complete.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import io
import json
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import nn

from datamodules.images import RESIZE_FILTERS, TRANSFORMS, decode_image, open_reader, preprocess
from datamodules.rgbd import (
    DEPTH_MAX_CODE,
    DEPTH_OFFSET,
    DEPTH_RULES,
    DEPTH_SCALE,
    encode_depth_png,
    encode_depth_uint16,
)
from experiments.prepare_data import _write
from metrics.detectors import file_sha256

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUTS = ("depth", "disparity")
# Depth-network classes this script may import and build (see the module docstring).
DEPTH_NETWORK_CLASSES: set[str] = set()


def register_depth_network(class_path: str) -> None:
    """Allow ``module.Class`` (an ``nn.Module`` of your own code) to be built by :func:`build_depth_network`."""
    DEPTH_NETWORK_CLASSES.add(class_path)


def load_state_dict(path: str | Path, state_key: str | None = None, strip_prefix: str = "") -> dict[str, torch.Tensor]:
    """A state dict from ``path`` without running anything in the file (``torch.load(weights_only=True)``).

    ``state_key`` = dotted path to a nested dict (e.g. ``depth_model`` or ``model.state_dict``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth checkpoint {path} not found")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if any("/code/" in n for n in zf.namelist()):
                raise ValueError(
                    f"{path} is a TorchScript archive: it contains code that would run when loaded. Save the "
                    "weights instead: torch.save(model.state_dict(), 'weights.pth')"
                )
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path} is not plain data (it pickles classes or functions, e.g. a whole model object): "
            f"{str(e).splitlines()[0]}. Save the weights instead: torch.save(model.state_dict(), 'weights.pth')"
        ) from e
    for key in (state_key or "").split(".") if state_key else []:
        if not isinstance(data, dict) or key not in data:
            keys = sorted(map(str, data))[:10] if isinstance(data, dict) else type(data).__name__
            raise KeyError(f"{path}: --state-key {state_key!r}: no entry {key!r} (found {keys})")
        data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor); use --state-key to pick the nested one")
    return {k[len(strip_prefix) :] if strip_prefix and k.startswith(strip_prefix) else k: v for k, v in data.items()}


def build_depth_network(
    class_path: str,
    checkpoint: str | Path,
    kwargs: dict[str, Any] | None = None,
    state_key: str | None = None,
    strip_prefix: str = "",
) -> nn.Module:
    """``class_path(**kwargs)`` (allow-listed) with the checkpoint's weights loaded strictly, in eval mode."""
    if class_path not in DEPTH_NETWORK_CLASSES:
        raise ValueError(
            f"depth network class {class_path!r} is not on the allow-list {sorted(DEPTH_NETWORK_CLASSES)}; "
            "register it with experiments.extract_depth.register_depth_network in a launcher script"
        )
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"{class_path} is not an nn.Module class")
    net = cls(**(kwargs or {}))
    state = load_state_dict(checkpoint, state_key, strip_prefix)
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint} does not fit {class_path}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]} (see --state-key / --strip-prefix)"
        )
    return net.eval()


@torch.no_grad()
def predict_depth(
    net: nn.Module,
    rgb: np.ndarray,
    input_size: int | None = None,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    output: str = "depth",
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """uint8 RGB [N, H, W, 3] -> depth float64 [N, H, W] (larger = farther)."""
    if output not in OUTPUTS:
        raise ValueError(f"--output must be one of {OUTPUTS}, got {output!r}")
    x = torch.from_numpy(rgb).to(device).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean, device=device)[:, None, None]) / torch.tensor(std, device=device)[:, None, None]
    h, w = x.shape[2:]
    if input_size is not None:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
    y = net(x)
    if not isinstance(y, torch.Tensor) or y.ndim not in (3, 4) or (y.ndim == 4 and y.shape[1] != 1):
        shape = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"the depth network must return [N, 1, h, w] or [N, h, w], got {shape}")
    y = y.reshape(y.shape[0], 1, *y.shape[-2:]).float()
    if tuple(y.shape[2:]) != (h, w):
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
    y = y[:, 0].double().cpu()
    if output == "disparity":
        y = 1 / y.clamp_min(1e-6)
    return y.numpy()


def extract_depth(
    source: str,
    dest: str,
    net: nn.Module,
    resolution: int | None = None,
    transform: str = "center-crop",
    resize_filter: str = "lanczos",
    input_size: int | None = None,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    output: str = "depth",
    depth_rule: str = "minmax",
    depth_range: tuple[float, float] = (0.8, 6.95),
    rgb_format: str = "jpg",
    batch_size: int = 8,
    device: str = "cpu",
    network_info: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Write the RGB-D zip ``dest`` from the images of ``source`` (folder, zip or LMDB); returns counts."""
    if depth_rule not in DEPTH_RULES:
        raise ValueError(f"--depth-rule must be one of {DEPTH_RULES}, got {depth_rule!r}")
    if rgb_format not in ("jpg", "png"):
        raise ValueError(f"--rgb-format must be jpg or png, got {rgb_format!r}")
    reader = open_reader(source)
    names = reader.names()
    if not names:
        raise FileNotFoundError(f"{source}: no images found")
    net = net.to(device).eval()
    counts: collections.Counter[str] = collections.Counter()
    pairs, sources = [], []
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{dest}.partial")

    def flush(zf: zipfile.ZipFile, batch: list[tuple[str, np.ndarray]]) -> None:
        depth = predict_depth(net, np.stack([b[1] for b in batch]), input_size, mean, std, output, device)
        for (name, rgb), d in zip(batch, depth):
            idx = counts["written"]
            rgb_name, depth_name = f"rgb/{idx:08d}.{rgb_format}", f"depth/{idx:08d}.png"
            buf = io.BytesIO()
            if rgb_format == "jpg":
                PIL.Image.fromarray(rgb).save(buf, format="jpeg", quality=95)
            else:
                PIL.Image.fromarray(rgb).save(buf, format="png")
            _write(zf, rgb_name, buf.getvalue())
            _write(zf, depth_name, encode_depth_png(encode_depth_uint16(d, depth_rule, depth_range)))
            pairs.append([rgb_name, depth_name])
            sources.append([rgb_name, name])
            counts["written"] += 1

    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        batch: list[tuple[str, np.ndarray]] = []
        shape = None
        for name in names:
            try:
                img = decode_image(reader.read(name), 3)
            except Exception as e:  # counted and listed, never fatal
                counts[f"undecodable ({type(e).__name__})"] += 1
                print(f"skipped {name}: undecodable ({type(e).__name__}: {e})")
                continue
            if resolution is not None:
                img = preprocess(img, resolution, transform, resize_filter)
            if batch and img.shape != shape:
                flush(zf, batch)
                batch = []
            shape = img.shape
            batch.append((name, img))
            if len(batch) == batch_size:
                flush(zf, batch)
                batch = []
        if batch:
            flush(zf, batch)
        record = {
            "encoding": "16-bit grayscale PNG, larger = farther",
            "normalisation": f"(v - {DEPTH_OFFSET:g}) / {DEPTH_SCALE:g}",
            "rule": depth_rule,
            "max_code": DEPTH_MAX_CODE,
            "range": list(depth_range) if depth_rule == "fixed" else None,
            "network_output": output,
            "input_size": input_size,
            "mean": list(mean),
            "std": list(std),
            **(network_info or {}),
            "note": "DepthGAN publishes neither the depth scaling nor the splits; this rule is the suite's choice [X]",
        }
        meta = {"pairs": pairs, "depth": record, "sources": sources, "source": str(source)}
        _write(zf, "dataset.json", json.dumps(meta, indent=0).encode())
    skipped = {k: v for k, v in counts.items() if k != "written"}
    if counts["written"] == 0:
        tmp.unlink()
        raise ValueError(f"{source}: none of the {len(names)} images could be read {skipped}; {dest} not written")
    tmp.replace(dest)
    print(f"wrote {counts['written']} RGB-D pairs to {dest}; skipped {sum(skipped.values())}: {skipped}")
    return dict(counts)


def main(argv: list[str] | None = None) -> dict[str, int]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="image folder, zip or LSUN LMDB directory")
    ap.add_argument("--dest", required=True, help="output RGB-D .zip")
    ap.add_argument("--network", required=True, help="depth network class path (must be on the allow-list)")
    ap.add_argument("--network-kwargs", default="{}", help="JSON constructor arguments of the network class")
    ap.add_argument("--checkpoint", required=True, help="local state dict (.pth); read with weights_only=True")
    ap.add_argument("--state-key", default=None, help="dotted key of the state dict inside the checkpoint")
    ap.add_argument("--strip-prefix", default="", help="drop this prefix from every key (e.g. 'module.')")
    ap.add_argument("--resolution", type=int, default=None, help="centre-crop and resize the RGB (and depth) to this")
    ap.add_argument("--transform", choices=TRANSFORMS, default="center-crop")
    ap.add_argument("--resize-filter", choices=sorted(RESIZE_FILTERS), default="lanczos")
    ap.add_argument("--input-size", type=int, default=None, help="square network input size (LeReS: 448)")
    ap.add_argument("--mean", type=float, nargs=3, default=IMAGENET_MEAN)
    ap.add_argument("--std", type=float, nargs=3, default=IMAGENET_STD)
    ap.add_argument("--output", choices=OUTPUTS, default="depth", help="what the network returns")
    ap.add_argument("--depth-rule", choices=DEPTH_RULES, default="minmax")
    ap.add_argument("--depth-range", type=float, nargs=2, default=(0.8, 6.95), help="NEAR FAR for --depth-rule fixed")
    ap.add_argument("--rgb-format", choices=("jpg", "png"), default="jpg")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    kwargs = json.loads(args.network_kwargs)
    net = build_depth_network(args.network, args.checkpoint, kwargs, args.state_key, args.strip_prefix)
    info = {
        "network": args.network,
        "network_kwargs": kwargs,
        "checkpoint": Path(args.checkpoint).name,
        "checkpoint_sha256": file_sha256(args.checkpoint),
    }
    return extract_depth(
        args.source,
        args.dest,
        net,
        resolution=args.resolution,
        transform=args.transform,
        resize_filter=args.resize_filter,
        input_size=args.input_size,
        mean=tuple(args.mean),
        std=tuple(args.std),
        output=args.output,
        depth_rule=args.depth_rule,
        depth_range=tuple(args.depth_range),
        rgb_format=args.rgb_format,
        batch_size=args.batch_size,
        device=args.device,
        network_info=info,
    )


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"error: {e}")
