"""Embedded action dataset: procedurally generated videos written as real .avi files in the UCF-101 layout.

A shape (disc, square or triangle; random colour, size, background and noise) moves in one of six motion
patterns; the class is the motion only, so a single frame carries no label information. Generated once,
deterministically, into ``<root>`` (default ``${paths.data_dir}/embedded_actions``) with
``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and ``ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt``
(groups 1..test_groups are the test list, as UCF-101's split 1 holds out groups 1-7), so the real UCF-101
reader and DataModule run on it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from datamodules.video import SemiSupervisedVideoDataModule
from datamodules.video_io import write_video

log = logging.getLogger(__name__)

CLASSES = ("MoveRight", "MoveLeft", "MoveUp", "MoveDown", "Grow", "Shrink")
GENERATOR_VERSION = 1


def _shape_mask(kind: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    if kind == 0:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == 1:
        return (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    return (yy - cy <= r) & (yy - cy >= -r) & (np.abs(xx - cx) <= (yy - cy + r) / 2)


def render_action(label: int, rng: np.random.Generator, frames: int = 16, height: int = 48, width: int = 64):
    """Frames (T, H, W, 3) uint8 of one video of class ``label`` (index into CLASSES)."""
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label must be in [0, {len(CLASSES)}), got {label}")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = int(rng.integers(0, 3))
    bg = rng.uniform(0, 0.5, size=3)
    fg = rng.uniform(0.5, 1.0, size=3)
    noise = rng.uniform(0.0, 0.06)
    t = np.arange(frames, dtype=np.float32)
    if label < 4:
        r = np.full(frames, rng.uniform(5, 8))
        axis_len = width if label < 2 else height
        other_len = height if label < 2 else width
        travel = rng.uniform(0.5, 0.8) * (axis_len - 2 * r[0] - 2)
        speed = travel / (frames - 1)
        start = rng.uniform(r[0] + 1, axis_len - r[0] - 1 - travel)
        pos = start + speed * t if label in (0, 3) else start + travel - speed * t
        other = np.full(frames, rng.uniform(r[0] + 1, other_len - r[0] - 1))
        cx, cy = (pos, other) if label < 2 else (other, pos)
    else:
        r0, r1 = rng.uniform(3, 5), rng.uniform(13, 17)
        r = r0 + (r1 - r0) * t / (frames - 1)
        r = r if label == 4 else r[::-1]
        cx = np.full(frames, rng.uniform(width / 2 - 8, width / 2 + 8))
        cy = np.full(frames, rng.uniform(height / 2 - 6, height / 2 + 6))
    video = np.empty((frames, height, width, 3), dtype=np.float32)
    for i in range(frames):
        img = np.broadcast_to(bg, (height, width, 3)).copy()
        img[_shape_mask(kind, yy, xx, cy[i], cx[i], r[i])] = fg
        video[i] = img + rng.normal(0, noise, size=img.shape)
    return (np.clip(video, 0, 1) * 255 + 0.5).astype(np.uint8)


def ensure_embedded_actions(
    root: str | os.PathLike,
    groups: int = 25,
    clips_per_group: int = 2,
    test_groups: int = 5,
    frames: int = 16,
    height: int = 48,
    width: int = 64,
    seed: int = 0,
) -> Path:
    """Generate the dataset into ``root`` unless a complete copy with the same parameters is there.

    Written into a temporary sibling folder and renamed, so concurrent or interrupted runs never see a partial
    dataset. Returns ``root``.
    """
    root = Path(root)
    params = dict(version=GENERATOR_VERSION, classes=list(CLASSES), groups=groups, clips_per_group=clips_per_group,
                  test_groups=test_groups, frames=frames, height=height, width=width, seed=seed)  # fmt: skip
    marker = root / "embedded_actions.json"
    if marker.is_file():
        with open(marker) as f:
            if json.load(f) == params:
                return root
        raise FileExistsError(f"{root} holds an embedded_actions dataset generated with other parameters "
                              f"(see {marker}); delete it or choose another data.root")  # fmt: skip
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not an embedded_actions dataset; choose another data.root")
    tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    train_list, test_list = [], []
    for c, name in enumerate(CLASSES):
        for g in range(1, groups + 1):
            for k in range(1, clips_per_group + 1):
                rel = f"{name}/v_{name}_g{g:02d}_c{k:02d}.avi"
                rng = np.random.default_rng([seed, c, g, k])
                write_video(str(tmp / "UCF-101" / rel), render_action(c, rng, frames, height, width), fps=8)
                if g <= test_groups:
                    test_list.append(rel)
                else:
                    train_list.append(f"{rel} {c + 1}")
    lists = tmp / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(CLASSES)))
    (lists / "trainlist01.txt").write_text("\n".join(train_list) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(test_list) + "\n")
    with open(tmp / "embedded_actions.json", "w") as f:
        json.dump(params, f)
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():
        root.rmdir()
    try:
        os.replace(tmp, root)
    except OSError:
        if not marker.is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("generated embedded_actions (%d train, %d test videos) in %s", len(train_list), len(test_list), root)
    return root


class EmbeddedActionsDataModule(SemiSupervisedVideoDataModule):
    """The UCF-101 DataModule on the embedded action dataset, generated on first use (``prepare_data``)."""

    def __init__(self, root: str = "data/embedded_actions", generator: dict | None = None, **kwargs):
        kwargs.setdefault("load_size", 32)
        kwargs.setdefault("crop_size", 32)
        kwargs.setdefault("hflip", False)
        fixed = dict(dataset="ucf101", split=1, video_dir="UCF-101", list_dir="ucfTrainTestlist")
        for key, value in fixed.items():
            if kwargs.setdefault(key, value) != value:
                raise ValueError(f"data.{key}={kwargs[key]!r}: the embedded action dataset has {key}={value!r}")
        super().__init__(root=root, **kwargs)
        self.generator_kwargs = dict(generator or {})

    def prepare_data(self) -> None:
        ensure_embedded_actions(self.hp.root, **self.generator_kwargs)
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        ensure_embedded_actions(self.hp.root, **self.generator_kwargs)
        super().setup(stage)
