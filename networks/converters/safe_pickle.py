"""Restricted unpickling of foreign checkpoints: plain data out, no code from the file ever runs.

NVIDIA snapshots, TF pickles, rosinality and Hammer files are read at the state-dict level.
:class:`RestrictedUnpickler` maps the few globals these files use to local, inert constructors (tensor
rebuilds, numpy arrays, ``EasyDict``, NVIDIA persistent objects, the few plain ``torch.nn`` modules of
:data:`TORCH_MODULES` as data records, TF ``Network`` states) and refuses every other global with
:class:`UnsafePickleError` naming it. Torch files (zip and legacy ``torch.save`` layouts, incl. the legacy
blobs that ``torch.storage._load_from_bytes`` carries inside NVIDIA pickles) are parsed here too, so
``torch.load`` with its full unpickler is never used.
:func:`load_data_pickle` reads plain-data pickles (dataset files such as the CIFAR-10 python batches) with a
narrower allow-list: dicts, lists, strings, bytes, numbers and numpy arrays.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "EasyDict",
    "InertObject",
    "PersistentObject",
    "TorchModuleRecord",
    "RestrictedUnpickler",
    "TFNetwork",
    "UnsafePickleError",
    "load_data_pickle",
    "load_file",
    "plain",
]

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_TORCH_DTYPES = {
    name: getattr(torch, name)
    for name in (
        "float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 bool double float half long int short"
    ).split()
}
_NUMPY_KINDS = "biufcSU"


class UnsafePickleError(pickle.UnpicklingError):
    """The file references a global that is not on the allow-list (nothing was executed)."""


class EasyDict(dict):
    """Stand-in for ``dnnlib.EasyDict`` / ``dnnlib.util.EasyDict`` / ``easydict.EasyDict``: a dict with attribute
    access (a pickled ``easydict.EasyDict`` also restores its ``__dict__`` copy of the items: plain data)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


class PersistentObject:
    """An NVIDIA ``torch_utils.persistence`` object: class name + ``__dict__`` state; source never run."""

    def __init__(self, class_name: str, state: dict, module_src: str):
        self.class_name = class_name
        self.state = state
        self.module_src = module_src

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name})"


# Plain torch.nn modules met inside the networks of genforce/insgen (CLHead: Sequential, Linear, ReLU) and
# genforce/eqgan-sa (SEL: InstanceNorm2d, LeakyReLU, Sequential) snapshots.
TORCH_MODULES = (
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.activation.LeakyReLU",
    "torch.nn.modules.instancenorm.InstanceNorm2d",
)


class TorchModuleRecord(PersistentObject):
    """A plain ``torch.nn`` module of :data:`TORCH_MODULES` as data: class name + ``__dict__`` state (parameters,
    buffers, sub-modules), read like a :class:`PersistentObject`. Pickles build it with NEWOBJ + BUILD; neither
    torch's constructor nor its ``__setstate__`` runs."""

    class_name = "?"
    module_src = ""

    def __init__(self, *args, **kwargs):
        raise UnsafePickleError(f"{self.class_name}: a pickled module is rebuilt from its state, never called")

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.class_name}: module state must be a dict, got {type(state).__name__}")
        self.state = state


_TORCH_MODULE_RECORDS = {
    name: type(f"TorchModuleRecord[{name}]", (TorchModuleRecord,), {"class_name": name}) for name in TORCH_MODULES
}


class TFNetwork:
    """State of a ``dnnlib.tflib.network.Network`` (name, static_kwargs, components, variables)."""

    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"dnnlib.tflib.network.Network state: expected a dict, got {state!r}")
        self.state = state

    def __repr__(self) -> str:
        return f"TFNetwork({self.state.get('name')})"


class InertObject:
    """Placeholder for an allowed data-only class (e.g. ``argparse.Namespace``): records, never runs."""

    global_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.state, obj.items = args, None, {}
        return obj

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state) -> None:
        self.state = state

    def __setitem__(self, key, value) -> None:
        self.items[key] = value

    def append(self, value) -> None:
        self.items[len(self.items)] = value

    def extend(self, values) -> None:
        for v in values:
            self.append(v)

    def __repr__(self) -> str:
        return f"<inert {self.global_name}>"


_INERT_CLASSES: dict[str, type] = {}


def _inert_class(name: str) -> type:
    if name not in _INERT_CLASSES:
        _INERT_CLASSES[name] = type(f"Inert[{name}]", (InertObject,), {"global_name": name})
    return _INERT_CLASSES[name]


