"""Original TensorFlow StyleGAN2 pickles ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network`` states.

Key mapping as NVlabs stylegan2-ada-pytorch ``legacy.py``: FC weights transposed, conv weights HWIO → OIHW,
``Conv0_up`` and G ``Skip`` weights spatially flipped, ``affine.bias = mod_bias + 1``, noise buffers
``noise{2·log₂r − 5}`` (conv0) / ``noise{2·log₂r − 4}`` (conv1), ``w_avg ← dlatent_avg``.
Shapes give every size (resolution, channels, z/w dims, mapping depth, architecture); ``static_kwargs``
only give what shapes cannot (activation, lr multipliers, filter, fp16 policy).

Suite choice [D]: a D without ``mbstd_group_size`` in its kwargs gets the TF ``D_stylegan2`` default 4
(``legacy.py`` leaves it None, i.e. one group over the whole batch).
"""

from __future__ import annotations

import logging
import re

import numpy as np
import torch

from .common import DISCRIMINATOR, FILTER_KEYS, GENERATOR, as_tensor, entry, fit_channels, res_log2, take
from .safe_pickle import TFNetwork, plain

log = logging.getLogger(__name__)

_G_KWARGS = {
    "mapping_nonlinearity",
    "mapping_lrmul",
    "w_avg_beta",
    "dlatent_avg_beta",
    "nonlinearity",
    "resample_kernel",
    "num_fp16_res",
    "conv_clamp",
    "fmap_base",
}
_D_KWARGS = {
    "nonlinearity",
    "resample_kernel",
    "num_fp16_res",
    "conv_clamp",
    "mapping_lrmul",
    "mbstd_group_size",
    "fmap_base",
}


