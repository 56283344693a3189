"""Hammer / genforce checkpoints: ``models`` → ``generator_smooth`` (EMA), ``generator``, ``discriminator``.

Hammer's ``StyleGAN2Generator`` / ``StyleGAN2Discriminator`` compute what NVIDIA's networks compute (same ops,
weight storage and TF-derived orientation); only names differ:

Generator (Hammer → ours), b = log₂r − 2:

- ``mapping.dense{i}`` / ``mapping.embedding`` / ``w_avg`` → ``mapping.fc{i}`` / ``mapping.embed`` /
  ``mapping.w_avg``; ``synthesis.early_layer.const`` [1,C,4,4] → ``synthesis.b4.const``;
- ``synthesis.layer0`` → ``b4.conv1``; ``layer{2b-1}``, ``layer{2b}`` → ``b{r}.conv0``, ``b{r}.conv1``;
  ``output{b}`` → ``b{r}.torgb``; ``residual{b}`` → ``b{r}.skip``;
- inside a layer: ``style`` → ``affine``, ``noise`` [1,1,r,r] → ``noise_const`` [r,r].

Discriminator, b = log₂R − log₂r: ``input{b}`` → ``b{r}.fromrgb``; ``layer{2b}``, ``layer{2b+1}``,
``residual{b}`` → ``b{r}.conv0``, ``.conv1``, ``.skip``; the last pair → ``b4.conv``, ``b4.fc``;
``output`` → ``b4.out``; ``embedding``, ``mapping{i}`` → ``mapping.embed``, ``mapping.fc{i}``.

Sizes come from shapes; values shapes cannot give (lr multipliers, clamp, mbstd group) from
``model_kwargs_init`` when the file has it, else Hammer's defaults. Options NVIDIA's networks do not have
(``final_tanh``, ``init_res`` ≠ 4, no const input, no demodulation, channel noise, ``repeat_w=False``,
wscale off) are refused with the option's name.

VolumeGAN generators and discriminators (recognised by ``model_type`` or their tensors) go to
:func:`convert_volumegan_generator` / :func:`convert_volumegan_discriminator`.
"""

from __future__ import annotations

import math
import re

from networks.volumegan import BBOX as _VG_BBOX

from .common import DISCRIMINATOR, FILTER_KEYS, GENERATOR, as_tensor, entry, fit_channels, res_log2, take

_G_REQUIRED = {
    "init_res": 4,
    "final_tanh": False,
    "const_input": True,
    "demodulate": True,
    "noise_type": "spatial",
    "repeat_w": True,
    "normalize_z": True,
    "use_wscale": True,
    "mapping_use_wscale": True,
    "wscale_gain": 1.0,
    "mapping_wscale_gain": 1.0,
    "lr_mul": 1.0,
    "normalize_embedding": True,
    "normalize_embedding_latent": False,
    "embedding_lr_mul": 1.0,
}
_D_REQUIRED = {
    "init_res": 4,
    "use_wscale": True,
    "wscale_gain": 1.0,
    "lr_mul": 1.0,
    "normalize_embedding": True,
    "embedding_lr_mul": 1.0,
}


def _check_options(kwargs: dict, required: dict, source: str, name: str) -> None:
    for key, value in required.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"{source}: {name} option {key}={kwargs[key]!r} is not supported (needs {value!r})")


def _renamed(sd: dict, names: dict, source: str, what: str, reshape: dict | None = None) -> dict:
    out = {}
    for theirs, ours in names.items():
        value = as_tensor(take(sd, theirs, source, what))
        out[ours] = value.reshape(reshape[ours]) if reshape and ours in reshape else value
    extra = sorted(k for k in sd if k not in names and not k.endswith("filter"))
    if extra:
        raise ValueError(f"{source}: {what} has tensors this converter does not know: {extra[:8]}")
    return out