# ----------------------------------------------------------------------------------------------------------
# Local constructors the allow-list maps to.


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *_):
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError(f"tensor rebuild: expected a storage, got {type(storage).__name__}")
    return storage.as_strided(tuple(size), tuple(stride), storage_offset)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, *_):
    if not isinstance(dtype, torch.dtype):
        raise pickle.UnpicklingError(f"tensor rebuild: expected a torch dtype, got {dtype!r}")
    return _rebuild_tensor_v2(storage.view(dtype), storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_):
    return data


_TENSOR_FUNCS = (_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in _TENSOR_FUNCS:
        raise pickle.UnpicklingError(f"_rebuild_from_type_v2: refusing rebuild function {func!r}")
    return func(*args)


def _reconstruct_persistent_obj(meta):
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise pickle.UnpicklingError(
            "torch_utils.persistence._reconstruct_persistent_obj: expected meta dict(type='class', "
            f"class_name, state), got keys {sorted(meta) if isinstance(meta, dict) else type(meta).__name__}"
        )
    return PersistentObject(str(meta.get("class_name")), meta["state"], str(meta.get("module_src", "")))


class _NumpyDType:
    """``numpy.dtype(name, align, copy)`` + BUILD state, resolved to a numeric dtype only."""

    def __init__(self, name, align=False, copy=False):
        if isinstance(name, bytes):  # Python 2 pickles read with encoding="bytes"
            name = name.decode("latin1")
        if not isinstance(name, str):
            raise pickle.UnpicklingError(f"numpy.dtype: expected a type code string, got {name!r}")
        dt = np.dtype(name)
        if dt.kind not in _NUMPY_KINDS or dt.fields is not None:
            raise UnsafePickleError(f"numpy.dtype: refusing non-numeric dtype {name!r}")
        self.dtype = dt

    def __setstate__(self, state) -> None:
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if isinstance(order, bytes):
            order = order.decode("latin1")
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)


def _numpy_dtype(value) -> np.dtype:
    if isinstance(value, _NumpyDType):
        return value.dtype
    raise pickle.UnpicklingError(f"numpy data: expected a dtype, got {value!r}")


class _NumpyArray:
    """``numpy.core.multiarray._reconstruct`` + BUILD state, turned into an ndarray from raw bytes."""

    def __setstate__(self, state) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("numpy array state: expected (version, shape, dtype, fortran, data)")
        _, shape, dtype, fortran, data = state
        dtype = _numpy_dtype(dtype)
        if isinstance(data, str):
            data = data.encode("latin1")
        if not isinstance(data, bytes | bytearray):
            raise UnsafePickleError("numpy array: refusing object array data")
        arr = np.frombuffer(data, dtype=dtype).copy()
        self.array = arr.reshape(tuple(shape), order="F" if fortran else "C")


def _numpy_reconstruct(cls, shape, dtype_code):
    if cls is not _NUMPY_NDARRAY:
        raise UnsafePickleError(f"numpy _reconstruct: refusing subtype {cls!r}")
    return _NumpyArray()


_NUMPY_NDARRAY = object()