def tf_params(state: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """All variables of a TF network state and its components, keyed ``component/…/name``."""
    out = {}
    for name, value in state.get("variables") or []:
        out[prefix + name] = plain(value)
    for name, comp in (state.get("components") or {}).items():
        comp_state = comp.state if isinstance(comp, TFNetwork) else comp
        out.update(tf_params(comp_state, f"{prefix}{name}/"))
    return out


def _hwio(x) -> torch.Tensor:
    return as_tensor(np.asarray(x).transpose(3, 2, 0, 1))


def _fc(x) -> torch.Tensor:
    return as_tensor(np.asarray(x).transpose())


def _flip_hwio(x) -> torch.Tensor:
    return as_tensor(np.asarray(x)[::-1, ::-1].transpose(3, 2, 0, 1))


def _static(state: dict, known: set, source: str) -> dict:
    kwargs = plain(dict(state.get("static_kwargs") or {}))
    ignored = sorted(set(kwargs) - known)
    if ignored:
        log.info("%s: %s: static kwargs %s are implied by shapes or unused", source, state.get("name"), ignored)
    return kwargs


def _check_version(state: dict, source: str) -> None:
    if int(state.get("version", 0)) < 4:
        raise ValueError(
            f"{source}: TensorFlow network '{state.get('name')}' has pickle version "
            f"{state.get('version')}, expected >= 4 (StyleGAN2)"
        )


def convert_tf_generator(state: dict, source: str) -> dict:
    """TF ``G_main`` network state → Generator entry."""
    _check_version(state, source)
    kw = _static(state, _G_KWARGS, source)
    p = tf_params(state)
    what = "TensorFlow generator"
    if "mapping/LabelConcat/weight" in p:
        raise ValueError(f"{source}: conditional TF StyleGAN2 (mapping/LabelConcat) is not supported")
    for name in list(p):  # 'orig' architecture stores ToRGB as ToRGB_lod{k}
        m = re.fullmatch(r"synthesis/ToRGB_lod(\d+)/(.*)", name)
        if m:
            res = _max_res(p, r"synthesis/(\d+)x\d+/", source) // 2 ** int(m.group(1))
            p[f"synthesis/{res}x{res}/ToRGB/{m.group(2)}"] = p.pop(name)
    R = _max_res(p, r"synthesis/(\d+)x\d+/", source)
    resolutions = [2**i for i in range(2, res_log2(R) + 1)]
    n_map = len([k for k in p if re.fullmatch(r"mapping/Dense\d+/weight", k)])
    dense0 = take(p, "mapping/Dense0/weight", source, what)
    embed = p.get("mapping/LabelEmbed/weight")
    c_dim, embed_dim = embed.shape if embed is not None else (0, 0)
    w_dim = take(p, "synthesis/4x4/Conv/mod_weight", source, what).shape[0]
    img_channels = take(p, f"synthesis/{R}x{R}/ToRGB/weight", source, what).shape[-1]
    channels = {4: take(p, "synthesis/4x4/Const/const", source, what).shape[1]}
    channels.update({r: take(p, f"synthesis/{r}x{r}/Conv1/weight", source, what).shape[3] for r in resolutions[1:]})
    channel_base, channel_max = fit_channels(channels, source, (2 * int(kw.get("fmap_base", 16384)), 32768))
    if R > 4 and f"synthesis/{R}x{R}/Skip/weight" in p:
        architecture = "resnet"
    elif all(f"synthesis/{r}x{r}/ToRGB/weight" in p for r in resolutions):
        architecture = "skip"
    else:
        architecture = "orig"
    use_noise = "synthesis/4x4/Conv/noise_strength" in p
    beta = kw.get("w_avg_beta", kw.get("dlatent_avg_beta", 0.995))
    mapping_kwargs = dict(
        num_layers=n_map,
        embed_features=int(embed_dim) if c_dim else None,
        layer_features=int(dense0.shape[1]) if n_map > 1 else None,
        activation=kw.get("mapping_nonlinearity", "lrelu"),
        lr_multiplier=float(kw.get("mapping_lrmul", 0.01)),
        w_avg_beta=1.0 if beta is None else float(beta),
    )
    synthesis_kwargs = dict(
        channel_base=channel_base,
        channel_max=channel_max,
        num_fp16_res=int(kw.get("num_fp16_res", 0)),
        conv_clamp=kw.get("conv_clamp"),
        architecture=architecture,
        resample_filter=list(kw.get("resample_kernel", [1, 3, 3, 1])),
        use_noise=use_noise,
        activation=kw.get("nonlinearity", "lrelu"),
    )
    init = dict(
        z_dim=int(dense0.shape[0] - embed_dim),
        c_dim=int(c_dim),
        w_dim=int(w_dim),
        img_resolution=R,
        img_channels=int(img_channels),
        mapping_kwargs=mapping_kwargs,
        synthesis_kwargs=synthesis_kwargs,
    )

    def t(key):
        return take(p, key, source, what)

    sd = {"mapping.w_avg": as_tensor(t("dlatent_avg"))}
    if c_dim:
        sd["mapping.embed.weight"] = _fc(t("mapping/LabelEmbed/weight"))
        sd["mapping.embed.bias"] = as_tensor(t("mapping/LabelEmbed/bias"))
    for i in range(n_map):
        sd[f"mapping.fc{i}.weight"] = _fc(t(f"mapping/Dense{i}/weight"))
        sd[f"mapping.fc{i}.bias"] = as_tensor(t(f"mapping/Dense{i}/bias"))
    sd["synthesis.b4.const"] = as_tensor(t("synthesis/4x4/Const/const")[0])

    def layer(ours: str, tf: str, flip: bool = False, noise: int | None = None):
        sd[f"{ours}.weight"] = (_flip_hwio if flip else _hwio)(t(f"{tf}/weight"))
        sd[f"{ours}.bias"] = as_tensor(t(f"{tf}/bias"))
        sd[f"{ours}.affine.weight"] = _fc(t(f"{tf}/mod_weight"))
        sd[f"{ours}.affine.bias"] = as_tensor(np.asarray(t(f"{tf}/mod_bias")) + 1)
        if noise is not None and use_noise:
            sd[f"{ours}.noise_const"] = as_tensor(t(f"synthesis/noise{noise}")[0, 0])
            sd[f"{ours}.noise_strength"] = as_tensor(t(f"{tf}/noise_strength"))

    layer("synthesis.b4.conv1", "synthesis/4x4/Conv", noise=0)
    for r in resolutions:
        k = res_log2(r)
        if r > 4:
            layer(f"synthesis.b{r}.conv0", f"synthesis/{r}x{r}/Conv0_up", flip=True, noise=2 * k - 5)
            layer(f"synthesis.b{r}.conv1", f"synthesis/{r}x{r}/Conv1", noise=2 * k - 4)
            if architecture == "resnet":
                sd[f"synthesis.b{r}.skip.weight"] = _flip_hwio(t(f"synthesis/{r}x{r}/Skip/weight"))
        if architecture == "skip" or r == R:
            layer(f"synthesis.b{r}.torgb", f"synthesis/{r}x{r}/ToRGB")
    return entry(GENERATOR, init, sd, defaults=FILTER_KEYS)


def convert_tf_discriminator(state: dict, source: str) -> dict:
    """TF ``D_stylegan2`` network state → Discriminator entry."""
    _check_version(state, source)
    kw = _static(state, _D_KWARGS, source)
    p = tf_params(state)
    what = "TensorFlow discriminator"
    for name in list(p):
        m = re.fullmatch(r"FromRGB_lod(\d+)/(.*)", name)
        if m:
            res = _max_res(p, r"(\d+)x\d+/", source) // 2 ** int(m.group(1))
            p[f"{res}x{res}/FromRGB/{m.group(2)}"] = p.pop(name)
    R = _max_res(p, r"(\d+)x\d+/", source)
    blocks = [2**i for i in range(res_log2(R), 2, -1)]

    def t(key):
        return take(p, key, source, what)

    channels = {r: t(f"{r}x{r}/Conv0/weight").shape[3] for r in blocks}
    conv4 = t("4x4/Conv/weight")
    channels[4] = conv4.shape[3]
    channel_base, channel_max = fit_channels(channels, source, (2 * int(kw.get("fmap_base", 16384)), 32768))
    if any(f"{r}x{r}/Skip/weight" in p for r in blocks):
        architecture = "resnet"
    elif all(f"{r}x{r}/FromRGB/weight" in p for r in blocks + [4]):
        architecture = "skip"
    else:
        architecture = "orig"
    embed = p.get("LabelEmbed/weight")
    c_dim = int(embed.shape[0]) if embed is not None else 0
    n_map = len([k for k in p if re.fullmatch(r"Mapping\d+/weight", k)])
    act = kw.get("nonlinearity", "lrelu")
    init = dict(
        c_dim=c_dim,
        img_resolution=R,
        img_channels=int(t(f"{R}x{R}/FromRGB/weight").shape[2]),
        architecture=architecture,
        channel_base=channel_base,
        channel_max=channel_max,
        num_fp16_res=int(kw.get("num_fp16_res", 0)),
        conv_clamp=kw.get("conv_clamp"),
        cmap_dim=int(t("Output/weight").shape[1]) if c_dim else None,
        block_kwargs=dict(activation=act, resample_filter=list(kw.get("resample_kernel", [1, 3, 3, 1]))),
        mapping_kwargs=dict(
            num_layers=n_map,
            embed_features=int(embed.shape[1]) if c_dim else None,
            layer_features=int(p["Mapping0/weight"].shape[1]) if n_map > 1 else None,
            activation=act,
            lr_multiplier=float(kw.get("mapping_lrmul", 0.1)),
        ),
        epilogue_kwargs=dict(
            mbstd_group_size=kw.get("mbstd_group_size", 4),
            mbstd_num_channels=int(conv4.shape[2] - channels[4]),
            activation=act,
        ),
    )
    sd = {}
    for r in blocks + [4]:
        if f"{r}x{r}/FromRGB/weight" in p and (r == R or architecture == "skip"):
            sd[f"b{r}.fromrgb.weight"] = _hwio(t(f"{r}x{r}/FromRGB/weight"))
            sd[f"b{r}.fromrgb.bias"] = as_tensor(t(f"{r}x{r}/FromRGB/bias"))
    for r in blocks:
        for i, tf in ((0, "Conv0"), (1, "Conv1_down")):
            sd[f"b{r}.conv{i}.weight"] = _hwio(t(f"{r}x{r}/{tf}/weight"))
            sd[f"b{r}.conv{i}.bias"] = as_tensor(t(f"{r}x{r}/{tf}/bias"))
        if architecture == "resnet":
            sd[f"b{r}.skip.weight"] = _hwio(t(f"{r}x{r}/Skip/weight"))
    if c_dim:
        sd["mapping.embed.weight"] = _fc(t("LabelEmbed/weight"))
        sd["mapping.embed.bias"] = as_tensor(t("LabelEmbed/bias"))
    for i in range(n_map):
        sd[f"mapping.fc{i}.weight"] = _fc(t(f"Mapping{i}/weight"))
        sd[f"mapping.fc{i}.bias"] = as_tensor(t(f"Mapping{i}/bias"))
    sd["b4.conv.weight"] = _hwio(conv4)
    sd["b4.conv.bias"] = as_tensor(t("4x4/Conv/bias"))
    sd["b4.fc.weight"] = _fc(t("4x4/Dense0/weight"))
    sd["b4.fc.bias"] = as_tensor(t("4x4/Dense0/bias"))
    sd["b4.out.weight"] = _fc(t("Output/weight"))
    sd["b4.out.bias"] = as_tensor(t("Output/bias"))
    return entry(DISCRIMINATOR, init, sd, defaults=FILTER_KEYS)


def _max_res(p: dict, pattern: str, source: str) -> int:
    res = [int(m.group(1)) for k in p for m in [re.match(pattern, k)] if m]
    if not res:
        raise ValueError(f"{source}: no '<r>x<r>/' variables found in the TensorFlow network")
    return max(res)


def convert_tf_pickle(data: tuple, source: str) -> dict:
    """``(G, D, Gs)`` of :class:`TFNetwork` → ``{'networks': {G, D, G_ema}, 'meta'}`` (legacy.py order)."""
    G, D, Gs = (n.state for n in data)
    nets = {
        "G": convert_tf_generator(G, source),
        "D": convert_tf_discriminator(D, source),
        "G_ema": convert_tf_generator(Gs, source),
    }
    return {"networks": nets, "meta": {"format": "tf-pickle"}}


# ----------------------------------------------------------------------------------------------------------
# Inverse mapping (writes TF network states from our networks; used to test the converter both ways).


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float32)


