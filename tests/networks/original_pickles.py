"""Write snapshots in the layouts of genforce/insgen and genforce/eqgan-sa (NVlabs pickles) from suite networks.

The originals pickle their networks through ``torch_utils.persistence``: every class of ``training/*.py`` becomes
``_reconstruct_persistent_obj(dict(type='class', class_name, module_src, state=<module __dict__>))``, while plain
``torch.nn`` modules inside them (InsGen ``CLHead.mlp``: Sequential/Linear/ReLU; EqGAN-SA ``SEL.inorm_fn`` /
``SEL.shared`` / ``SEL.output``: InstanceNorm2d/Sequential/LeakyReLU) are pickled by torch itself. At write time a
stand-in ``torch_utils.persistence`` module is registered under the original name (as tests/networks/
test_converters.py does for TF pickles); reading never imports it.
"""

from __future__ import annotations

import copy
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from networks.augment import AugmentPipe
from networks.eqgan_sa import SpatialEncodingLayer
from networks.insgen_heads import ContrastiveHead

PLAIN = (nn.Sequential, nn.Linear, nn.ReLU, nn.LeakyReLU, nn.InstanceNorm2d)
# Suite class -> the original's class name (genforce/eqgan-sa training/networks.py, genforce/insgen
# training/contrastive_head.py); the other StyleGAN2 classes have NVlabs' names already.
ORIGINAL_NAMES = {
    "SpatialEncodingLayer": "SEL",
    "SpatialSynthesisNetwork": "SynthesisNetwork",
    "EqGANGenerator": "Generator",
    "ContrastiveHead": "CLHead",
}
STATE_KEYS = ("training", "_parameters", "_buffers", "_non_persistent_buffers_set")


def _reconstruct_persistent_obj(meta):  # stands in for torch_utils.persistence._reconstruct_persistent_obj
    raise AssertionError("the suite must never call the original's reconstruction")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class Persistent:
    """A persistent NVlabs object as the original pickles it (class name, module source, ``__dict__`` state)."""

    def __init__(self, class_name: str, state: dict):
        self.class_name, self.state = class_name, state

    def __reduce__(self):
        meta = dict(type="class", version=4, module_src="# training/networks.py", class_name=self.class_name)
        return (_reconstruct_persistent_obj, ({**meta, "state": self.state},))


def original_layout(module: nn.Module, init_kwargs: dict | None = None, renames: dict | None = None):
    """``module`` as the original's object tree: persistent records for the suite's classes, plain torch
    modules kept (with converted children); a SEL gets the original's stateless ``inorm_fn``."""
    children = {name: original_layout(child) for name, child in module._modules.items() if child is not None}
    if isinstance(module, SpatialEncodingLayer):
        children = {"inorm_fn": nn.InstanceNorm2d(module.output[1].in_channels, affine=False), **children}
    if isinstance(module, PLAIN):
        out = copy.copy(module)
        object.__setattr__(out, "_modules", OrderedDict(children))
        return out
    state = {k: module.__dict__[k] for k in STATE_KEYS if k in module.__dict__}
    state.update(_modules=OrderedDict(children), _init_args=(), _init_kwargs=dict(init_kwargs or {}))
    name = type(module).__name__
    return Persistent((renames or {}).get(name, ORIGINAL_NAMES.get(name, name)), state)


def write_original_pickle(path: Path, data: dict, monkeypatch) -> None:
    """``pickle.dump(data)`` with ``torch_utils.persistence`` resolvable (protocol 4, as Python 3.8's default)."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", persistence)
    path.write_bytes(pickle.dumps(data, protocol=4))
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")
    monkeypatch.delitem(sys.modules, "torch_utils")


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Non-trivial values in every parameter and floating buffer (zero biases would hide wrong mappings)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point() and "resample_filter" not in name:
                t.copy_(torch.randn(t.shape, generator=g) * 0.3 + t)
    return module


def head(queue_size: int, seed: int) -> ContrastiveHead:
    torch.manual_seed(seed)
    h = randomise(ContrastiveHead(in_dim=16, queue_size=queue_size), seed)
    h.queue_ptr.fill_(3)
    return h


def insgen_snapshot(G, D, D_ema, DHead, GHead) -> dict:
    """genforce/insgen training/training_loop.py's snapshot dict (training_set_kwargs, G, D, G_ema, augment_pipe,
    D_ema, DHead, GHead), the heads built as train.py's CLHead kwargs."""
    pipe = AugmentPipe.from_preset("bgc")
    pipe.p.fill_(0.25)

    def clhead(h):
        kw = dict(inplanes=h.mlp[0].in_features, temperature=0.2, queue_size=h.queue_size, momentum=0.999)
        return original_layout(h, kw)

    return dict(
        training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="ffhq2k.zip", xflip=True),
        G=original_layout(G, G.init_kwargs),
        D=original_layout(D, D.init_kwargs),
        G_ema=original_layout(G, G.init_kwargs),
        augment_pipe=original_layout(pipe),
        D_ema=original_layout(D_ema, D.init_kwargs),
        DHead=clhead(DHead),
        GHead=clhead(GHead),
    )
