"""Seconds per GAN training step and peak memory on the CPU, and the same for the ORIGINAL StyleGAN2-ADA.

Setting (conf/experiment/bench_stylegan2_ada.yaml, bench_insgen.yaml, composed as train.py would): batch 8,
channel_base 16384, channel_max 256, 8 mapping layers, ADA bgc from p = 0.2 with adaptive p,
2 threads, 32x32 and 64x64; the step time is amortised over lazy regularisation (16 iterations = 1 Dreg +
4 Greg). Every configuration runs in its own subprocess (peak RSS per configuration; the allocator setting is
an environment variable read at process start). Printed: median seconds per amortised step over interleaved
rounds and the ratios against the baselines measured in the same run (the original, ops ref, stock allocator,
the StyleGAN2-ADA row).

The original: ``--original DIR --original-python PY`` runs ``experiments/original_step.py`` (NVlabs'
networks, loss and augment pipe imported from the working copy DIR, under interpreter PY) once per round,
alternating with the suite's rows, and prints original / suite (speed) and suite / original (peak RSS).
Absolute times do not carry across machines, so the comparison is always made in the same run.

``--profile`` then runs one profiled process per side: time per phase (``record_function`` ranges Gmain, Greg,
Dmain, Dreg) and the top ops by self CPU time, split by phase (``experiments/bench_profile.py``).

Methods: ``stylegan2_ada``; ``insgen`` (query views read off the adversarial D passes, the suite default);
``insgen-separate`` (the original's separate query passes); ``insgen-no-g`` (lambda_g = 0).
``--flops`` counts the convolution and matmul FLOPs of one amortised step, measures this machine's sgemm peak
and prints the fraction of it each measured row reaches.

Backends: ``ref``, ``compiled``, ``auto`` (the ops/ switch) and ``floor``: upfirdn2d, bias_act and grid_sample
replaced by stand-ins that only write an output of the right shape (and pass gradients of the right shapes),
everything else unchanged. Its step time bounds what any kernels for these ops can reach (Amdahl): ref / floor
is the largest ref / compiled ratio possible. The floor's images are meaningless; only its time is.

    python experiments/bench_train.py --res 32 64 --backends auto --allocators tuned --repeats 3 \\
        --original /tmp/ref --original-python /tmp/refvenv/bin/python
    python experiments/bench_train.py --res 32 --backends auto --allocators tuned --repeats 1 --profile \\
        --original /tmp/ref --original-python /tmp/refvenv/bin/python
    python experiments/bench_train.py --res 32 --repeats 1 --flops
    python experiments/bench_train.py --res 32 --allocators tuned --backends ref compiled floor --repeats 3
    python experiments/bench_train.py --res 32 --backends auto --allocators tuned \\
        --methods stylegan2_ada insgen insgen-separate
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.bench_profile import format_profiles, summarize

ROOT = Path(__file__).resolve().parents[1]

TUNED_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
ORIGINAL_REPO, ORIGINAL_COMMIT = "NVlabs/stylegan2-ada-pytorch", "d72cc7d"
GET_ORIGINAL = f"""\
To compare with the original, give a working copy of {ORIGINAL_REPO} at {ORIGINAL_COMMIT} and an interpreter
with torch (the suite's pinned version), numpy, scipy, pillow, click, requests, tqdm:
    git clone https://github.com/{ORIGINAL_REPO} /tmp/ref-git
    mkdir -p /tmp/ref && git -C /tmp/ref-git archive {ORIGINAL_COMMIT} | tar -x -C /tmp/ref
    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install torch==2.13.0 numpy scipy pillow click requests tqdm
then add: --original /tmp/ref --original-python /tmp/refvenv/bin/python"""


METHODS = ("stylegan2_ada", "insgen", "insgen-separate", "insgen-no-g")


def bench_overrides(res: int) -> list[str]:
    """Overrides of the bench experiments per resolution: the resolution and the auto preset's gamma."""
    return [f"data.resolution={res}", f"model.r1_gamma={0.0002 * res * res / 8}"]


# method -> (experiment, extra overrides): conf/experiment/bench_*.yaml.
METHOD_EXPERIMENTS = {
    "stylegan2_ada": ("bench_stylegan2_ada", []),
    "insgen": ("bench_insgen", []),
    "insgen-separate": ("bench_insgen", ["model.insgen.query_view=separate"]),
    "insgen-no-g": ("bench_insgen", ["model.insgen.lambda_g=0.0"]),
}


def bench_config(method: str, res: int):
    """The composed config of one benchmark row (conf/experiment files + :func:`bench_overrides`)."""
    from experiments.compose import compose_experiment

    if method not in METHOD_EXPERIMENTS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    experiment, extra = METHOD_EXPERIMENTS[method]
    return compose_experiment(experiment, [*bench_overrides(res), *extra])


def bench_module(method: str, res: int):
    """The module of one benchmark row, seeded so that every row starts alike: the one place modules are built."""
    import torch

    from experiments.compose import instantiate_module

    cfg = bench_config(method, res)
    torch.manual_seed(0)
    return instantiate_module(cfg)


def bench_datamodule(res: int):
    from experiments.compose import instantiate_datamodule

    return instantiate_datamodule(bench_config("stylegan2_ada", res))


def time_training_steps(
    module,
    datamodule,
    warmup: int,
    iters: int,
    profile: dict | None = None,
    device: str = "cpu",
    clock: str = "wall",
) -> list[float]:
    """Seconds of each of ``iters`` training steps after ``warmup`` steps, through a real Trainer on ``device``
    (``cpu`` or ``cuda``; CUDA steps are timed between device synchronisations). ``clock``: ``wall`` or ``cpu``
    (this process's CPU time, all threads: on a shared machine it does not count the time other jobs hold the
    cores, but it does count threads spinning while they wait for each other).

    ``profile``: a dict that receives ``bench_profile.summarize`` of the timed steps under ``torch.profiler``.
    """
    import pytorch_lightning as pl
    import torch

    now = CLOCKS[clock]

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    class Timer(pl.Callback):
        def __init__(self):
            self.times: list[float] = []
            self.prof = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if profile is not None and len(self.times) == warmup:
                self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self.prof.__enter__()
            sync()
            self._t = now()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync()
            self.times.append(now() - self._t)
            if len(self.times) == warmup + iters:
                trainer.should_stop = True
            if self.prof is not None and len(self.times) == warmup + iters:
                self.prof.__exit__(None, None, None)
                profile.update(summarize(self.prof, iters, sum(self.times[warmup:])))
                self.prof = None

    timer = Timer()
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        limit_train_batches=warmup + iters,
        max_steps=-1,
    )
    trainer.fit(module, datamodule=datamodule)
    return timer.times[warmup:]


