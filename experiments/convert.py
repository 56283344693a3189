"""Convert any supported network file to the suite's network file: ``python experiments/convert.py SRC OUT``.

SRC: NVlabs ``.pkl`` (PyTorch or TensorFlow StyleGAN2), rosinality ``.pt``, Hammer ``.pth``, a suite
``.ckpt`` or network file (docs/checkpoints.md). OUT is written by ``networks.checkpoint.save_networks``
and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from networks.checkpoint import load_networks, save_networks  # noqa: E402

log = logging.getLogger("convert")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="network file to convert (format detected from its content)")
    parser.add_argument("out", help="output path of the suite network file (e.g. ffhq.pt)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log.info("reading %s", args.src)
    loaded = load_networks(args.src)
    meta = loaded.pop("meta")
    nets = {name: net for name, net in loaded.items() if net is not None}
    for name, net in nets.items():
        count = sum(p.numel() for p in net.parameters())
        log.info("%s: %s, %.2fM parameters", name, type(net).__name__, count / 1e6)
    meta["converted_from"] = meta.pop("source")
    meta["source_format"] = meta.pop("format")
    save_networks(args.out, nets, meta)
    log.info("wrote %s (%s)", args.out, ", ".join(nets))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, ValueError, pickle.UnpicklingError) as e:
        sys.exit(f"error: {e}")
