"""rosinality/stylegan2-pytorch checkpoints: ``g_ema``, ``g``, ``d`` state dicts (+ ``latent_avg``).

Layer by layer the computation equals NVIDIA's (same equalised-lr storage, demodulation, FIR [1,3,3,1],
transposed-conv weight orientation — rosinality's own TF converter flips ``Conv0_up`` exactly as legacy.py
does — and the same padding once its (before, after) pairs are read per axis), so the mapping is a renaming
plus reshapes:

Generator (rosinality → ours):

- ``style.{i}`` (i ≥ 1) → ``mapping.fc{i-1}``; ``latent_avg`` → ``mapping.w_avg``;
- ``input.input`` [1,C,4,4] → ``synthesis.b4.const``; ``conv1`` / ``to_rgb1`` → ``b4.conv1`` / ``b4.torgb``;
- ``convs.{2j}``, ``convs.{2j+1}``, ``to_rgbs.{j}`` → ``b{2^(j+3)}.conv0``, ``.conv1``, ``.torgb``;
- in a layer: ``conv.weight`` [1,O,I,k,k] → ``weight``; ``conv.modulation`` → ``affine``;
  ``noise.weight`` [1] → ``noise_strength`` []; ``activate.bias`` (ToRGB: ``bias`` [1,O,1,1]) → ``bias``;
- ``noises.noise_{i}`` [1,1,r,r] → ``noise_const``: i = 0 b4.conv1; 2k−5 / 2k−4: conv0 / conv1 of b{2^k}.

Discriminator: ``convs.0`` → ``b{R}.fromrgb``; ``convs.{j}.conv1``, ``.conv2``, ``.skip`` →
``b{R/2^(j-1)}.conv0``, ``.conv1``, ``.skip``; ``final_conv``, ``final_linear.0``, ``final_linear.1`` →
``b4.conv``, ``b4.fc``, ``b4.out``.

Blur kernels (``*.kernel``) are the [1,3,3,1] filters our layers rebuild. rosinality has no labels, no
clamp, lr_mlp 0.01 and minibatch-stddev group 4. Without ``latent_avg`` w_avg is estimated as rosinality's
``mean_latent(4096)`` does (mean of mapping(z) over 4096 z drawn with a fixed seed).
"""

from __future__ import annotations

import logging
import re

import torch

from .common import DISCRIMINATOR, FILTER_KEYS, GENERATOR, as_tensor, entry, fit_channels, res_log2, take

log = logging.getLogger(__name__)

_LAYER = {
    "conv.weight": "weight",
    "conv.modulation.weight": "affine.weight",
    "conv.modulation.bias": "affine.bias",
}


def _mod_layer(sd: dict, src: str, dst: str, out: dict, source: str, torgb: bool = False) -> None:
    for theirs, ours in _LAYER.items():
        value = as_tensor(take(sd, f"{src}.{theirs}", source, "rosinality generator"))
        out[f"{dst}.{ours}"] = value[0] if theirs == "conv.weight" else value
    if torgb:
        out[f"{dst}.bias"] = as_tensor(take(sd, f"{src}.bias", source, "rosinality generator")).reshape(-1)
    else:
        out[f"{dst}.bias"] = as_tensor(take(sd, f"{src}.activate.bias", source, "rosinality generator"))
        out[f"{dst}.noise_strength"] = as_tensor(take(sd, f"{src}.noise.weight", source, "rosinality generator"))
        out[f"{dst}.noise_strength"] = out[f"{dst}.noise_strength"].reshape([])


def _check_consumed(sd: dict, used: set, source: str, what: str) -> None:
    extra = sorted(k for k in sd if k not in used and not k.endswith(".kernel"))
    if extra:
        raise ValueError(f"{source}: {what} has tensors this converter does not know: {extra[:8]}")


