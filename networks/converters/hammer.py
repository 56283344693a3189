"""Hammer / genforce checkpoints: ``models`` → ``generator_smooth`` (EMA), ``generator``, ``discriminator``.

Spec ``stylegan2_ada.md`` §11.3. Hammer's ``StyleGAN2Generator`` / ``StyleGAN2Discriminator`` compute what
NVIDIA's networks compute (same ops, weight storage and TF-derived orientation); only names differ:

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
"""

from __future__ import annotations

import re

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