def convert_generator(sd: dict, kwargs: dict, source: str) -> dict:
    """Hammer ``StyleGAN2Generator`` state dict (+ its init kwargs) → Generator entry."""
    what = "Hammer generator"
    _check_options(kwargs, _G_REQUIRED, source, "StyleGAN2Generator")
    if "synthesis.early_layer.const" not in sd or "mapping.dense0.weight" not in sd:
        raise ValueError(
            f"{source}: not a Hammer StyleGAN2 generator (no synthesis.early_layer.const / "
            f"mapping.dense0.weight; model_type {kwargs.get('model_type')!r})"
        )
    n_map = len([k for k in sd if re.fullmatch(r"mapping\.dense\d+\.weight", k)])
    n_layers = len([k for k in sd if re.fullmatch(r"synthesis\.layer\d+\.weight", k)])
    R = 2 ** ((n_layers + 1) // 2 + 1)
    w_avg = take(sd, "w_avg", source, what)
    w_dim = int(sd["synthesis.layer0.style.weight"].shape[1])
    if tuple(w_avg.shape) != (w_dim,):
        raise ValueError(f"{source}: Hammer w_avg has shape {tuple(w_avg.shape)}, expected ({w_dim},) (repeat_w)")
    embed = sd.get("mapping.embedding.weight")
    c_dim, embed_dim = (int(embed.shape[1]), int(embed.shape[0])) if embed is not None else (0, 0)
    dense0 = sd["mapping.dense0.weight"]
    channels = {4: int(sd["synthesis.early_layer.const"].shape[1])}
    channels.update({2**k: int(sd[f"synthesis.layer{2 * k - 4}.weight"].shape[0]) for k in range(3, res_log2(R) + 1)})
    channel_base, channel_max = fit_channels(channels, source, (int(kwargs.get("fmaps_base", 32768)),))
    outputs = [b for b in range(res_log2(R) - 1) if f"synthesis.output{b}.weight" in sd]
    residual = any(k.startswith("synthesis.residual") for k in sd)
    architecture = "resnet" if residual else ("skip" if len(outputs) == res_log2(R) - 1 else "orig")
    init = dict(
        z_dim=int(dense0.shape[1] - embed_dim),
        c_dim=c_dim,
        w_dim=w_dim,
        img_resolution=R,
        img_channels=int(sd[f"synthesis.output{outputs[-1]}.weight"].shape[0]),
        mapping_kwargs=dict(
            num_layers=n_map,
            embed_features=embed_dim if c_dim else None,
            layer_features=int(dense0.shape[0]) if n_map > 1 else None,
            lr_multiplier=float(kwargs.get("mapping_lr_mul", 0.01)),
        ),
        synthesis_kwargs=dict(
            channel_base=channel_base,
            channel_max=channel_max,
            num_fp16_res=0,
            conv_clamp=kwargs.get("conv_clamp"),
            architecture=architecture,
            resample_filter=list(kwargs.get("filter_kernel", (1, 3, 3, 1))),
        ),
    )
    names = {"w_avg": "mapping.w_avg", "synthesis.early_layer.const": "synthesis.b4.const"}
    reshape = {"synthesis.b4.const": (channels[4], 4, 4)}
    for i in range(n_map):
        names.update({f"mapping.dense{i}.{p}": f"mapping.fc{i}.{p}" for p in ("weight", "bias")})
    if c_dim:
        names.update({f"mapping.embedding.{p}": f"mapping.embed.{p}" for p in ("weight", "bias")})

    def layer(theirs, ours, noise=True):
        for p in ("weight", "bias"):
            names[f"synthesis.{theirs}.{p}"] = f"synthesis.{ours}.{p}"
            names[f"synthesis.{theirs}.style.{p}"] = f"synthesis.{ours}.affine.{p}"
        if noise:
            names[f"synthesis.{theirs}.noise_strength"] = f"synthesis.{ours}.noise_strength"
            names[f"synthesis.{theirs}.noise"] = f"synthesis.{ours}.noise_const"
            r = int(re.match(r"b(\d+)", ours).group(1))
            reshape[f"synthesis.{ours}.noise_const"] = (r, r)

    layer("layer0", "b4.conv1")
    for b in range(res_log2(R) - 1):
        r = 2 ** (b + 2)
        if b:
            layer(f"layer{2 * b - 1}", f"b{r}.conv0")
            layer(f"layer{2 * b}", f"b{r}.conv1")
            if residual:
                names[f"synthesis.residual{b}.weight"] = f"synthesis.b{r}.skip.weight"
        if b in outputs:
            layer(f"output{b}", f"b{r}.torgb", noise=False)
    return entry(GENERATOR, init, _renamed(sd, names, source, what, reshape), defaults=FILTER_KEYS)


def convert_discriminator(sd: dict, kwargs: dict, source: str) -> dict:
    """Hammer ``StyleGAN2Discriminator`` state dict (+ its init kwargs) → Discriminator entry."""
    what = "Hammer discriminator"
    _check_options(kwargs, _D_REQUIRED, source, "StyleGAN2Discriminator")
    if "output.weight" not in sd or "input0.weight" not in sd:
        raise ValueError(f"{source}: not a Hammer StyleGAN2 discriminator (no input0 / output tensors)")
    n_blocks = len([k for k in sd if re.fullmatch(r"layer\d+\.weight", k)]) // 2 - 1
    R = 4 * 2**n_blocks
    last = n_blocks  # block index of the 4×4 epilogue
    embed = sd.get("embedding.weight")
    c_dim = int(embed.shape[1]) if embed is not None else 0
    if kwargs.get("label_dim", c_dim) and embed is None:
        raise ValueError(f"{source}: Hammer D conditioned without an embedding is not supported")
    n_map = len([k for k in sd if re.fullmatch(r"mapping\d+\.weight", k)])
    conv4 = sd[f"layer{2 * last}.weight"]
    channels = {4: int(conv4.shape[0])}
    channels.update({R // 2**b: int(sd[f"layer{2 * b}.weight"].shape[0]) for b in range(n_blocks)})
    channel_base, channel_max = fit_channels(channels, source, (int(kwargs.get("fmaps_base", 32768)),))
    residual = any(k.startswith("residual") for k in sd)
    skip = f"input{last}.weight" in sd
    architecture = "resnet" if residual else ("skip" if skip else "orig")
    init = dict(
        c_dim=c_dim,
        img_resolution=R,
        img_channels=int(sd["input0.weight"].shape[1]),
        architecture=architecture,
        channel_base=channel_base,
        channel_max=channel_max,
        num_fp16_res=0,
        conv_clamp=kwargs.get("conv_clamp"),
        cmap_dim=int(embed.shape[0]) if c_dim else None,
        block_kwargs=dict(resample_filter=list(kwargs.get("filter_kernel", (1, 3, 3, 1)))),
        mapping_kwargs=dict(
            num_layers=n_map,
            layer_features=int(sd["mapping0.weight"].shape[0]) if n_map > 1 else None,
            lr_multiplier=float(kwargs.get("mapping_lr_mul", 0.1)),
        ),
        epilogue_kwargs=dict(
            mbstd_group_size=int(kwargs.get("mbstd_groups", 4)),
            mbstd_num_channels=int(conv4.shape[1] - channels[4]),
        ),
    )
    names = {}
    for b in range(n_blocks + 1):
        r = R // 2**b
        if f"input{b}.weight" in sd:
            names.update({f"input{b}.{p}": f"b{r}.fromrgb.{p}" for p in ("weight", "bias")})
        if b < n_blocks:
            names.update({f"layer{2 * b}.{p}": f"b{r}.conv0.{p}" for p in ("weight", "bias")})
            names.update({f"layer{2 * b + 1}.{p}": f"b{r}.conv1.{p}" for p in ("weight", "bias")})
            if residual:
                names[f"residual{b}.weight"] = f"b{r}.skip.weight"
    names.update({f"layer{2 * last}.{p}": f"b4.conv.{p}" for p in ("weight", "bias")})
    names.update({f"layer{2 * last + 1}.{p}": f"b4.fc.{p}" for p in ("weight", "bias")})
    names.update({f"output.{p}": f"b4.out.{p}" for p in ("weight", "bias")})
    if c_dim:
        names.update({f"embedding.{p}": f"mapping.embed.{p}" for p in ("weight", "bias")})
        for i in range(n_map):
            names.update({f"mapping{i}.{p}": f"mapping.fc{i}.{p}" for p in ("weight", "bias")})
    return entry(DISCRIMINATOR, init, _renamed(sd, names, source, what), defaults=FILTER_KEYS)


def convert_hammer(ckpt: dict, source: str) -> dict:
    """``{'networks': {G, D, G_ema}, 'meta'}`` from a Hammer checkpoint dict (``models`` + kwargs)."""
    models = ckpt["models"]
    init_kwargs = ckpt.get("model_kwargs_init") if isinstance(ckpt.get("model_kwargs_init"), dict) else {}
    nets = {}
    for theirs, ours, convert in (
        ("generator", "G", convert_generator),
        ("generator_smooth", "G_ema", convert_generator),
        ("discriminator", "D", convert_discriminator),
    ):
        if isinstance(models.get(theirs), dict):
            kwargs = init_kwargs.get(theirs) if isinstance(init_kwargs.get(theirs), dict) else {}
            if is_volumegan(models[theirs], kwargs):
                convert, kwargs = _volumegan_converter(ours, kwargs, init_kwargs)
            nets[ours] = convert(models[theirs], kwargs, f"{source} [models.{theirs}]")
    if not nets:
        raise ValueError(
            f"{source}: Hammer checkpoint without generator / generator_smooth / discriminator "
            f"(models: {sorted(models)})"
        )
    meta = {"format": "hammer"}
    running = ckpt.get("running_metadata")
    if isinstance(running, dict):
        meta.update({k: running[k] for k in ("iter", "seen_img") if isinstance(running.get(k), int)})
    return {"networks": nets, "meta": meta}


# ----------------------------------------------------------------------------------------------------------
# Inverse mapping (writes a Hammer checkpoint from our networks; used to test the converter both ways).


def export_generator(G) -> tuple[dict, dict]:
    """Our Generator → (Hammer ``StyleGAN2Generator`` state dict, its init kwargs)."""
    sd = G.state_dict()
    kw = G.init_kwargs
    mk, sk = kw["mapping_kwargs"], kw["synthesis_kwargs"]
    R = kw["img_resolution"]
    out = {"w_avg": sd["mapping.w_avg"], "synthesis.early_layer.const": sd["synthesis.b4.const"][None]}
    for key, value in sd.items():
        m = re.fullmatch(r"mapping\.(fc|embed)(\d*)\.(weight|bias)", key)
        if m:
            out[f"mapping.{'dense' if m.group(1) == 'fc' else 'embedding'}{m.group(2)}.{m.group(3)}"] = value
        m = re.fullmatch(r"synthesis\.b(\d+)\.(conv0|conv1|torgb|skip)\.(.*)", key)
        if not m or m.group(3) == "resample_filter":
            continue
        r, layer, param = int(m.group(1)), m.group(2), m.group(3)
        b = res_log2(r) - 2
        name = {
            "conv0": f"layer{2 * b - 1}",
            "conv1": f"layer{2 * b}",
            "torgb": f"output{b}",
            "skip": f"residual{b}",
        }
        param = {"affine.weight": "style.weight", "affine.bias": "style.bias", "noise_const": "noise"}.get(param, param)
        out[f"synthesis.{name[layer]}.{param}"] = value[None, None] if param == "noise" else value
    kwargs = {
        "model_type": "StyleGAN2Generator",
        "resolution": R,
        "z_dim": kw["z_dim"],
        "w_dim": kw["w_dim"],
        "mapping_layers": mk.get("num_layers", 8),
        "mapping_lr_mul": mk.get("lr_multiplier", 0.01),
        "label_dim": kw["c_dim"],
        "architecture": sk.get("architecture", "skip"),
        "conv_clamp": sk.get("conv_clamp"),
    }
    return {k: v.clone() for k, v in out.items()}, kwargs


def export_discriminator(D) -> tuple[dict, dict]:
    """Our Discriminator → (Hammer ``StyleGAN2Discriminator`` state dict, its init kwargs)."""
    sd = D.state_dict()
    kw = D.init_kwargs
    R = kw["img_resolution"]
    last = res_log2(R) - 2
    out = {}
    for key, value in sd.items():
        m = re.fullmatch(r"b(\d+)\.(fromrgb|conv0|conv1|skip|conv|fc|out)\.(weight|bias)", key)
        if m:
            r, layer, param = int(m.group(1)), m.group(2), m.group(3)
            b = res_log2(R) - res_log2(r)
            name = {
                "fromrgb": f"input{b}",
                "conv0": f"layer{2 * b}",
                "conv1": f"layer{2 * b + 1}",
                "skip": f"residual{b}",
                "conv": f"layer{2 * last}",
                "fc": f"layer{2 * last + 1}",
                "out": "output",
            }
            out[f"{name[layer]}.{param}"] = value
        m = re.fullmatch(r"mapping\.(fc|embed)(\d*)\.(weight|bias)", key)
        if m:
            out[f"{'mapping' if m.group(1) == 'fc' else 'embedding'}{m.group(2)}.{m.group(3)}"] = value
    mk = kw.get("mapping_kwargs") or {}
    kwargs = {
        "model_type": "StyleGAN2Discriminator",
        "resolution": R,
        "label_dim": kw["c_dim"],
        "architecture": kw.get("architecture", "resnet"),
        "mbstd_groups": (kw.get("epilogue_kwargs") or {}).get("mbstd_group_size", 4),
        "mapping_layers": mk.get("num_layers", 8) if kw["c_dim"] else 0,
        "mapping_lr_mul": mk.get("lr_multiplier", 0.01),
        "conv_clamp": kw.get("conv_clamp"),
    }
    return {k: v.clone() for k, v in out.items()}, kwargs


def export_hammer(G, D, G_ema) -> dict:
    """A Hammer checkpoint dict: ``models`` {generator, generator_smooth, discriminator} + init kwargs."""
    models, kwargs = {}, {}
    for name, net, export in (
        ("generator", G, export_generator),
        ("generator_smooth", G_ema, export_generator),
        ("discriminator", D, export_discriminator),
    ):
        models[name], kwargs[name] = export(net)
    return {"models": models, "model_kwargs_init": kwargs, "running_metadata": {"iter": 0, "seen_img": 0}}


# ----------------------------------------------------------------------------------------------------------
# VolumeGAN (genforce/volumegan models/volumegan_generator.py, models/volumegan_discriminator.py).

VOLUMEGAN_GENERATOR = "networks.volumegan.VolumeGANGenerator"
VOLUMEGAN_DISCRIMINATOR = "networks.volumegan.VolumeGANDiscriminator"

_VG_REQUIRED = {
    "final_tanh": False,
    "demodulate": True,
    "noise_type": "spatial",
    "repeat_w": True,
    "normalize_z": True,
    "use_wscale": True,
    "mapping_use_wscale": True,
    "wscale_gain": 1.0,
    "mapping_wscale_gain": 1.0,
    "lr_mul": 1.0,
    "rgb_init_res_out": False,
    "bg_cfg": None,
    "normalize_embedding": True,
    "normalize_embedding_latent": False,
    "embedding_lr_mul": 1.0,
}
_VG_RENDERING = {"clamp_mode": "relu", "white_back": False, "last_back": False, "render_mode": None, "max_depth": None}


def is_volumegan(sd: dict, kwargs: dict) -> bool:
    """True for a Hammer ``VolumeGANGenerator`` / ``VolumeGANDiscriminator`` state dict."""
    if str(kwargs.get("model_type", "")).startswith("VolumeGAN"):
        return True
    return "nerfmlp.fv.const" in sd or ("lod" in sd and "input0.weight" in sd)


def _volumegan_camera(ps: dict, source: str) -> dict:
    dist = {"normal": "gaussian"}.get(ps.get("camera_dist", "gaussian"), ps.get("camera_dist", "gaussian"))
    if dist not in ("gaussian", "uniform"):
        raise ValueError(f"{source}: VolumeGAN ps_cfg camera_dist={ps.get('camera_dist')!r} is not supported")
    return dict(
        yaw_mean=float(ps.get("horizontal_mean", math.pi / 2)),
        yaw_std=float(ps.get("horizontal_stddev", 0.3)),
        pitch_mean=float(ps.get("vertical_mean", math.pi / 2)),
        pitch_std=float(ps.get("vertical_stddev", 0.155)),
        fov_deg=float(ps.get("fov", 12)),
        radius=float(ps.get("radius", 1)),
        dist=dist,
    )


def _volumegan_converter(ours: str, kwargs: dict, init_kwargs: dict):
    """The VolumeGAN converter for network ``ours``; D learns its coarsest level from G's ``nerf_res``."""
    if ours != "D":
        return convert_volumegan_generator, kwargs
    g_kwargs = init_kwargs.get("generator") if isinstance(init_kwargs.get("generator"), dict) else {}
    return convert_volumegan_discriminator, {"lod_resolution": g_kwargs.get("nerf_res", 32), **kwargs}


def convert_volumegan_generator(sd: dict, kwargs: dict, source: str) -> dict:
    """Hammer ``VolumeGANGenerator`` state dict (+ init kwargs) -> :class:`networks.volumegan.VolumeGANGenerator`.

    Names: ``w_avg`` -> ``mapping.w_avg``; ``mapping.dense{i}`` -> ``mapping.fc{i}``; ``nerfmlp.fv.{const,
    layer{i}, mapping_network}`` -> ``synthesis.volume.{const, layer{i}, affine}``; ``nerfmlp.fg_mlps.{i}`` ->
    ``synthesis.mlp.layer{i}`` (``style`` -> ``affine``); ``nerfmlp.fg_density`` / ``fg_color`` ->
    ``synthesis.mlp.density`` / ``feature``; ``synthesis.layer{2b-1}``, ``layer{2b}``, ``output{b}`` ->
    ``synthesis.renderer.b{r}.conv0``, ``conv1``, ``torgb`` (r = nerf_res * 2^b, ``noise`` [1,1,r,r] ->
    ``noise_const`` [r,r]); ``synthesis.lod`` kept. Sampling and camera settings come from ``ps_cfg``, the box
    from ``fv_cfg.bounds``, sizes from shapes. The rendering options the suite does not implement are refused
    with their name.
    """
    what = "Hammer VolumeGAN generator"
    _check_options(kwargs, _VG_REQUIRED, source, "VolumeGANGenerator")
    for cfg in ("hs_cfg", "vr_cfg"):
        _check_options(dict(kwargs.get(cfg) or {}), _VG_RENDERING, source, f"VolumeGANGenerator {cfg}")
    if "nerfmlp.fv.const" not in sd or "mapping.dense0.weight" not in sd:
        raise ValueError(f"{source}: not a Hammer VolumeGAN generator (no nerfmlp.fv.const / mapping.dense0.weight)")
    if any(k.startswith(("synthesis.rgb_init_res", "nerfmlp.bg_")) for k in sd):
        raise ValueError(f"{source}: VolumeGAN options rgb_init_res_out / bg_cfg are not supported")
    n_map = len([k for k in sd if re.fullmatch(r"mapping\.dense\d+\.weight", k)])
    n_fv = len([k for k in sd if re.fullmatch(r"nerfmlp\.fv\.layer\d+\.weight", k)])
    n_mlp = len([k for k in sd if re.fullmatch(r"nerfmlp\.fg_mlps\.\d+\.weight", k)])
    outputs = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"synthesis\.output(\d+)\.weight", k)))
    if not outputs or outputs != list(range(1, len(outputs) + 1)):
        raise ValueError(f"{source}: {what} renderer outputs {outputs}: expected output1 .. outputB")
    const = sd["nerfmlp.fv.const"]
    volume_channels = [int(const.shape[1])] + [int(sd[f"nerfmlp.fv.layer{i}.weight"].shape[0]) for i in range(n_fv)]
    mlp0 = sd["nerfmlp.fg_mlps.0.weight"]
    pe_dims = int(mlp0.shape[1]) - volume_channels[-1]
    if pe_dims < 3 or (pe_dims - 3) % 6:
        raise ValueError(f"{source}: {what} first MLP layer has {int(mlp0.shape[1])} inputs, not volume + 3 + 6F")
    first_noise = sd["synthesis.layer1.noise"]
    nerf_res = int(first_noise.shape[-1]) // 2
    R = nerf_res * 2 ** outputs[-1]
    embed = sd.get("mapping.embedding.weight")
    c_dim, embed_dim = (int(embed.shape[1]), int(embed.shape[0])) if embed is not None else (0, 0)
    dense0 = sd["mapping.dense0.weight"]
    channels = {nerf_res * 2**b: int(sd[f"synthesis.layer{2 * b}.weight"].shape[0]) for b in outputs}
    channel_base, channel_max = fit_channels(channels, source, (int(kwargs.get("fmaps_base", 32768)),))
    ps = dict(kwargs.get("ps_cfg") or {})
    bounds = (dict(kwargs.get("fv_cfg") or {})).get("bounds")
    num_steps = int(ps.get("num_steps", 12))
    init = dict(
        z_dim=int(dense0.shape[1] - embed_dim),
        c_dim=c_dim,
        w_dim=int(sd["nerfmlp.fv.mapping_network.weight"].shape[1]),
        img_resolution=R,
        img_channels=int(sd[f"synthesis.output{outputs[-1]}.weight"].shape[0]),
        nerf_resolution=nerf_res,
        volume_channels=volume_channels,
        volume_init_res=int(const.shape[-1]),
        bbox=[[float(v) for v in row] for row in bounds] if bounds is not None else [list(r) for r in _VG_BBOX],
        pe_freqs=(pe_dims - 3) // 6,
        mlp_layers=n_mlp,
        mlp_hidden=int(mlp0.shape[0]),
        feat_dim=int(sd["nerfmlp.fg_color.weight"].shape[0]),
        num_coarse=num_steps,
        num_fine=num_steps,
        depth_range=[float(ps.get("ray_start", 0.8)), float(ps.get("ray_end", 1.2))],
        camera=_volumegan_camera(ps, source),
        channel_base=channel_base,
        channel_max=channel_max,
        conv_clamp=kwargs.get("conv_clamp"),
        fp16_quirk=False,
        mapping_kwargs=dict(
            num_layers=n_map,
            embed_features=embed_dim if c_dim else None,
            layer_features=int(dense0.shape[0]) if n_map > 1 else None,
            lr_multiplier=float(kwargs.get("mapping_lr_mul", 0.01)),
        ),
    )
    names = {"w_avg": "mapping.w_avg", "synthesis.lod": "synthesis.lod"}
    reshape = {}
    for i in range(n_map):
        names.update({f"mapping.dense{i}.{p}": f"mapping.fc{i}.{p}" for p in ("weight", "bias")})
    if c_dim:
        names.update({f"mapping.embedding.{p}": f"mapping.embed.{p}" for p in ("weight", "bias")})
    names["nerfmlp.fv.const"] = "synthesis.volume.const"
    for p in ("weight", "bias"):
        names[f"nerfmlp.fv.mapping_network.{p}"] = f"synthesis.volume.affine.{p}"
        names[f"nerfmlp.fg_density.{p}"] = "synthesis.mlp.density." + p
        names[f"nerfmlp.fg_color.{p}"] = "synthesis.mlp.feature." + p
        names.update({f"nerfmlp.fv.layer{i}.{p}": f"synthesis.volume.layer{i}.{p}" for i in range(n_fv)})
        for i in range(n_mlp):
            names[f"nerfmlp.fg_mlps.{i}.{p}"] = f"synthesis.mlp.layer{i}.{p}"
            names[f"nerfmlp.fg_mlps.{i}.style.{p}"] = f"synthesis.mlp.layer{i}.affine.{p}"
    for b in outputs:
        r = nerf_res * 2**b
        for theirs, ours, noise in ((2 * b - 1, "conv0", True), (2 * b, "conv1", True), (None, "torgb", False)):
            src = f"synthesis.output{b}" if theirs is None else f"synthesis.layer{theirs}"
            dst = f"synthesis.renderer.b{r}.{ours}"
            for p in ("weight", "bias"):
                names[f"{src}.{p}"] = f"{dst}.{p}"
                names[f"{src}.style.{p}"] = f"{dst}.affine.{p}"
            if noise:
                names[f"{src}.noise_strength"] = f"{dst}.noise_strength"
                names[f"{src}.noise"] = f"{dst}.noise_const"
                reshape[f"{dst}.noise_const"] = (r, r)
    return entry(VOLUMEGAN_GENERATOR, init, _renamed(sd, names, source, what, reshape), defaults=FILTER_KEYS)