def convert_generator(sd: dict, latent_avg, source: str) -> dict:
    """rosinality ``Generator`` state dict → Generator entry (sizes from shapes)."""
    what = "rosinality generator"
    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    n_convs = len([k for k in sd if re.fullmatch(r"convs\.\d+\.conv\.weight", k)])
    R = 4 * 2 ** (n_convs // 2)
    const = take(sd, "input.input", source, what)
    style_dim = int(take(sd, "style.1.weight", source, what).shape[1])
    channels = {4: int(const.shape[1])}
    for j in range(n_convs // 2):
        channels[2 ** (j + 3)] = int(sd[f"convs.{2 * j + 1}.conv.weight"].shape[1])
    channel_base, channel_max = fit_channels(channels, source)
    init = dict(
        z_dim=style_dim,
        c_dim=0,
        w_dim=style_dim,
        img_resolution=R,
        img_channels=int(take(sd, "to_rgb1.conv.weight", source, what).shape[1]),
        mapping_kwargs=dict(num_layers=n_mlp, lr_multiplier=0.01),
        synthesis_kwargs=dict(
            channel_base=channel_base,
            channel_max=channel_max,
            num_fp16_res=0,
            conv_clamp=None,
            architecture="skip",
        ),
    )
    out = {}
    for i in range(1, n_mlp + 1):
        out[f"mapping.fc{i - 1}.weight"] = as_tensor(sd[f"style.{i}.weight"])
        out[f"mapping.fc{i - 1}.bias"] = as_tensor(take(sd, f"style.{i}.bias", source, what))
    out["synthesis.b4.const"] = as_tensor(const[0])
    _mod_layer(sd, "conv1", "synthesis.b4.conv1", out, source)
    _mod_layer(sd, "to_rgb1", "synthesis.b4.torgb", out, source, torgb=True)
    out["synthesis.b4.conv1.noise_const"] = as_tensor(take(sd, "noises.noise_0", source, what)[0, 0])
    for j in range(n_convs // 2):
        r = 2 ** (j + 3)
        k = res_log2(r)
        _mod_layer(sd, f"convs.{2 * j}", f"synthesis.b{r}.conv0", out, source)
        _mod_layer(sd, f"convs.{2 * j + 1}", f"synthesis.b{r}.conv1", out, source)
        _mod_layer(sd, f"to_rgbs.{j}", f"synthesis.b{r}.torgb", out, source, torgb=True)
        out[f"synthesis.b{r}.conv0.noise_const"] = as_tensor(take(sd, f"noises.noise_{2 * k - 5}", source, what)[0, 0])
        out[f"synthesis.b{r}.conv1.noise_const"] = as_tensor(take(sd, f"noises.noise_{2 * k - 4}", source, what)[0, 0])
    used = {f"style.{i}.{p}" for i in range(1, n_mlp + 1) for p in ("weight", "bias")}
    used |= {"input.input"} | {f"noises.noise_{i}" for i in range(2 * n_convs + 1)}
    for prefix in (
        ["conv1", "to_rgb1"] + [f"convs.{i}" for i in range(n_convs)] + [f"to_rgbs.{j}" for j in range(n_convs // 2)]
    ):
        used |= {f"{prefix}.{k}" for k in (*_LAYER, "bias", "activate.bias", "noise.weight")}
    _check_consumed(sd, used, source, what)
    if latent_avg is not None:
        out["mapping.w_avg"] = as_tensor(latent_avg).reshape(-1)
    else:
        out["mapping.w_avg"] = estimate_w_avg(init, out)
    return entry(GENERATOR, init, out, defaults=FILTER_KEYS)


@torch.no_grad()
def estimate_w_avg(init: dict, state: dict, n: int = 4096, seed: int = 0) -> torch.Tensor:
    """Mean of mapping(z) over ``n`` seeded z (rosinality ``mean_latent``), for files without latent_avg."""
    from networks.stylegan2 import MappingNetwork

    mapping = MappingNetwork(
        z_dim=init["z_dim"],
        c_dim=0,
        w_dim=init["w_dim"],
        num_ws=None,
        w_avg_beta=None,
        **{k: v for k, v in init["mapping_kwargs"].items() if k != "w_avg_beta"},
    )
    mapping.load_state_dict({k[len("mapping.") :]: v for k, v in state.items() if k.startswith("mapping.fc")})
    z = torch.randn([n, init["z_dim"]], generator=torch.Generator().manual_seed(seed))
    log.info("no latent_avg in the file: estimating w_avg from %d samples (seed %d)", n, seed)
    return mapping(z, None).mean(0)


def convert_discriminator(sd: dict, source: str) -> dict:
    """rosinality ``Discriminator`` state dict → Discriminator entry (sizes from shapes)."""
    what = "rosinality discriminator"
    n_blocks = len([k for k in sd if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", k)])
    R = 4 * 2**n_blocks
    final_conv = take(sd, "final_conv.0.weight", source, what)
    channels = {4: int(final_conv.shape[0])}
    for j in range(1, n_blocks + 1):
        channels[R // 2 ** (j - 1)] = int(sd[f"convs.{j}.conv1.0.weight"].shape[0])
    channel_base, channel_max = fit_channels(channels, source)
    init = dict(
        c_dim=0,
        img_resolution=R,
        img_channels=int(take(sd, "convs.0.0.weight", source, what).shape[1]),
        architecture="resnet",
        channel_base=channel_base,
        channel_max=channel_max,
        num_fp16_res=0,
        conv_clamp=None,
        epilogue_kwargs=dict(mbstd_group_size=4, mbstd_num_channels=int(final_conv.shape[1] - channels[4])),
    )
    names = {"convs.0.0.weight": f"b{R}.fromrgb.weight", "convs.0.1.bias": f"b{R}.fromrgb.bias"}
    for j in range(1, n_blocks + 1):
        r = R // 2 ** (j - 1)
        names.update(
            {
                f"convs.{j}.conv1.0.weight": f"b{r}.conv0.weight",
                f"convs.{j}.conv1.1.bias": f"b{r}.conv0.bias",
                f"convs.{j}.conv2.1.weight": f"b{r}.conv1.weight",
                f"convs.{j}.conv2.2.bias": f"b{r}.conv1.bias",
                f"convs.{j}.skip.1.weight": f"b{r}.skip.weight",
            }
        )
    names.update(
        {
            "final_conv.0.weight": "b4.conv.weight",
            "final_conv.1.bias": "b4.conv.bias",
            "final_linear.0.weight": "b4.fc.weight",
            "final_linear.0.bias": "b4.fc.bias",
            "final_linear.1.weight": "b4.out.weight",
            "final_linear.1.bias": "b4.out.bias",
        }
    )
    out = {ours: as_tensor(take(sd, theirs, source, what)) for theirs, ours in names.items()}
    _check_consumed(sd, set(names), source, what)
    return entry(DISCRIMINATOR, init, out, defaults=FILTER_KEYS)


def convert_rosinality(ckpt: dict, source: str) -> dict:
    """``{'networks': {G, D, G_ema}, 'meta'}`` from a rosinality checkpoint dict."""
    latent_avg = ckpt.get("latent_avg")
    nets = {}
    for theirs, ours in (("g", "G"), ("g_ema", "G_ema")):
        if isinstance(ckpt.get(theirs), dict):
            nets[ours] = convert_generator(ckpt[theirs], latent_avg, f"{source} [{theirs}]")
    if isinstance(ckpt.get("d"), dict):
        nets["D"] = convert_discriminator(ckpt["d"], f"{source} [d]")
    if not nets:
        raise ValueError(f"{source}: rosinality checkpoint without g, g_ema or d state dicts")
    meta = {"format": "rosinality", "w_avg": "latent_avg" if latent_avg is not None else "estimated"}
    if isinstance(ckpt.get("ada_aug_p"), int | float):
        meta["augment_p"] = float(ckpt["ada_aug_p"])
    return {"networks": nets, "meta": meta}


# ----------------------------------------------------------------------------------------------------------
# Inverse mapping (writes rosinality state dicts from our networks; used to test the converter both ways).


def export_generator(G) -> dict:
    """Our Generator (skip, unconditional) → rosinality ``Generator`` state dict."""
    sd = G.state_dict()
    kw = G.init_kwargs
    if kw["c_dim"] or kw["synthesis_kwargs"].get("architecture", "skip") != "skip":
        raise ValueError("rosinality layout holds only unconditional 'skip' generators")
    out = {}
    for i in range(kw["mapping_kwargs"].get("num_layers", 8)):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"].clone()
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"].clone()
    out["input.input"] = sd["synthesis.b4.const"][None].clone()

    def layer(ours, theirs, torgb=False):
        out[f"{theirs}.conv.weight"] = sd[f"{ours}.weight"][None].clone()
        out[f"{theirs}.conv.modulation.weight"] = sd[f"{ours}.affine.weight"].clone()
        out[f"{theirs}.conv.modulation.bias"] = sd[f"{ours}.affine.bias"].clone()
        if torgb:
            out[f"{theirs}.bias"] = sd[f"{ours}.bias"].reshape(1, -1, 1, 1).clone()
        else:
            out[f"{theirs}.activate.bias"] = sd[f"{ours}.bias"].clone()
            out[f"{theirs}.noise.weight"] = sd[f"{ours}.noise_strength"].reshape(1).clone()

    layer("synthesis.b4.conv1", "conv1")
    layer("synthesis.b4.torgb", "to_rgb1", torgb=True)
    out["noises.noise_0"] = sd["synthesis.b4.conv1.noise_const"][None, None].clone()
    for j, r in enumerate(2**i for i in range(3, res_log2(kw["img_resolution"]) + 1)):
        k = res_log2(r)
        layer(f"synthesis.b{r}.conv0", f"convs.{2 * j}")
        layer(f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}")
        layer(f"synthesis.b{r}.torgb", f"to_rgbs.{j}", torgb=True)
        out[f"noises.noise_{2 * k - 5}"] = sd[f"synthesis.b{r}.conv0.noise_const"][None, None].clone()
        out[f"noises.noise_{2 * k - 4}"] = sd[f"synthesis.b{r}.conv1.noise_const"][None, None].clone()
    return out


def export_discriminator(D) -> dict:
    """Our Discriminator (resnet, unconditional) → rosinality ``Discriminator`` state dict."""
    kw = D.init_kwargs
    if kw["c_dim"] or kw.get("architecture", "resnet") != "resnet":
        raise ValueError("rosinality layout holds only unconditional 'resnet' discriminators")
    sd = D.state_dict()
    R = kw["img_resolution"]
    out = {"convs.0.0.weight": sd[f"b{R}.fromrgb.weight"], "convs.0.1.bias": sd[f"b{R}.fromrgb.bias"]}
    for j, r in enumerate((2**i for i in range(res_log2(R), 2, -1)), start=1):
        out[f"convs.{j}.conv1.0.weight"] = sd[f"b{r}.conv0.weight"]
        out[f"convs.{j}.conv1.1.bias"] = sd[f"b{r}.conv0.bias"]
        out[f"convs.{j}.conv2.1.weight"] = sd[f"b{r}.conv1.weight"]
        out[f"convs.{j}.conv2.2.bias"] = sd[f"b{r}.conv1.bias"]
        out[f"convs.{j}.skip.1.weight"] = sd[f"b{r}.skip.weight"]
        out[f"convs.{j}.conv2.0.kernel"] = sd[f"b{r}.resample_filter"]
    for theirs, ours in (
        ("final_conv.0", "b4.conv"),
        ("final_linear.0", "b4.fc"),
        ("final_linear.1", "b4.out"),
    ):
        out[f"{theirs}.weight"] = sd[f"{ours}.weight"]
    out["final_conv.1.bias"] = sd["b4.conv.bias"]
    out["final_linear.0.bias"] = sd["b4.fc.bias"]
    out["final_linear.1.bias"] = sd["b4.out.bias"]
    return {k: v.clone() for k, v in out.items()}


def export_rosinality(G, D, G_ema) -> dict:
    """A rosinality checkpoint dict ``{'g', 'd', 'g_ema', 'latent_avg'}`` (``latent_avg`` from G_ema)."""
    return {
        "g": export_generator(G),
        "d": export_discriminator(D),
        "g_ema": export_generator(G_ema),
        "latent_avg": G_ema.state_dict()["mapping.w_avg"].clone(),
    }
