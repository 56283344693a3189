"""Two-process CPU DDP run (gloo) of the base GAN module; each rank dumps its weights for the test to compare.

Run as ``python -m tests.lightning_modules.ddp_worker OUT_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy

from tests.lightning_modules.gan_helpers import tiny_datamodule, tiny_module, tiny_trainer


class DumpWeights(pl.Callback):
    def __init__(self, out: str):
        self.out = out

    def on_train_start(self, trainer, pl_module):
        torch.save(
            {k: v.clone() for k, v in pl_module.state_dict().items()},
            f"{self.out}/start{trainer.global_rank}.pt",
        )

    def on_train_end(self, trainer, pl_module):
        state = {k: v.clone() for k, v in pl_module.state_dict().items()}
        state["__world_size"] = torch.tensor(trainer.world_size)
        state["__seen_img"] = torch.tensor(pl_module.progress.seen_img)
        state["__augment_p"] = torch.tensor(pl_module.augment_p)
        torch.save(state, f"{self.out}/rank{trainer.global_rank}.pt")


def main(out: str) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    module = tiny_module(batch_size=8, total_kimg=0.024)  # 3 iterations of a global batch of 8 (4 per rank)
    strategy = DDPStrategy(
        start_method="spawn",
        process_group_backend="gloo",
        find_unused_parameters=True,
        broadcast_buffers=False,
    )
    trainer = tiny_trainer(out, callbacks=[DumpWeights(out)], devices=2, strategy=strategy)
    trainer.fit(module, datamodule=tiny_datamodule(batch_size=8))


if __name__ == "__main__":
    main(sys.argv[1])
