"""Caching CPU allocator (ops/cpu_allocator.py, ops/csrc/cpu_allocator.cpp): reuse, split and coalesce, the footprint
bound, small requests, threads, forked workers, switching back, the config and environment paths, and a training
step that computes bit-identical results with either allocator."""

import os
import random
import subprocess
import sys
import threading

import pytest
import torch

import ops
from networks.stylegan2 import Discriminator, Generator
from ops import _backend, cpu_allocator

pytestmark = pytest.mark.skipif(
    not _backend.extension_available(), reason=f"ops._C not built ({_backend.extension_error()})"
)
MIB = 2**20


def _floats(nbytes: int) -> torch.Tensor:
    return torch.empty(nbytes // 4)


@pytest.fixture
def caching():
    """Enable the caching allocator with an empty cache (switching to default unmaps what is cached) and fresh
    peaks; restore the previous choice afterwards. Yields a function that reconfigures it (min_bytes, slack)."""
    previous = cpu_allocator.get_cpu_allocator()
    cpu_allocator.set_cpu_allocator("default")

    def configure(min_bytes: int = cpu_allocator.MIN_BYTES, slack_mb: int = 0):
        cpu_allocator.set_cpu_allocator("caching", slack_mb, min_bytes)
        cpu_allocator.cpu_allocator_stats(reset_peaks=True)

    configure()
    yield configure
    cpu_allocator.set_cpu_allocator("default")
    cpu_allocator.set_cpu_allocator(previous)


def test_freed_block_is_reused_without_a_new_mapping(caching):
    before = cpu_allocator.cpu_allocator_stats()
    x = _floats(6 * MIB).fill_(3.0)
    address = x.data_ptr()
    assert cpu_allocator.cpu_allocator_stats()["live_bytes"] == before["live_bytes"] + 6 * MIB
    assert address % (2 * MIB) == 0  # huge-page aligned from 4 MiB on
    del x
    y = _floats(6 * MIB).fill_(1.0)
    after = cpu_allocator.cpu_allocator_stats()
    assert y.data_ptr() == address
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (1, 1)
    assert torch.equal(y, torch.ones_like(y))
    summary, now = cpu_allocator.cpu_allocator_summary(), cpu_allocator.cpu_allocator_stats()
    assert summary.startswith("CPU allocator caching: large tensors peaked at ")
    assert f"{now['peak_live_bytes'] / MIB:.0f} MiB live" in summary and now["peak_live_bytes"] >= 12 * MIB
    assert f"{now['hits']} hits, {now['misses']} misses" in summary


def test_small_requests_go_to_the_default_allocator(caching):
    before = cpu_allocator.cpu_allocator_stats()
    x = torch.randn(1000)
    y = x * 2
    after = cpu_allocator.cpu_allocator_stats()
    assert after["live_bytes"] == before["live_bytes"] and after["misses"] == before["misses"]
    torch.testing.assert_close(y / 2, x)


def test_ranges_split_and_coalesce(caching):
    big = _floats(8 * MIB)
    start = big.data_ptr()
    del big
    head, middle = _floats(2 * MIB), _floats(3 * MIB)
    assert (head.data_ptr(), middle.data_ptr()) == (start, start + 2 * MIB)  # pieces of the freed 8 MiB range
    del head, middle  # coalesce with the 3 MiB rest into one 8 MiB range again
    stats = cpu_allocator.cpu_allocator_stats()
    assert stats["cached_bytes"] == 8 * MIB
    again = _floats(8 * MIB)
    assert again.data_ptr() == start
    assert cpu_allocator.cpu_allocator_stats()["misses"] == stats["misses"]


@pytest.mark.parametrize("slack_mib", [0, 4])
def test_contents_survive_churn_and_mapping_stays_within_the_bound(caching, slack_mib):
    """Random allocations and frees: no live tensor is ever overwritten, and the mapped bytes never exceed the peak
    of the live bytes plus the slack."""
    caching(slack_mb=slack_mib)
    rng = random.Random(slack_mib)
    live: dict[int, torch.Tensor] = {}
    for step in range(300):
        if live and (rng.random() < 0.45 or len(live) > 12):
            key = rng.choice(list(live))
            tensor = live.pop(key)
            assert bool((tensor == key).all()), f"tensor {key} was overwritten"
        else:
            live[step] = _floats(rng.choice([1, 2, 3, 5, 6, 9, 13]) * MIB + rng.randrange(0, 64 * 1024, 4)).fill_(step)
    stats = cpu_allocator.cpu_allocator_stats()
    assert stats["peak_mapped_bytes"] <= stats["peak_live_bytes"] + slack_mib * MIB
    assert stats["hits"] > 0
    assert stats["mapped_bytes"] == stats["live_bytes"] + stats["cached_bytes"]


def test_threads_allocate_concurrently(caching):
    caching(slack_mb=16)
    before = cpu_allocator.cpu_allocator_stats()["live_bytes"]
    errors = []

    def work(seed: int):
        for i in range(40):
            x = _floats((1 + (seed + i) % 4) * MIB).fill_(seed)
            y = x + 1  # a kernel that allocates inside the thread
            if not bool((y == seed + 1).all()):
                errors.append((seed, i))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cpu_allocator.cpu_allocator_stats()["live_bytes"] == before


class _LargeSamples(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.full((MIB // 2,), float(i))  # 2 MiB per sample, allocated in the forked worker


def test_forked_dataloader_workers(caching):
    _floats(4 * MIB)  # the parent holds cached ranges when the workers fork
    loader = torch.utils.data.DataLoader(_LargeSamples(), batch_size=2, num_workers=2)
    batches = list(loader)
    assert [b[:, 0].tolist() for b in batches] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]


def test_switching_back_unmaps_blocks_when_freed(caching):
    x = _floats(4 * MIB)
    cpu_allocator.set_cpu_allocator("default")
    before = cpu_allocator.cpu_allocator_stats()
    y = _floats(4 * MIB)  # the default allocator's
    assert cpu_allocator.cpu_allocator_stats()["live_bytes"] == before["live_bytes"]
    del x
    after = cpu_allocator.cpu_allocator_stats()
    assert after["enabled"] == 0
    assert after["live_bytes"] == before["live_bytes"] - 4 * MIB and after["cached_bytes"] == 0
    assert after["unmapped_ranges"] == before["unmapped_ranges"] + 1
    assert y.numel() == MIB


def _gan_step(seed: int) -> list[torch.Tensor]:
    """Losses and gradients of one small G + D step with a gradient penalty (double backward)."""
    torch.manual_seed(seed)
    common = dict(channel_base=512, channel_max=64)
    G = Generator(64, 0, 64, 16, 3, mapping_kwargs=dict(num_layers=2), synthesis_kwargs=common)
    D = Discriminator(0, 16, 3, **common)
    z, c = torch.randn(4, 64), torch.zeros(4, 0)
    real = torch.randn(4, 3, 16, 16).requires_grad_()
    fake = G(z, c)
    (r1,) = torch.autograd.grad(D(real, c).sum(), real, create_graph=True)
    loss = torch.nn.functional.softplus(-D(fake, c)).mean() + r1.square().sum()
    params = [*G.parameters(), *D.parameters()]
    return [loss.detach(), *torch.autograd.grad(loss, params)]


def test_training_step_is_bit_identical_with_either_allocator(caching):
    """Nearly every tensor through the cache (min_bytes 4 KiB, no slack: many splits, merges and unmaps) gives the
    same bits as torch's allocator: no kernel of the step reads memory it did not write."""
    cpu_allocator.set_cpu_allocator("default")
    expected = _gan_step(0)
    caching(min_bytes=4096, slack_mb=0)
    got = _gan_step(0)
    stats = cpu_allocator.cpu_allocator_stats()
    assert stats["hits"] > 100 and stats["unmapped_ranges"] > 0
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_configure_rejects_bad_values():
    with pytest.raises(ValueError, match="ops.cpu_allocator must be one of"):
        cpu_allocator.set_cpu_allocator("jemalloc")
    with pytest.raises(ValueError, match="ops.cpu_allocator_slack_mb"):
        cpu_allocator.set_cpu_allocator("caching", -1)
    with pytest.raises(RuntimeError, match="min_bytes must be >= 1"):
        torch.ops.suite_ops.cpu_allocator_configure(True, 0, 0)
    with pytest.raises(ValueError, match=r"missing keys \['cpu_allocator', 'cpu_allocator_slack_mb'\]"):
        ops.configure({"backend": "auto", "linear_clamp_grad": "passthrough", "conv3x3": "winograd"})


def test_auto_backend_without_the_extension_falls_back_to_the_default_allocator(monkeypatch, caplog):
    """As the ops under ``backend: auto``: no compiled extension means torch's allocator (logged), not an error;
    an explicit caching choice with another backend still raises."""
    previous_backend, previous_allocator = _backend.get_backend(), cpu_allocator.get_cpu_allocator()
    monkeypatch.setitem(_backend._ext, "loaded", False)
    monkeypatch.setitem(_backend._ext, "error", ImportError("no ops._C"))
    exported = {var: os.environ.get(var) for var in ops.CONFIG_ENV_VARS.values()}  # configure overwrites them
    group = {"backend": "auto", "linear_clamp_grad": "passthrough", "conv3x3": "winograd"}
    group |= {"cpu_allocator": "caching", "cpu_allocator_slack_mb": 64}
    try:
        with caplog.at_level("WARNING", logger="ops"):
            ops.configure(group)
        assert cpu_allocator.get_cpu_allocator() == "default"
        assert os.environ[cpu_allocator.ENV_VAR] == "default"
        assert any("torch's default allocator instead" in r.message for r in caplog.records)
        with pytest.raises(RuntimeError, match="ops.cpu_allocator=caching needs the compiled extension"):
            ops.configure(group | {"backend": "ref"})
    finally:
        monkeypatch.undo()
        for var, value in exported.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        _backend.set_backend(previous_backend)
        cpu_allocator.set_cpu_allocator(previous_allocator)


def test_environment_applies_the_choice_at_import(tmp_path):
    """How a spawned DDP worker inherits ops.cpu_allocator: ops.configure exports it, ``import ops`` applies it."""
    code = (
        "import torch, ops\n"
        "x = torch.empty(2**20)\n"
        "s = ops.cpu_allocator.cpu_allocator_stats()\n"
        "print(s['enabled'], s['live_bytes'], s['slack_bytes'])\n"
    )
    env = {**os.environ, cpu_allocator.ENV_VAR: "caching", cpu_allocator.SLACK_ENV_VAR: "7"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", str(4 * MIB), str(7 * MIB)]
    env[cpu_allocator.SLACK_ENV_VAR] = "lots"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "SUITE_OPS_CPU_ALLOCATOR_SLACK_MB must be a non-negative integer" in out.stderr