def floor_ops() -> dict:
    """Stand-ins for the reference paths of the three ops that cost one output-sized write (forward) and one
    input-sized gradient (backward), with the reference's output shapes: the ``floor`` backend."""
    import ops.upfirdn2d as up

    def upfirdn2d_floor(x, f, up_=1, down=1, padding=0, flip_filter=False, gain=1):
        ux, uy = up._parse_scaling(up_)
        dx, dy = up._parse_scaling(down)
        px0, px1, py0, py1 = up._parse_padding(padding)
        fw, fh = up._get_filter_size(f)
        out_w = (x.shape[3] * ux + px0 + px1 - fw) // dx + 1
        out_h = (x.shape[2] * uy + py0 + py1 - fh) // dy + 1
        return x[:, :, :1, :1].expand(x.shape[0], x.shape[1], out_h, out_w) * 1.0

    def bias_act_floor(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
        return x * 1.0 if b is None else x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])

    def grid_sample_floor(input, grid):
        return input[:, :, :1, :1].expand(input.shape[0], input.shape[1], grid.shape[1], grid.shape[2]) * 1.0

    return {"upfirdn2d": upfirdn2d_floor, "bias_act": bias_act_floor, "grid_sample": grid_sample_floor}


def install_floor_ops() -> None:
    """Swap the reference paths for :func:`floor_ops` and select ``ref`` (this process only)."""
    import ops
    import ops.bias_act as ba
    import ops.grid_sample as gs
    import ops.upfirdn2d as up

    floor = floor_ops()
    up._upfirdn2d_ref, ba._bias_act_ref, gs._grid_sample_ref = (
        floor["upfirdn2d"],
        floor["bias_act"],
        floor["grid_sample"],
    )
    ops.set_backend("ref")


