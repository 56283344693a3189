"""convert.py, generate.py and evaluate.py on careless input: refused with an ``error:`` line that names the
problem, nothing overwritten or half-written. Budget: < 15 s on 2 CPU cores (an 8x8 generator, one subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments import convert, evaluate, generate
from networks.checkpoint import save_networks
from networks.stylegan2 import Generator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def net_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    G = Generator(
        z_dim=8,
        c_dim=0,
        w_dim=8,
        img_resolution=8,
        img_channels=3,
        mapping_kwargs={"num_layers": 1},
        synthesis_kwargs={"channel_base": 32, "channel_max": 4},
    )
    path = tmp_path_factory.mktemp("net") / "net.pt"
    save_networks(path, {"G": G, "G_ema": G})
    return path


def test_convert_refuses_its_input_as_output_and_an_existing_file(net_file, tmp_path):
    src = tmp_path / "src.pt"
    src.write_bytes(net_file.read_bytes())
    before = src.read_bytes()
    for force in ([], ["--force"]):
        with pytest.raises(ValueError, match="is the input file itself"):
            convert.main([str(src), str(src), *force])
    assert src.read_bytes() == before
    out = tmp_path / "out.pt"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="pass --force"):
        convert.main([str(src), str(out)])
    assert out.read_bytes() == b"keep me"
    assert convert.main([str(src), str(out), "--force"]) == 0
    assert torch.load(out, weights_only=True)["meta"]["converted_from"] == str(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pt", "src.pt"]  # no temporary file left


def test_convert_writes_atomically(net_file, tmp_path, monkeypatch):
    out = tmp_path / "out.pt"
    out.write_bytes(b"previous version")

    def torn(path, nets, meta):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(convert, "save_networks", torn)
    with pytest.raises(OSError, match="disk full"):
        convert.main([str(net_file), str(out), "--force"])
    assert out.read_bytes() == b"previous version" and sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]


@pytest.mark.parametrize(
    "args,match",
    [
        (["--trunc", "nan"], "expected a finite number"),
        (["--trunc", "inf"], "expected a finite number"),
        (["--batch", "0"], "expected an integer >= 1"),
        (["--batch", "x"], "expected an integer >= 1"),
    ],
)
def test_generate_refuses_bad_numbers(net_file, tmp_path, capsys, args, match):
    with pytest.raises(SystemExit) as err:
        generate.main(["--network", str(net_file), "--seeds", "0", "--outdir", str(tmp_path / "o"), *args])
    assert err.value.code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_generate_refuses_nan_latents_and_a_nan_network(net_file, tmp_path):
    z = np.random.RandomState(0).randn(3, 8).astype(np.float32)
    z[1, 2] = np.nan
    np.save(tmp_path / "z.npy", z)
    with pytest.raises(ValueError, match=r"1 latents hold NaN or inf values \(rows \[1\]\)"):
        generate.main(["--network", str(net_file), "--z", str(tmp_path / "z.npy"), "--outdir", str(tmp_path / "o")])
    raw = torch.load(net_file, weights_only=True)
    for name in ("G", "G_ema"):
        raw["networks"][name]["state_dict"]["synthesis.b4.conv1.weight"].fill_(float("nan"))
    broken = tmp_path / "broken.pt"
    torch.save(raw, broken)
    with pytest.raises(ValueError, match=r"output is not finite for seed0003\.png"):
        generate.main(["--network", str(broken), "--seeds", "3-4", "--outdir", str(tmp_path / "b")])
    assert not list((tmp_path / "b").glob("*.png"))


def test_generate_names_device_and_os_errors(net_file, tmp_path):
    with pytest.raises(ValueError, match="--device 'gpu0' is not a device name"):
        generate.main(["--network", str(net_file), "--seeds", "0", "--outdir", str(tmp_path), "--device", "gpu0"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available here; pass --device cpu"):
            generate.main(["--network", str(net_file), "--seeds", "0", "--outdir", str(tmp_path), "--device", "cuda"])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cmd = [
        sys.executable,
        "experiments/generate.py",
        "--network",
        str(net_file),
        "--seeds",
        "0",
        "--outdir",
        str(blocker / "out"),
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in proc.stderr


def test_evaluate_checks_the_results_file_before_computing(net_file, tmp_path, monkeypatch):
    import networks.checkpoint

    def never(*a, **k):
        raise AssertionError("the network was loaded before the results file was checked")

    monkeypatch.setattr(networks.checkpoint, "load_networks", never)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match=r"cannot write the results to .*pass --out"):
        evaluate.main(["--network", str(net_file), "--data", "embedded:faces", "--out", str(blocker / "r.jsonl")])