def _to_hwio(x, flip=False) -> np.ndarray:
    a = _np(x).transpose(2, 3, 1, 0)
    return np.ascontiguousarray(a[::-1, ::-1] if flip else a)


def _state(name: str, variables: dict, components: dict | None = None, static_kwargs=None) -> dict:
    return {
        "version": 4,
        "name": name,
        "static_kwargs": dict(static_kwargs or {}),
        "components": components or {},
        "build_module_src": "",
        "build_func_name": "",
        "variables": list(variables.items()),
    }


def export_tf_generator(G, name: str = "G") -> dict:
    """Our Generator → TF ``G_main`` network state (components ``mapping`` and ``synthesis``)."""
    sd = G.state_dict()
    kw = G.init_kwargs
    mk, sk = kw["mapping_kwargs"], kw["synthesis_kwargs"]
    arch = sk.get("architecture", "skip")
    mapping = {}
    if kw["c_dim"]:
        mapping["LabelEmbed/weight"] = _np(sd["mapping.embed.weight"]).T.copy()
        mapping["LabelEmbed/bias"] = _np(sd["mapping.embed.bias"])
    for i in range(mk.get("num_layers", 8)):
        mapping[f"Dense{i}/weight"] = _np(sd[f"mapping.fc{i}.weight"]).T.copy()
        mapping[f"Dense{i}/bias"] = _np(sd[f"mapping.fc{i}.bias"])
    syn = {"4x4/Const/const": _np(sd["synthesis.b4.const"])[None]}
    R = kw["img_resolution"]

    def layer(ours, tf, flip=False, noise=None):
        syn[f"{tf}/weight"] = _to_hwio(sd[f"{ours}.weight"], flip)
        syn[f"{tf}/bias"] = _np(sd[f"{ours}.bias"])
        syn[f"{tf}/mod_weight"] = _np(sd[f"{ours}.affine.weight"]).T.copy()
        syn[f"{tf}/mod_bias"] = _np(sd[f"{ours}.affine.bias"]) - 1
        if noise is not None and f"{ours}.noise_const" in sd:
            syn[f"noise{noise}"] = _np(sd[f"{ours}.noise_const"])[None, None]
            syn[f"{tf}/noise_strength"] = _np(sd[f"{ours}.noise_strength"])

    layer("synthesis.b4.conv1", "4x4/Conv", noise=0)
    for r in [2**i for i in range(2, res_log2(R) + 1)]:
        k = res_log2(r)
        if r > 4:
            layer(f"synthesis.b{r}.conv0", f"{r}x{r}/Conv0_up", flip=True, noise=2 * k - 5)
            layer(f"synthesis.b{r}.conv1", f"{r}x{r}/Conv1", noise=2 * k - 4)
            if arch == "resnet":
                syn[f"{r}x{r}/Skip/weight"] = _to_hwio(sd[f"synthesis.b{r}.skip.weight"], flip=True)
        if arch == "skip" or r == R:
            layer(f"synthesis.b{r}.torgb", f"{r}x{r}/ToRGB")
    static = {
        "mapping_lrmul": mk.get("lr_multiplier", 0.01),
        "w_avg_beta": mk.get("w_avg_beta", 0.995),
        "mapping_nonlinearity": mk.get("activation", "lrelu"),
        "nonlinearity": sk.get("activation", "lrelu"),
        "resample_kernel": list(sk.get("resample_filter", [1, 3, 3, 1])),
        "num_fp16_res": sk.get("num_fp16_res", 0),
        "conv_clamp": sk.get("conv_clamp"),
        "resolution": R,
    }
    comps = {"mapping": _state("G_mapping", mapping), "synthesis": _state("G_synthesis", syn)}
    return _state(name, {"dlatent_avg": _np(sd["mapping.w_avg"])}, comps, static)


