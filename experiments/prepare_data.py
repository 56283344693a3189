"""Convert an image folder / zip / LSUN LMDB into the stylegan2-ada zip at a target resolution.

    python experiments/prepare_data.py --source ~/ffhq/images1024x1024 --dest data/ffhq256.zip \
        --resolution 256 --resize-filter box

Output (NVlabs stylegan2-ada-pytorch ``dataset_tool.py``): uncompressed zip, PNG (compression 0) at
``00000/img00000000.png``, and
``dataset.json`` (``{"labels": [[name, label], ...]}`` when the source has labels, else ``null``). Zip
entries carry a fixed timestamp and attributes, so a rerun gives byte-identical output. Undecodable images
are skipped and counted by reason; the count is printed at the end. Every image is converted to ``--channels``
(default: 3 when any image of the source is in colour, else 1); 16-bit grayscale is scaled, not clipped.
When no image could be converted nothing is written and the command exits non-zero.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import sys
import zipfile
from pathlib import Path

import PIL.Image
from rich.progress import Progress

from datamodules.base import select_subset
from datamodules.images import (
    GRAY_MODES,
    RESIZE_FILTERS,
    TRANSFORMS,
    decode_image,
    image_mode,
    open_reader,
    preprocess,
)

ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _write(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def detect_channels(reader, names: list[str]) -> int:
    """3 when any image is in colour, else 1; reads headers only and stops at the first colour image."""
    for name in names:
        try:
            if image_mode(reader.read(name)) not in GRAY_MODES:
                return 3
        except Exception:  # undecodable: counted by the conversion pass
            continue
    return 1


def convert(
    source: str,
    dest: str,
    resolution: int,
    transform: str = "none",
    resize_filter: str = "lanczos",
    max_images: int | None = None,
    seed: int = 0,
    channels: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Write ``dest`` from ``source``; returns counts ``{"written": n, "<reason>": skipped, ...}``."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"--resolution must be a power of two >= 4, got {resolution}")
    reader = open_reader(source)
    names = reader.names()
    if not names:
        raise FileNotFoundError(f"{source}: no images found")
    labels_json = reader.labels_json()
    labels = None
    if isinstance(labels_json, dict) and labels_json.get("labels") is not None:
        labels = {str(n).replace("\\", "/"): v for n, v in labels_json["labels"]}
    names = [names[i] for i in select_subset(len(names), max_images, seed)]
    if channels is None:
        channels = detect_channels(reader, names)
        print(f"channels: {channels} ({'a colour image found' if channels == 3 else 'every image is grayscale'})")
    counts: collections.Counter[str] = collections.Counter()
    skipped: list[tuple[str, str]] = []
    out_labels = []
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{dest}.partial")
    with (
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf,
        Progress(disable=not progress) as bar,
    ):
        task = bar.add_task(f"{Path(source).name} -> {Path(dest).name}", total=len(names))
        for name in names:
            bar.advance(task)
            if labels is not None and name not in labels:
                counts["no label in dataset.json"] += 1
                skipped.append((name, "no label in dataset.json"))
                continue
            try:
                img = decode_image(reader.read(name), channels)
            except Exception as e:  # counted and listed, never fatal
                reason = f"undecodable ({type(e).__name__})"
                counts[reason] += 1
                skipped.append((name, reason))
                continue
            img = preprocess(img, resolution, transform, resize_filter)
            idx = counts["written"]
            arc = f"{idx // 1000:05d}/img{idx:08d}.png"
            buf = io.BytesIO()
            PIL.Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(buf, format="png", compress_level=0)
            _write(zf, arc, buf.getvalue())
            if labels is not None:
                out_labels.append([arc, labels[name]])
            counts["written"] += 1
        meta = {"labels": out_labels if labels is not None else None}
        _write(zf, "dataset.json", json.dumps(meta).encode())
    reasons = {k: v for k, v in counts.items() if k != "written"}
    for name, reason in skipped:
        print(f"skipped {name}: {reason}")
    if counts["written"] == 0:
        tmp.unlink()
        raise ValueError(f"{source}: none of the {len(names)} images could be converted {reasons}; {dest} not written")
    tmp.replace(dest)
    print(f"wrote {counts['written']} images to {dest}; skipped {len(skipped)}: {reasons}")
    return dict(counts)


def main(argv: list[str] | None = None) -> dict[str, int]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="image folder, stylegan2-ada zip or LMDB directory")
    ap.add_argument("--dest", required=True, help="output .zip")
    ap.add_argument("--resolution", type=int, required=True, help="output side (power of two)")
    ap.add_argument("--transform", choices=TRANSFORMS, default="none", help="center-crop for LSUN")
    ap.add_argument("--resize-filter", choices=sorted(RESIZE_FILTERS), default="lanczos", help="box for FFHQ-256")
    ap.add_argument("--max-images", type=int, default=None, help="seeded subset (NVIDIA rule)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--channels", type=int, choices=[1, 3], default=None, help="default: 3 if any image is colour")
    args = ap.parse_args(argv)
    return convert(
        args.source,
        args.dest,
        args.resolution,
        args.transform,
        args.resize_filter,
        args.max_images,
        args.seed,
        args.channels,
    )


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: {e}")