def _numpy_scalar(dtype, data=None):
    dtype = _numpy_dtype(dtype)
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, bytes):
        raise UnsafePickleError("numpy scalar: refusing non-bytes payload")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_frombuffer(buf, dtype, shape, order="C"):
    """``numpy._core.numeric._frombuffer`` (arrays pickled with protocol 5): raw bytes -> an ndarray copy."""
    dtype = _numpy_dtype(dtype)
    if not isinstance(buf, bytes | bytearray):
        raise UnsafePickleError("numpy _frombuffer: refusing a non-bytes buffer")
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"numpy _frombuffer: unknown order {order!r}")
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(tuple(shape), order=order).copy()


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    """``_codecs.encode(str, 'latin1')``: how Python 3 writes bytes into protocol-2 pickles."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "") != "latin1":
        raise UnsafePickleError(f"_codecs.encode: only (str, 'latin1') is accepted, got encoding {encoding!r}")
    return text.encode("latin1")


def _safe_reconstructor(cls, base, state):
    """``copyreg._reconstructor`` restricted to local placeholder classes."""
    if not (isinstance(cls, type) and issubclass(cls, InertObject | EasyDict | TFNetwork)):
        raise UnsafePickleError(f"copyreg._reconstructor: refusing class {cls!r}")
    obj = cls.__new__(cls)
    if isinstance(obj, dict) and isinstance(state, dict):
        obj.update(state)
    return obj


def _torch_device(*args):
    return str(args[0]) if args else "cpu"


def _load_from_bytes(data):
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("torch.storage._load_from_bytes: expected bytes")
    return _load_torch_stream(io.BytesIO(data), source="<embedded storage>", inert=())


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.Tensor,
    ("torch", "Size"): tuple,
    ("torch", "device"): _torch_device,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("easydict", "EasyDict"): EasyDict,  # Hammer's model_kwargs_init / configs (runners/base_runner.py save)
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    ("numpy", "ndarray"): _NUMPY_NDARRAY,
    ("numpy", "dtype"): _NumpyDType,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _SAFE_GLOBALS[(_mod, "_reconstruct")] = _numpy_reconstruct
    _SAFE_GLOBALS[(_mod, "scalar")] = _numpy_scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _SAFE_GLOBALS[(_mod, "_frombuffer")] = _numpy_frombuffer
_SAFE_GLOBALS[("_codecs", "encode")] = _codecs_encode
for _name, _record in _TORCH_MODULE_RECORDS.items():
    _SAFE_GLOBALS[tuple(_name.rsplit(".", 1))] = _record
# Plain-data pickles (datasets): containers, bytes and numpy arrays; nothing torch- or class-like.
_DATA_GLOBALS = {
    key: value
    for key, value in _SAFE_GLOBALS.items()
    if key[0].startswith(("numpy", "_codecs")) or key == ("collections", "OrderedDict")
}


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` only returns local constructors; see the module docstring.

    ``inert`` lists exact global names (``module.name``) or prefixes ending in ``.`` that become
    :class:`InertObject` placeholders (data-only classes met in training checkpoints, e.g. ``args``).
    ``storages`` resolves ``torch.save`` persistent ids: a callable ``(key, dtype, numel) -> flat tensor``.
    ``data_only`` narrows the allow-list to plain data (containers, bytes, numpy arrays); ``encoding`` is
    pickle's decoding of Python 2 ``str`` (``"bytes"`` keeps them as bytes).
    """

    def __init__(self, file, *, source: str, inert=(), storages=None, data_only: bool = False, encoding="ASCII"):
        super().__init__(file, encoding=encoding)
        self.source = source
        self.inert = tuple(inert)
        self.storages = storages
        self.allowed = _DATA_GLOBALS if data_only else _SAFE_GLOBALS
        self.data_only = data_only

    def find_class(self, module: str, name: str):
        module = _PY2_MODULES.get(module, module)  # protocol-2 pickles name Python-2 modules
        full = f"{module}.{name}"
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        if self.data_only:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global '{full}' (a data file may hold only dicts, lists, "
                "strings, bytes, numbers and numpy arrays); nothing from the file was executed"
            )
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        if any(full == p or (p.endswith(".") and full.startswith(p)) for p in self.inert):
            return _inert_class(full)
        raise UnsafePickleError(
            f"{self.source}: refusing to load global '{full}' (not on the allow-list of "
            "networks/converters/safe_pickle.py); nothing from the file was executed"
        )

    def persistent_load(self, pid):
        if self.storages is None:
            raise pickle.UnpicklingError(f"{self.source}: unexpected persistent id {pid!r} in a plain pickle")
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self.source}: unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self.source}: persistent id {pid!r} names no storage type")
        flat = self.storages(str(key), storage_type.dtype, int(numel))
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            _view_key, offset, size = view
            flat = flat[offset : offset + size]
        return flat


def _flat_from_bytes(data: bytes, dtype: torch.dtype, source: str, key: str) -> torch.Tensor:
    size = torch.empty((), dtype=dtype).element_size()
    if len(data) % size:
        raise pickle.UnpicklingError(f"{source}: storage {key} has {len(data)} bytes, not a multiple of {size}")
    if not data:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype)