def convert_volumegan_discriminator(sd: dict, kwargs: dict, source: str) -> dict:
    """Hammer ``VolumeGANDiscriminator`` -> :class:`networks.volumegan.VolumeGANDiscriminator`.

    ``input0`` -> ``b{R}.fromrgb``, ``input{b}`` -> ``fromrgb{R/2^b}`` for the levels down to ``lod_resolution``
    (``kwargs['lod_resolution']``, default 32 = the released G's NeRF resolution); the deeper ``input{b}`` are
    never used by a residual D and are dropped. Blocks and epilogue as :func:`convert_discriminator`.
    """
    what = "Hammer VolumeGAN discriminator"
    _check_options(kwargs, _D_REQUIRED, source, "VolumeGANDiscriminator")
    if "output.weight" not in sd or "input0.weight" not in sd:
        raise ValueError(f"{source}: not a Hammer VolumeGAN discriminator (no input0 / output tensors)")
    if kwargs.get("label_dim", 0) or "embedding.weight" in sd:
        raise ValueError(f"{source}: conditional VolumeGAN discriminators are not supported")
    n_blocks = len([k for k in sd if re.fullmatch(r"layer\d+\.weight", k)]) // 2 - 1
    R = 4 * 2**n_blocks
    lod_res = int(kwargs.get("lod_resolution", 32))
    max_lod = res_log2(R) - res_log2(lod_res)
    conv4 = sd[f"layer{2 * n_blocks}.weight"]
    channels = {4: int(conv4.shape[0])}
    channels.update({R // 2**b: int(sd[f"layer{2 * b}.weight"].shape[0]) for b in range(n_blocks)})
    channel_base, channel_max = fit_channels(channels, source, (int(kwargs.get("fmaps_base", 32768)),))
    residual = any(k.startswith("residual") for k in sd)
    architecture = kwargs.get("architecture", "resnet" if residual else "orig")
    init = dict(
        c_dim=0,
        img_resolution=R,
        img_channels=int(sd["input0.weight"].shape[1]),
        lod_resolution=lod_res,
        architecture=architecture,
        channel_base=channel_base,
        channel_max=channel_max,
        conv_clamp=kwargs.get("conv_clamp"),
        fp16_quirk=False,
        mbstd_group_size=int(kwargs.get("mbstd_groups", 4)),
        mbstd_num_channels=int(conv4.shape[1] - channels[4]),
        resample_filter=list(kwargs.get("filter_kernel", (1, 3, 3, 1))),
    )
    names = {"lod": "lod", "input0.weight": f"b{R}.fromrgb.weight", "input0.bias": f"b{R}.fromrgb.bias"}
    unused = []
    for b in range(1, n_blocks + 1):
        if b <= max_lod:
            names.update({f"input{b}.{p}": f"fromrgb{R // 2**b}.{p}" for p in ("weight", "bias")})
        else:
            unused += [f"input{b}.weight", f"input{b}.bias"]
    for b in range(n_blocks):
        r = R // 2**b
        names.update({f"layer{2 * b}.{p}": f"b{r}.conv0.{p}" for p in ("weight", "bias")})
        names.update({f"layer{2 * b + 1}.{p}": f"b{r}.conv1.{p}" for p in ("weight", "bias")})
        if residual:
            names[f"residual{b}.weight"] = f"b{r}.skip.weight"
    names.update({f"layer{2 * n_blocks}.{p}": f"b4.conv.{p}" for p in ("weight", "bias")})
    names.update({f"layer{2 * n_blocks + 1}.{p}": f"b4.fc.{p}" for p in ("weight", "bias")})
    names.update({f"output.{p}": f"b4.out.{p}" for p in ("weight", "bias")})
    sd = {k: v for k, v in sd.items() if k not in unused}
    return entry(VOLUMEGAN_DISCRIMINATOR, init, _renamed(sd, names, source, what), defaults=FILTER_KEYS)