def run_one(
    res: int,
    backend: str,
    iters: int,
    method: str,
    cpu_allocator: str = "caching",
    profile: bool = False,
    device: str = "cpu",
    threads: int = 2,
    clock: str = "wall",
) -> dict:
    """One configuration in this process: amortised seconds per step and peak RSS (peak device memory on CUDA,
    and the profile). The ops config group is the composed experiment's, with ``backend`` and ``cpu_allocator``
    (``caching`` or ``default``, docs/ops.md "CPU allocator") as given."""
    import torch

    import ops

    torch.set_num_threads(threads)
    cfg_ops = {**bench_config(method, res).ops, "cpu_allocator": cpu_allocator}
    ops.configure({**cfg_ops, "backend": "ref" if backend == "floor" else backend})
    if backend == "floor":
        install_floor_ops()
    module = bench_module(method, res)
    summary: dict | None = {} if profile else None
    times = time_training_steps(
        module, bench_datamodule(res), warmup=2, iters=iters, profile=summary, device=device, clock=clock
    )
    out = {
        "sec_per_step": sum(times) / len(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device == "cuda":
        out["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if summary is not None:
        out["profile"] = summary
    return out


def amortised_gflop(method: str, res: int, conv3x3: str) -> dict[str, float]:
    """Convolution + matmul GFLOP of each phase at batch 8 and of one amortised step (each phase weighted by 1 /
    its interval: Gmain + Dmain every iteration, Greg every 4th, Dreg every 16th), counted with torch's FLOP
    formulas on the ops as dispatched, with the 3x3 convolutions computed by ``conv3x3`` (``direct``: the work
    of the original's step; ``winograd``: the suite's default, its tile products counted as matmuls)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    from lightning_modules.gan import RealBatch
    from ops import winograd

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if func._overloadpacket in flop_registry:
                self.total += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
            return out

    previous = winograd.get_conv3x3()
    winograd.set_conv3x3(conv3x3)
    try:
        module = bench_module(method, res)
        real = RealBatch(torch.rand(8, 3, res, res) * 2 - 1, torch.zeros(8, 0))
        out = {"amortised": 0.0}
        for phase in module.phases:
            if phase.interval == 0:
                continue
            trains_g = phase.optimizers[0].startswith("G")
            module.G.requires_grad_(trains_g)
            module.D.requires_grad_(not trains_g)
            with Count() as count:
                sum(phase.loss(real).terms.values()).backward()
            module.zero_grad(set_to_none=True)
            out[phase.name] = count.total / 1e9
            out["amortised"] += out[phase.name] / phase.interval
    finally:
        winograd.set_conv3x3(previous)
    return out


def sgemm_peak_gflops(n: int = 2048, repeats: int = 7) -> float:
    """Best-of-``repeats`` fp32 matmul rate of this machine with the benchmark's 2 threads."""
    import torch

    torch.set_num_threads(2)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def conv_peak_gflops(repeats: int = 7) -> float:
    """Best-of-``repeats`` rate of the step's largest convolution (3x3, 256 -> 256 channels, [8, 256, 32, 32],
    oneDNN) with the benchmark's 2 threads: on CPUs where oneDNN outruns the BLAS sgemm, the fraction of the matmul
    peak understates how close the step is to what its convolutions can reach."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    x, w = torch.randn(8, 256, 32, 32), torch.randn(256, 256, 3, 3)
    F.conv2d(x, w, padding=1)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        F.conv2d(x, w, padding=1)
        best = min(best, time.perf_counter() - t)
    return 2 * 8 * 256 * 256 * 9 * 32 * 32 / best / 1e9


def _env(allocator: str) -> dict:
    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    if allocator == "tuned":
        env["GLIBC_TUNABLES"] = TUNED_MALLOC
    env["WANDB_MODE"] = "disabled"
    return env


def _last_json(out: subprocess.CompletedProcess, what: str) -> dict:
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {what}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def spawn(res: int, backend: str, allocator: str, cpu_allocator: str, iters: int, method: str, **options) -> dict:
    """:func:`run_one` in a fresh process under glibc setting ``allocator`` and torch CPU allocator
    ``cpu_allocator``; ``options``: profile, device, threads, clock."""
    args = dict(res=res, backend=backend, iters=iters, method=method, cpu_allocator=cpu_allocator, **options)
    cmd = [sys.executable, __file__, "--worker", json.dumps(args)]
    out = subprocess.run(cmd, env=_env(allocator), capture_output=True, text=True, check=False)
    return _last_json(out, f"{res} {backend} {allocator} {cpu_allocator} {method}")


def original_problem(ref: str, python: str) -> str | None:
    """Why the original cannot be run from working copy ``ref`` with interpreter ``python`` (None: it can)."""
    if not Path(ref, "training", "networks.py").is_file():
        return f"--original {ref}: not a working copy of {ORIGINAL_REPO} (no training/networks.py)"
    if not (Path(python).is_file() and os.access(python, os.X_OK)):
        return f"--original-python {python}: not an executable interpreter"
    return None


def spawn_original(
    ref: str, python: str, res: int, allocator: str, iters: int, profile: bool = False, threads: int = 2, clock="wall"
) -> dict:
    cmd = [python, str(ROOT / "experiments" / "original_step.py"), "--ref", ref, "--res", str(res)]
    cmd += ["--iters", str(iters), "--threads", str(threads), "--clock", clock] + (["--profile"] if profile else [])
    out = subprocess.run(cmd, env=_env(allocator), capture_output=True, text=True, check=False)
    return _last_json(out, f"the original at {res} {allocator} ({' '.join(cmd)})")


# The C++ sources of the kernels a StyleGAN2 step runs: a revision whose copies differ cannot borrow this checkout's
# compiled extension.
STEP_KERNEL_SOURCES = ("ops/csrc/bias_act_cpu.cpp", "ops/csrc/bias_act_math.h", "ops/csrc/upfirdn2d_cpu.cpp")
STEP_KERNEL_SOURCES += ("ops/csrc/grid_sample_cpu.cpp", "ops/csrc/common.h")
MEDIAN_LINE = re.compile(r"median ([0-9.]+) s/step\s+peak ([0-9.]+) MB")


def _code(source: str) -> str:
    """C++ source without comments and blank space (revisions that differ in comments only build the same kernels)."""
    return "".join(re.sub(r"//[^\n]*|/\*.*?\*/", "", source, flags=re.S).split())


def export_revision(rev: str, dest: Path) -> Path:
    """The suite at git revision ``rev`` (``git archive``) in ``dest``, with this checkout's compiled ``ops._C``
    (built from the same kernel sources: checked against ``rev``)."""
    git = ["git", "-C", str(ROOT)]
    if subprocess.run([*git, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], capture_output=True).returncode:
        raise SystemExit(f"--compare-rev {rev}: not a commit of {ROOT}")
    changed = [
        path
        for path in STEP_KERNEL_SOURCES
        if _code(subprocess.run([*git, "show", f"{rev}:{path}"], capture_output=True, text=True).stdout)
        != _code((ROOT / path).read_text())
    ]
    if changed:
        raise SystemExit(
            f"--compare-rev {rev}: the step's kernels changed since ({changed}); build that revision's extension in "
            "its own checkout and compare there"
        )
    built = sorted((ROOT / "ops").glob("_C*.so"))
    if not built:
        raise SystemExit(
            "--compare-rev needs ops._C built in this checkout: pip install --no-build-isolation --no-deps -e ."
        )
    archive = subprocess.Popen([*git, "archive", rev], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    if archive.wait():
        raise SystemExit(f"--compare-rev {rev}: git archive failed")
    shutil.copy2(built[0], dest / "ops" / built[0].name)
    return dest


def spawn_revision(tree: Path, res: int, allocator: str, iters: int) -> dict:
    """One round of ``tree``'s own ``experiments/bench_train.py`` (its StyleGAN2-ADA row, ops auto), importing
    ``tree``'s packages first; the CLI and the median line are those of bench_train.py since d55aadf."""
    cmd = [sys.executable, str(tree / "experiments" / "bench_train.py"), "--res", str(res), "--backends", "auto"]
    cmd += ["--allocators", allocator, "--methods", "stylegan2_ada", "--repeats", "1", "--iters", str(iters)]
    env = {**_env(allocator), "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    found = MEDIAN_LINE.search(out.stdout)
    if out.returncode != 0 or found is None:
        raise RuntimeError(f"benchmark of {tree} failed ({' '.join(cmd)}):\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
    return {"sec_per_step": float(found.group(1)), "peak_rss_mb": float(found.group(2))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--backends", nargs="+", default=["ref", "auto"])
    ap.add_argument("--allocators", nargs="+", default=["stock", "tuned"], help="glibc malloc setting, both sides")
    ap.add_argument(
        "--cpu-allocators",
        nargs="+",
        default=["caching"],
        choices=["caching", "default"],
        help="the suite's torch CPU allocator (ops.cpu_allocator; the original always runs torch's default)",
    )
    ap.add_argument("--iters", type=int, default=16, help="timed steps (16 = one full lazy-reg cycle)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (every row once per round)")
    ap.add_argument("--methods", nargs="+", default=["stylegan2_ada"], choices=METHODS)
    ap.add_argument("--original", metavar="DIR", help=f"working copy of {ORIGINAL_REPO} at {ORIGINAL_COMMIT}")
    ap.add_argument(
        "--original-python", metavar="PY", default=sys.executable, help="interpreter for the original's step"
    )
    ap.add_argument(
        "--compare-rev",
        metavar="REV",
        help="also run the suite at git revision REV (e.g. d55aadf, the GAN base before the reshape) each round",
    )
    ap.add_argument("--profile", action="store_true", help="also profile one run per row: phases and top ops")
    ap.add_argument("--flops", action="store_true", help="also count FLOPs and print the fraction of the sgemm peak")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: the suite's rows on the GPU")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    ap.add_argument("--clock", default="wall", choices=list(CLOCKS), help="cpu: process CPU time (shared machines)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(run_one(**json.loads(args.worker))))
        return
    if args.repeats < 1 or args.iters < 1:
        ap.error("--repeats and --iters must be at least 1")
    if args.device == "cuda" and (args.original or args.profile or args.flops):
        ap.error("--original, --profile and --flops measure the CPU; run them without --device cuda")
    if args.original:
        problem = original_problem(args.original, args.original_python)
        if problem:
            raise SystemExit(f"{problem}\n{GET_ORIGINAL}")
    else:
        print(f"No --original given: no ratios against the original.\n{GET_ORIGINAL}\n", flush=True)

    timing = dict(threads=args.threads, clock=args.clock)
    rev_dir = tempfile.TemporaryDirectory(prefix="bench_rev_") if args.compare_rev else None
    rev_tree = export_revision(args.compare_rev, Path(rev_dir.name)) if rev_dir else None
    # Rounds are interleaved (every row once per round, the original first) so that slow phases of a shared
    # machine hit all rows alike; medians over rounds are reported.
    configs = [
        (res, backend, alloc, cpu_alloc, method)
        for res in args.res
        for backend in args.backends
        for alloc in args.allocators
        for cpu_alloc in args.cpu_allocators
        for method in args.methods
    ]
    originals = [(res, alloc) for res in args.res for alloc in args.allocators] if args.original else []
    runs: dict[tuple, list[dict]] = {key: [] for key in configs}
    orig_runs: dict[tuple, list[dict]] = {key: [] for key in originals}
    revisions = [(res, alloc) for res in args.res for alloc in args.allocators] if rev_tree else []
    rev_runs: dict[tuple, list[dict]] = {key: [] for key in revisions}
    for round_idx in range(args.repeats):
        for res in args.res:
            for key in [k for k in originals if k[0] == res]:
                orig_runs[key].append(
                    spawn_original(args.original, args.original_python, res, key[1], args.iters, **timing)
                )
                print(
                    f"round {round_idx}  res {res:4d}  original          malloc {key[1]:6s}  {'stylegan2_ada':16s} "
                    f"{orig_runs[key][-1]['sec_per_step']:.3f} s/step  peak {orig_runs[key][-1]['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
            for key in [k for k in revisions if k[0] == res]:
                rev_runs[key].append(spawn_revision(rev_tree, res, key[1], args.iters))
                print(
                    f"round {round_idx}  res {res:4d}  rev {args.compare_rev:9s} malloc {key[1]:6s}  "
                    f"{'stylegan2_ada':16s} {rev_runs[key][-1]['sec_per_step']:.3f} s/step  "
                    f"peak {rev_runs[key][-1]['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
            for key in [k for k in configs if k[0] == res]:
                runs[key].append(spawn(*key[:4], args.iters, key[4], device=args.device, **timing))
                _, backend, alloc, cpu_alloc, method = key
                print(
                    f"round {round_idx}  res {res:4d}  ops {backend:8s}  malloc {alloc:6s}  {cpu_alloc:7s}  "
                    f"{method:16s} "
                    f"{runs[key][-1]['sec_per_step']:.3f} s/step  peak {runs[key][-1]['peak_rss_mb']:.0f} MB",
                    flush=True,
                )

    def median_row(rs: list[dict]) -> dict:
        row = {"sec": statistics.median(r["sec_per_step"] for r in rs), "rss": max(r["peak_rss_mb"] for r in rs)}
        row["mem"] = f"peak {row['rss']:.0f} MB"
        if "peak_device_mb" in rs[0]:
            row["mem"] += f" RSS, {max(r['peak_device_mb'] for r in rs):.0f} MB on the device"
        return row

    rows = {key: median_row(rs) for key, rs in runs.items()}
    orig = {key: median_row(rs) for key, rs in orig_runs.items()}
    revs = {key: median_row(rs) for key, rs in rev_runs.items()}
    if rev_dir:
        rev_dir.cleanup()
    print(f"\nmedians of {args.repeats} interleaved rounds (peak RSS: the largest of the rounds):")
    for (res, alloc), row in orig.items():
        print(f"res {res:4d}  original          malloc {alloc:6s}  median {row['sec']:.3f} s/step", row["mem"])
    for (res, alloc), row in revs.items():
        print(f"res {res:4d}  rev {args.compare_rev:9s} malloc {alloc:6s}  median {row['sec']:.3f} s/step", row["mem"])
    for (res, backend, alloc, cpu_alloc, method), row in rows.items():
        print(
            f"res {res:4d}  ops {backend:8s}  malloc {alloc:6s}  {cpu_alloc:7s}  {method:16s} median {row['sec']:.3f} "
            "s/step",
            row["mem"],
        )
    print("\nratios (speed: higher = the suite faster; RSS: lower = the suite smaller; 'x ADA' = cost vs ADA):")
    for key, row in rows.items():
        res, backend, alloc, cpu_alloc, method = key
        line = f"res {res} ops {backend} malloc {alloc} cpu allocator {cpu_alloc} {method}:"
        if method == "stylegan2_ada":
            if (res, alloc) in orig:
                o = orig[(res, alloc)]
                per_round = [a["sec_per_step"] / b["sec_per_step"] for a, b in zip(orig_runs[(res, alloc)], runs[key])]
                line += (
                    f" original / suite = {o['sec'] / row['sec']:.2f}x (rounds "
                    f"{' '.join(f'{r:.2f}' for r in per_round)}), peak RSS suite / original = "
                    f"{row['rss'] / o['rss']:.2f}"
                )
            if (res, alloc) in revs and backend == "auto":
                r = revs[(res, alloc)]
                line += (
                    f"; {args.compare_rev} / suite = {r['sec'] / row['sec']:.2f}x, peak RSS suite / "
                    f"{args.compare_rev} = {row['rss'] / r['rss']:.2f}"
                )
            if (res, "ref", alloc, cpu_alloc, method) in rows and backend != "ref":
                line += f"; ref / {backend} = {rows[(res, 'ref', alloc, cpu_alloc, method)]['sec'] / row['sec']:.2f}x"
                if backend == "floor":
                    line += " (the most any ops kernels could give)"
            if alloc == "tuned" and (res, backend, "stock", cpu_alloc, method) in rows:
                stock = rows[(res, backend, "stock", cpu_alloc, method)]
                line += f"; stock / tuned = {stock['sec'] / row['sec']:.2f}x"
            if cpu_alloc == "caching" and (res, backend, alloc, "default", method) in rows:
                default = rows[(res, backend, alloc, "default", method)]
                line += (
                    f"; default / caching CPU allocator = {default['sec'] / row['sec']:.2f}x, peak RSS caching / "
                    f"default = {row['rss'] / default['rss']:.2f}"
                )
        elif (res, backend, alloc, cpu_alloc, "stylegan2_ada") in rows:
            line += f" {row['sec'] / rows[(res, backend, alloc, cpu_alloc, 'stylegan2_ada')]['sec']:.2f}x ADA"
        print(line)

    if args.profile:
        alloc = "tuned" if "tuned" in args.allocators else args.allocators[0]
        for res in args.res:
            profiles = {}
            if args.original:
                profiles["original"] = spawn_original(
                    args.original, args.original_python, res, alloc, args.iters, profile=True, **timing
                )["profile"]
            for backend in args.backends:
                for method in args.methods:
                    profiles[f"{backend} {method}"[:14]] = spawn(
                        res, backend, alloc, args.cpu_allocators[0], args.iters, method, profile=True, **timing
                    )["profile"]
            print(f"\n=== profile, res {res}, malloc {alloc} ===\n{format_profiles(profiles)}")

    if args.flops:
        peak, conv_peak = sgemm_peak_gflops(), conv_peak_gflops()
        print(f"\nsgemm peak of this machine (2 threads, 2048^3, best of 7): {peak:.1f} GFLOP/s")
        print(f"3x3 convolution 256 -> 256 at [8, 256, 32, 32] (2 threads, best of 7): {conv_peak:.1f} GFLOP/s")
        for res in args.res:
            for method in args.methods:
                gflop = amortised_gflop(method, res, "direct")
                executed = amortised_gflop(method, res, "winograd")["amortised"]
                phases = ", ".join(f"{k} {v:.1f}" for k, v in gflop.items() if k != "amortised")
                print(
                    f"res {res} {method}: {gflop['amortised']:.1f} GFLOP (conv + matmul) per amortised step with "
                    f"direct 3x3 convolutions, the original's work ({phases}); at the sgemm peak >= "
                    f"{gflop['amortised'] / peak:.2f} s/step. With Winograd 3x3 convolutions (the suite's CPU "
                    f"default): {executed:.1f} GFLOP"
                )
                measured = [
                    (f"ops {k[1]} malloc {k[2]} {k[3]}", r["sec"])
                    for k, r in rows.items()
                    if k[0] == res and k[4] == method
                ]
                if method == "stylegan2_ada":
                    measured += [(f"original malloc {k[1]}", r["sec"]) for k, r in orig.items() if k[0] == res]
                for name, sec in measured:
                    rate = gflop["amortised"] / sec
                    line = (
                        f"  {name}: {rate:.1f} GFLOP/s of the original's work = {100 * rate / peak:.0f} % of the "
                        f"sgemm peak, {100 * rate / conv_peak:.0f} % of the 3x3 convolution's rate"
                    )
                    if not name.startswith("original"):
                        line += f"; executed {executed / sec:.1f} GFLOP/s = {100 * executed / sec / peak:.0f} %"
                    print(line)


if __name__ == "__main__":
    main()
