"""Host reads of device tensors caused by the suite's code in steady-state GAN training steps (budget ~25 s).

Every read of a device tensor on the host (``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, a copy to the
CPU, a data-dependent shape) stalls an accelerator's queue. A ``TorchDispatchMode`` around ``training_step``
counts them: ``aten._local_scalar_dense`` on any device, and copies to the host / ``nonzero`` from a non-CPU
device. torch.optim's reads of its own CPU step counters are not synchronisations and are left out. The test
runs on the CPU and, unchanged, on a GPU (``SUITE_TEST_DEVICE=cuda``, as ``experiments/gpu_check.sh`` does).
"""

from __future__ import annotations

import os
import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_modules.depthgan import DepthGANModule
from lightning_modules.eqgan_sa import EqGANModule
from lightning_modules.insgen import InsGenModule
from lightning_modules.stylegan2_ada import StyleGAN2ADAModule
from lightning_modules.volumegan import VolumeGANModule
from networks.eqgan_sa import EqGANGenerator
from tests.lightning_modules.gan_helpers import RES, tiny_datamodule, tiny_module, tiny_networks, tiny_trainer
from tests.lightning_modules.test_depthgan import rgbd_datamodule, tiny_depthgan
from tests.lightning_modules.test_volumegan import tiny_volumegan

DEVICE = os.environ.get("SUITE_TEST_DEVICE", "cpu")
WARMUP = 2  # iterations before counting (optimiser state creation, first-time set-up)
MAX_READS_PER_STEP = 0.5


class HostReads(TorchDispatchMode):
    """Counts host reads of tensors, attributing each to the innermost suite frame that caused it."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._is_read(func, args, kwargs):
            frames = traceback.extract_stack()
            if not any("/torch/optim/" in f.filename for f in frames):
                suite = [f for f in frames if "/site-packages/" not in f.filename and "/lib/python" not in f.filename]
                where = suite[-1] if suite else frames[-1]
                self.reads.append(f"{func} at {os.path.basename(where.filename)}:{where.lineno} {where.line}")
        return func(*args, **kwargs)

    @staticmethod
    def _is_read(func, args, kwargs) -> bool:
        if func is torch.ops.aten._local_scalar_dense.default:
            return True
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if src is None or src.device.type == "cpu":
            return False
        if func in (torch.ops.aten._to_copy.default,):
            return torch.device(kwargs.get("device", src.device)).type == "cpu"
        return func in (torch.ops.aten.nonzero.default, torch.ops.aten.masked_select.default)


def counting(cls):
    """``cls`` with ``training_step`` wrapped in :class:`HostReads` after the warm-up iterations."""

    class Counting(cls):
        def on_train_start(self):
            super().on_train_start()
            self.host_reads = HostReads()
            self.counted_steps = 0

        def training_step(self, batch, batch_idx):
            if self.progress.iteration < WARMUP:
                return super().training_step(batch, batch_idx)
            with self.host_reads:
                out = super().training_step(batch, batch_idx)
            self.counted_steps += 1
            return out

    Counting.__name__ = f"Counting{cls.__name__}"
    return Counting


def run(module, tmp_path, iterations: int = 10, datamodule=None):
    module.hparams.total_kimg = iterations * 4 / 1000
    module.progress.total_kimg = module.hparams.total_kimg
    accelerator = "gpu" if DEVICE == "cuda" else "cpu"
    trainer = tiny_trainer(tmp_path, accelerator=accelerator, log_every_n_steps=8)
    trainer.fit(module, datamodule=datamodule or tiny_datamodule())
    return module.host_reads.reads, module.counted_steps


def eqgan_module():
    _, D = tiny_networks()
    G = EqGANGenerator(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=RES,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 128, "channel_max": 16},
        use_sel=True,
        sel_kwargs={"sel_hidden": 8},
    )
    return counting(EqGANModule)(
        G, D, batch_size=4, r1_gamma=1.0, g_reg_interval=2, d_reg_interval=4, sample_every_kimg=100, cam_grid=0
    )


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: tiny_module(cls=counting(StyleGAN2ADAModule), d_reg_interval=4), id="stylegan2_ada"),
        pytest.param(
            lambda: tiny_module(cls=counting(InsGenModule), insgen={"queue": {"real_size": 8, "fake_size": 8}}),
            id="insgen",
        ),
        pytest.param(eqgan_module, id="eqgan_sa"),
        pytest.param(
            lambda: (tiny_depthgan(counting(DepthGANModule), d_reg_interval=4), rgbd_datamodule()), id="depthgan"
        ),
        pytest.param(lambda: tiny_volumegan(cls=counting(VolumeGANModule)), id="volumegan"),
    ],
)
def test_steady_state_training_steps_read_the_device_at_most_half_a_time_per_step(build, tmp_path):
    torch.manual_seed(0)
    built = build()
    module, datamodule = built if isinstance(built, tuple) else (built, None)
    reads, steps = run(module, tmp_path, datamodule=datamodule)
    assert steps >= 8
    per_step = len(reads) / steps
    assert per_step <= MAX_READS_PER_STEP, f"{per_step:.2f} host reads per step:\n" + "\n".join(reads)


def test_the_counter_sees_the_reads_it_must_catch():
    """The mode counts an ``int(tensor)`` (what the old loop did for ``seen_img``), not optimiser counters."""
    mode = HostReads()
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([p])
    p.grad = torch.ones(2)
    with mode:
        int(torch.zeros([], dtype=torch.int64) + 3)
        opt.step()
    assert len(mode.reads) == 1 and "test_host_sync.py" in mode.reads[0]
