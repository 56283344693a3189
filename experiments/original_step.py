"""Seconds per amortised training step of the ORIGINAL StyleGAN2-ADA (NVlabs/stylegan2-ada-pytorch), at the
setting of ``experiments/bench_train.py``; run by ``bench_train.py --original DIR --original-python PY``.

It imports the original's ``training.networks``, ``training.loss`` and ``training.augment`` from the working
copy ``--ref`` (nothing of it is copied here) and runs the phase loop of its ``training/training_loop.py``:
Gmain, Greg (every 4th iteration), Dmain, Dreg (every 16th) with the lazy-regularisation lr/beta correction,
NaN/inf gradient clean-up, G_ema, and ADA's adaptive p (target 0.6, every 4 iterations, 100 kimg). Runs under
the original's own interpreter (any environment with torch and numpy), so it imports nothing of the suite
except the torch-only ``bench_profile`` next to it. Prints one JSON line:
``{"sec_per_step", "peak_rss_mb", "times"[, "profile"]}``.

    python experiments/original_step.py --ref /tmp/ref --res 32
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import resource
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))


def build(ref: str, res: int, p: float, device):
    """G, D, G_ema, loss, augment pipe, ADA collector and the four phases of the original's training loop."""
    import dnnlib
    import torch
    from torch_utils import training_stats
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix

    conv2d_gradfix.enabled = True  # as training_loop.py (both are CUDA-only switches)
    grid_sample_gradfix.enabled = True
    common = dict(channel_base=16384, channel_max=256, num_fp16_res=0, conv_clamp=None)
    G = dnnlib.util.construct_class_by_name(
        class_name="training.networks.Generator",
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=res,
        img_channels=3,
        mapping_kwargs=dict(num_layers=8),
        synthesis_kwargs=common,
    )
    D = dnnlib.util.construct_class_by_name(
        class_name="training.networks.Discriminator",
        c_dim=0,
        img_resolution=res,
        img_channels=3,
        block_kwargs={},
        mapping_kwargs={},
        epilogue_kwargs=dict(mbstd_group_size=4),
        **common,
    )
    G.train().requires_grad_(False)
    D.train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    augment = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1)  # bgc
    augment.update(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    pipe = dnnlib.util.construct_class_by_name(class_name="training.augment.AugmentPipe", **augment)
    pipe.train().requires_grad_(False)
    pipe.p.copy_(torch.as_tensor(p))
    stats = training_stats.Collector(regex="Loss/signs/real")
    loss = dnnlib.util.construct_class_by_name(
        class_name="training.loss.StyleGAN2Loss",
        device=device,
        G_mapping=G.mapping,
        G_synthesis=G.synthesis,
        D=D,
        augment_pipe=pipe,
        r1_gamma=0.0002 * res * res / 8,
    )
    phases = []
    for name, net, reg_interval in (("G", G, 4), ("D", D, 16)):
        ratio = reg_interval / (reg_interval + 1)
        opt = torch.optim.Adam(net.parameters(), lr=0.0025 * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)
        phases.append(dict(name=name + "main", net=net, opt=opt, interval=1))
        phases.append(dict(name=name + "reg", net=net, opt=opt, interval=reg_interval))
    return G, G_ema, loss, pipe, stats, phases


def load_bench_profile():
    """``experiments/bench_profile.py`` loaded from its file: this script runs under the original's interpreter,
    where the suite is not installed."""
    spec = importlib.util.spec_from_file_location("bench_profile", os.path.join(HERE, "bench_profile.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="working copy of NVlabs/stylegan2-ada-pytorch")
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--iters", type=int, default=16, help="timed iterations (16 = one lazy-regularisation cycle)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--p", type=float, default=0.2, help="initial ADA p")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="profile the timed iterations (bench_profile.py)")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: this process's CPU time")
    args = ap.parse_args()
    ref = os.path.abspath(args.ref)
    if not os.path.isfile(os.path.join(ref, "training", "networks.py")):
        raise SystemExit(f"--ref {ref}: not a working copy of NVlabs/stylegan2-ada-pytorch (no training/networks.py)")
    sys.path.insert(0, ref)  # the original's packages (dnnlib, torch_utils, training), imported from its copy
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    from torch_utils import misc

    torch.set_num_threads(args.threads)
    now = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    device = torch.device("cpu")
    G, G_ema, loss, pipe, stats, phases = build(ref, args.res, args.p, device)
    batch = 8
    reals = torch.randint(0, 256, [4, batch, 3, args.res, args.res], dtype=torch.uint8)
    no_c = torch.zeros([batch, 0])
    prof, times, seen = None, [], 0
    for it in range(args.warmup + args.iters):
        if args.profile and it == args.warmup:
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            prof.__enter__()
        start = now()
        real = reals[it % 4].to(torch.float32) / 127.5 - 1
        gen_z = torch.randn([len(phases), batch, 512])
        for phase, z in zip(phases, gen_z):
            if it % phase["interval"]:
                continue
            with torch.autograd.profiler.record_function(phase["name"]):
                phase["opt"].zero_grad(set_to_none=True)
                phase["net"].requires_grad_(True)
                loss.accumulate_gradients(
                    phase=phase["name"],
                    real_img=real,
                    real_c=no_c,
                    gen_z=z,
                    gen_c=no_c,
                    sync=True,
                    gain=phase["interval"],
                )
                phase["net"].requires_grad_(False)
                for param in phase["net"].parameters():
                    if param.grad is not None:
                        misc.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
                phase["opt"].step()
        with torch.autograd.profiler.record_function("Gema"):
            beta = 0.5 ** (batch / max(min(10_000, seen * 0.05), 1e-8))  # ema_kimg 10, ema_rampup 0.05
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)
        seen += batch
        if (it + 1) % 4 == 0:  # ADA: target 0.6, interval 4, 100 kimg
            stats.update()
            adjust = np.sign(stats["Loss/signs/real"] - 0.6) * (batch * 4) / (100 * 1000)
            pipe.p.copy_((pipe.p + adjust).max(misc.constant(0, device=device)))
        if it >= args.warmup:
            times.append(now() - start)
    out = {
        "sec_per_step": sum(times) / len(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "times": times,
    }
    if prof is not None:
        prof.__exit__(None, None, None)
        out["profile"] = load_bench_profile().summarize(prof, len(times), sum(times))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
