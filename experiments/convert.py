"""Convert any supported network file to the suite's network file: ``python experiments/convert.py SRC OUT``.

SRC: NVlabs ``.pkl`` (PyTorch or TensorFlow StyleGAN2), rosinality ``.pt``, Hammer ``.pth``, a suite
``.ckpt`` or network file (docs/checkpoints.md). OUT is written by ``networks.checkpoint.save_networks``
and loads with ``torch.load(weights_only=True)``. An existing OUT is replaced only with ``--force`` (never
when it is SRC itself), atomically: a temporary file next to it, then a rename.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
from pathlib import Path

from networks.checkpoint import load_networks, save_networks

log = logging.getLogger("convert")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="network file to convert (format detected from its content)")
    parser.add_argument("out", help="output path of the suite network file (e.g. ffhq.pt)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists (never SRC itself)")
    return parser.parse_args(argv)


def check_output(src: Path, out: Path, force: bool) -> None:
    """Refuse OUT == SRC (the input would be lost) and an existing OUT without ``--force``."""
    if out.exists() and src.exists() and os.path.samefile(src, out):
        raise ValueError(f"OUT {out} is the input file itself: choose another output path")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists: pass --force to replace it, or choose another output path")
    if out.is_dir():
        raise IsADirectoryError(f"OUT {out} is a directory: expected a file path such as {out / 'network.pt'}")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    check_output(Path(args.src), out, args.force)
    log.info("reading %s", args.src)
    loaded = load_networks(args.src)
    meta = loaded.pop("meta")
    nets = {name: net for name, net in loaded.items() if net is not None}
    for name, net in nets.items():
        count = sum(p.numel() for p in net.parameters())
        log.info("%s: %s, %.2fM parameters", name, type(net).__name__, count / 1e6)
    meta["converted_from"] = meta.pop("source")
    meta["source_format"] = meta.pop("format")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        save_networks(tmp, nets, meta)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s (%s)", out, ", ".join(nets))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as e:
        sys.exit(f"error: {e}")
