"""experiments/render.py end to end on a tiny random VolumeGAN written with save_networks: the video, the grids
and the meshes it writes reload. Budget: ~10 s on 2 CPU cores."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from experiments import render
from networks.checkpoint import save_networks
from networks.stylegan2 import Generator
from tests.tiny_volumegan import opaque_tiny_volumegan


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    G = opaque_tiny_volumegan().eval()
    path = tmp_path_factory.mktemp("net") / "volumegan.pt"
    save_networks(path, {"G_ema": G})
    return path, G


def _run(network, mode, out, *extra):
    return render.main([mode, "--network", str(network[0]), "--outdir", str(out), "--device", "cpu", *extra])


def test_video_reloads(network, tmp_path):
    assert _run(network, "video", tmp_path, "--frames", "6", "--trajectory", "orbit") == 0
    with av.open(str(tmp_path / "seed0000_orbit.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24").astype(float) for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (16, 16, 3)
    _, G = network
    args = render.parse_args(["video", "--network", "x", "--outdir", "x", "--frames", "6", "--trajectory", "orbit"])
    args.device = "cpu"
    with torch.no_grad():
        yaw, pitch = render.trajectory(G, args)[0]
        first = render.render(G, args, render.mapped_ws(G, args, [0]), yaw, pitch)
    expected = (first[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).numpy()
    assert float(np.abs(frames[0] - expected).mean()) < 6  # lossy codec, 4:2:0 chroma
    assert float(np.abs(frames[0] - frames[3]).mean()) > 1  # the camera moves


def test_view_grid_depth_grid_and_swap_grid(network, tmp_path):
    assert _run(network, "grid", tmp_path, "--seeds", "0-1", "--views", "3") == 0
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (2 * 16, 3 * 16, 3)
    assert np.asarray(Image.open(tmp_path / "depth.png")).shape == (2 * 16, 3 * 16)
    assert _run(network, "swap", tmp_path, "--seeds", "0-2") == 0
    swap = np.asarray(Image.open(tmp_path / "swap.png"))
    assert swap.shape == (3 * 16, 3 * 16, 3)
    # the diagonal of the swap grid is each seed itself, as in the middle column of the view grid
    np.testing.assert_array_equal(swap[16:32, 16:32], grid[16:32, 16:32])


def _read_ply(path):
    data = path.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    lines = header.decode().splitlines()
    nv = int(next(x for x in lines if x.startswith("element vertex")).split()[-1])
    nf = int(next(x for x in lines if x.startswith("element face")).split()[-1])
    verts = np.frombuffer(body[: nv * 12], dtype="<f4").reshape(nv, 3)
    faces = np.frombuffer(body[nv * 12 :], dtype=[("n", "u1"), ("i", "<i4", (3,))])
    assert len(faces) == nf and (faces["n"] == 3).all()
    return verts, faces["i"]


def test_mesh_ply_and_obj_reload(network, tmp_path):
    _, G = network
    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(np.random.RandomState(0).randn(1, 8).astype(np.float32)), None)
        field = render.density_grid(G, ws, 12, 0.3, 500)
    level = float(np.median(field))
    assert _run(network, "mesh", tmp_path, "--mesh-res", "12", "--mesh-level", str(level), "--chunk", "500") == 0
    verts, faces = _read_ply(tmp_path / "seed0000.ply")
    assert len(verts) > 0 and len(faces) > 0
    assert (np.abs(verts) <= 0.15 + 1e-6).all() and faces.max() < len(verts)
    obj = (tmp_path / "seed0000.obj").read_text().splitlines()
    v = np.array([[float(t) for t in x.split()[1:]] for x in obj if x.startswith("v ")])
    f = np.array([[int(t) for t in x.split()[1:]] for x in obj if x.startswith("f ")])
    np.testing.assert_allclose(v, verts, atol=1e-6)
    np.testing.assert_array_equal(f - 1, faces)


def test_errors_name_the_argument(network, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"--mesh-level 1000000000.0: outside the density range"):
        _run(network, "mesh", tmp_path, "--mesh-res", "4", "--mesh-level", "1e9")
    with pytest.raises(SystemExit):
        _run(network, "video", tmp_path, "--frames", "0")
    assert "argument --frames: expected an integer >= 1" in capsys.readouterr().err
    other = tmp_path / "sg2.pt"
    save_networks(other, {"G": Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=3)})
    with pytest.raises(ValueError, match="not a VolumeGAN generator"):
        render.main(["grid", "--network", str(other), "--outdir", str(tmp_path)])