def _load_torch_zip(zf: zipfile.ZipFile, *, source: str, inert) -> object:
    pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise pickle.UnpicklingError(f"{source}: torch zip archive without a single '<name>/data.pkl'")
    prefix = pkls[0][: -len("data.pkl")]
    if f"{prefix}byteorder" in zf.namelist() and zf.read(f"{prefix}byteorder").strip() != b"little":
        raise pickle.UnpicklingError(f"{source}: big-endian torch archives are not supported")
    cache: dict[str, torch.Tensor] = {}

    def storages(key, dtype, numel):
        if key not in cache:
            cache[key] = _flat_from_bytes(zf.read(f"{prefix}data/{key}"), dtype, source, key)
        return cache[key].view(dtype) if cache[key].dtype != dtype else cache[key]

    with zf.open(pkls[0]) as f:
        return RestrictedUnpickler(io.BytesIO(f.read()), source=source, inert=inert, storages=storages).load()


def _load_torch_legacy(f, *, source: str, inert) -> object:
    """Legacy ``torch.save`` layout: magic, protocol, sys_info, object pickle, keys, raw storages."""
    header = RestrictedUnpickler(f, source=source)
    if header.load() != TORCH_LEGACY_MAGIC:
        raise pickle.UnpicklingError(f"{source}: not a legacy torch file (bad magic number)")
    header.load()  # protocol version
    sys_info = header.load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise pickle.UnpicklingError(f"{source}: big-endian torch files are not supported")
    start = f.tell()
    dtypes: dict[str, torch.dtype] = {}

    def record(key, dtype, numel):  # first pass: learn each storage's dtype, allocate nothing
        dtypes[key] = dtype
        return torch.empty(numel, dtype=dtype, device="meta")

    RestrictedUnpickler(f, source=source, inert=inert, storages=record).load()
    keys = RestrictedUnpickler(f, source=source).load()
    data = {}
    for key in keys:
        if key not in dtypes:
            raise pickle.UnpicklingError(f"{source}: storage key {key!r} listed but never referenced")
        count = int.from_bytes(f.read(8), "little")
        size = torch.empty((), dtype=dtypes[key]).element_size()
        data[key] = _flat_from_bytes(f.read(count * size), dtypes[key], source, key)
    end = f.tell()
    f.seek(start)
    obj = RestrictedUnpickler(f, source=source, inert=inert, storages=lambda k, d, n: data[k]).load()
    f.seek(end)
    return obj


def _load_torch_stream(f, *, source: str, inert) -> object:
    head = f.read(4)
    f.seek(0)
    if head[:2] == b"PK":
        with zipfile.ZipFile(f) as zf:
            return _load_torch_zip(zf, source=source, inert=inert)
    return _load_torch_legacy(f, source=source, inert=inert)


def _is_torch_legacy(f) -> bool:
    """A legacy torch file starts with a tiny pickle holding only the magic number."""
    pos = f.tell()
    try:
        for i, (op, arg, _) in enumerate(pickletools.genops(f)):
            if op.name == "LONG1" and arg == TORCH_LEGACY_MAGIC:
                return True
            if i >= 2 or op.name == "STOP":
                return False
        return False
    except (ValueError, EOFError):
        return False
    finally:
        f.seek(pos)


def load_file(path: str | Path, *, inert=()) -> tuple[str, object]:
    """Read ``path`` with the restricted unpickler; returns ``(kind, obj)``, kind ``torch`` or ``pickle``.

    Torch zip and legacy files are recognised by their layout; anything else is read as a plain pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    source = str(path)
    with open(path, "rb") as f:
        if zipfile.is_zipfile(f):
            f.seek(0)
            with zipfile.ZipFile(f) as zf:
                return "torch", _load_torch_zip(zf, source=source, inert=inert)
        f.seek(0)
        if _is_torch_legacy(f):
            return "torch", _load_torch_legacy(f, source=source, inert=inert)
        f.seek(0)
        try:
            return "pickle", RestrictedUnpickler(f, source=source, inert=inert).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as e:
            raise ValueError(
                f"{source}: unknown checkpoint format (neither a torch file nor a readable pickle: {e})"
            ) from e


def load_data_pickle(path: str | Path, *, encoding: str = "ASCII"):
    """A plain-data pickle (e.g. a CIFAR-10 python batch) as dicts, lists, str/bytes, numbers, ndarrays.

    Any other global is refused with :class:`UnsafePickleError` before anything runs; ``encoding`` as
    :class:`pickle.Unpickler` (``"bytes"`` or ``"latin1"`` for Python 2 files).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, "rb") as f:
        return plain(RestrictedUnpickler(f, source=str(path), data_only=True, encoding=encoding).load())


def plain(obj):
    """Recursively turn EasyDict/OrderedDict/numpy scalars into plain Python data (tensors kept)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, _NumpyArray):
        return obj.array
    return obj