def export_tf_discriminator(D, name: str = "D") -> dict:
    """Our Discriminator → TF ``D_stylegan2`` network state."""
    sd = D.state_dict()
    kw = D.init_kwargs
    v = {}
    for key, value in sd.items():
        m = re.fullmatch(r"b(\d+)\.(fromrgb|conv0|conv1|skip)\.(weight|bias)", key)
        if m:
            r, layer, kind = m.groups()
            tf = {"fromrgb": "FromRGB", "conv0": "Conv0", "conv1": "Conv1_down", "skip": "Skip"}[layer]
            v[f"{r}x{r}/{tf}/{kind}"] = _to_hwio(value) if kind == "weight" else _np(value)
    v["4x4/Conv/weight"] = _to_hwio(sd["b4.conv.weight"])
    v["4x4/Conv/bias"] = _np(sd["b4.conv.bias"])
    v["4x4/Dense0/weight"] = _np(sd["b4.fc.weight"]).T.copy()
    v["4x4/Dense0/bias"] = _np(sd["b4.fc.bias"])
    v["Output/weight"] = _np(sd["b4.out.weight"]).T.copy()
    v["Output/bias"] = _np(sd["b4.out.bias"])
    if kw["c_dim"]:
        v["LabelEmbed/weight"] = _np(sd["mapping.embed.weight"]).T.copy()
        v["LabelEmbed/bias"] = _np(sd["mapping.embed.bias"])
        for i in range(kw["mapping_kwargs"].get("num_layers", 8)):
            v[f"Mapping{i}/weight"] = _np(sd[f"mapping.fc{i}.weight"]).T.copy()
            v[f"Mapping{i}/bias"] = _np(sd[f"mapping.fc{i}.bias"])
    bk, ek = kw.get("block_kwargs") or {}, kw.get("epilogue_kwargs") or {}
    static = {
        "nonlinearity": bk.get("activation", "lrelu"),
        "resample_kernel": list(bk.get("resample_filter", [1, 3, 3, 1])),
        "num_fp16_res": kw.get("num_fp16_res", 0),
        "conv_clamp": kw.get("conv_clamp"),
        "mapping_lrmul": (kw.get("mapping_kwargs") or {}).get("lr_multiplier", 0.01),
        "mbstd_group_size": ek.get("mbstd_group_size", 4),
    }
    return _state(name, v, None, static)


def export_tf(G, D, G_ema) -> tuple[dict, dict, dict]:
    """``(G, D, Gs)`` TF network states, the layout of an official TF StyleGAN2 pickle."""
    return export_tf_generator(G, "G"), export_tf_discriminator(D, "D"), export_tf_generator(G_ema, "Gs")
