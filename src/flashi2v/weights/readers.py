"""Reading weight files safely: safetensors (single or sharded) and torch pickles that never run code.

A ``.pt``/``.pth`` file is a pickle, and unpickling can run arbitrary code. We first try
``torch.load(weights_only=True)``; a MindSpeed/Megatron save also carries an ``args`` Namespace of
framework config objects, which that refuses, so we then fall back to a restricted unpickler that
resolves only tensor-rebuilding globals and turns every other global into an inert placeholder.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import FlashI2VError
from ..jsonfile import read_json_object
from .layouts import EXTRA_STATE_SUFFIX

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.safetensors$")
# MindSpeed-MM's loader unwraps one level in this order (mindspeed_flashi2v_1.3b.md, section 3).
CONTAINER_PRIORITY = ("ema_model", "model", "state_dict")


# -- restricted unpickling -------------------------------------------------------------------------


class Inert:
    """Stands in for any global the restricted unpickler refuses to import.

    It accepts whatever pickle does with it (construction, state, items, calls) and keeps the data
    only for display, so framework metadata loads as plain inert values without importing anything.
    """

    origin = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value):
        self.__dict__.setdefault("list", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("list", []).extend(values)

    def __call__(self, *args, **kwargs):
        return type(self)()

    def __repr__(self):
        return f"<inert {self.origin}>"


_inert_classes: dict[str, type] = {}


def _inert(origin: str) -> type:
    if origin not in _inert_classes:
        _inert_classes[origin] = type(origin.rsplit(".", 1)[-1], (Inert,), {"origin": origin})
    return _inert_classes[origin]


_ALLOWED = {
    "collections.OrderedDict", "torch.Size", "torch.device", "torch.nn.parameter.Parameter",
    "torch._tensor._rebuild_from_type_v2", "torch.serialization._get_layout", "_codecs.encode",
    "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.complex", "builtins.slice",
}


def _allowed_global(module: str, name: str) -> bool:
    """Tensor rebuilding needs only these: rebuild functions, dtypes, storages, containers."""
    if f"{module}.{name}" in _ALLOWED:
        return True
    if module == "torch._utils" and name.startswith("_rebuild_"):
        return True
    return module == "torch" and (isinstance(getattr(torch, name, None), torch.dtype) or name.endswith("Storage"))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if _allowed_global(module, name):
            return super().find_class(module, name)
        return _inert(f"{module}.{name}")


class restricted_pickle:
    """A pickle-module stand-in whose Unpickler imports nothing but tensor-rebuilding globals."""

    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file, **kwargs):
        return _RestrictedUnpickler(file, **kwargs).load()


def _corrupt(path: Path, err: Exception) -> FlashI2VError:
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    msg = msg.split(". ")[0][:160]  # torch's zip errors run on for several sentences
    return FlashI2VError(f"'{path}' is truncated or corrupt ({msg}): re-download or re-save it")


def load_pickle(path: str | Path):
    """torch.load without running code: weights_only first, the restricted unpickler if that refuses."""
    path = Path(path)
    try:
        try:
            return _torch_load(path, weights_only=True)
        except pickle.UnpicklingError:
            return _torch_load(path, weights_only=False, pickle_module=restricted_pickle)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as err:
        raise _corrupt(path, err) from err
    except Exception as err:  # noqa: BLE001 - untrusted bytes: whatever unpickling them raises is one line
        raise FlashI2VError(f"'{path}' is not a readable torch checkpoint ({type(err).__name__}): it is damaged, or "
                            "holds objects that cannot be loaded without running code; re-save the state dict with "
                            "torch.save or as safetensors") from None


def _torch_load(path: Path, **kwargs):
    """mmap the tensors (no copy in memory); files in the legacy non-zip format cannot be mmapped."""
    if zipfile.is_zipfile(path):
        return torch.load(path, map_location="cpu", mmap=True, **kwargs)
    return torch.load(path, map_location="cpu", **kwargs)


# -- safetensors -----------------------------------------------------------------------------------


def _safe_open(path: Path):
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError / OSError types
        raise _corrupt(path, err) from err


def load_safetensors(path: str | Path, meta: bool = False) -> dict[str, torch.Tensor]:
    """One safetensors file. ``meta``: shapes and dtypes only (meta tensors), reading no data."""
    path = Path(path)
    out = {}
    with _safe_open(path) as f:
        for key in f.keys():  # noqa: SIM118 - a safe_open handle is not a dict
            if meta:
                piece = f.get_slice(key)
                out[key] = torch.empty(piece.get_shape(), dtype=_st_dtype(piece.get_dtype()), device="meta")
            else:
                try:
                    out[key] = f.get_tensor(key)
                except Exception as err:
                    raise _corrupt(path, err) from err
    return out


def _st_dtype(name: str) -> torch.dtype:
    table = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
    return table.get(name, torch.float32)


def _weight_map(path: Path) -> dict[str, str]:
    """The ``weight_map`` of a shard index: tensor name -> shard file name (a plain name in the same folder)."""
    index = read_json_object(path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise FlashI2VError(f"'{path}' is not a valid shard index: it needs a non-empty \"weight_map\" object "
                            "(tensor name -> shard file); re-download it")
    for key, name in weight_map.items():
        if not isinstance(name, str) or not name.endswith(".safetensors") or Path(name).name != name:
            raise FlashI2VError(f"'{path}': weight_map entry '{key}' names {name!r}, not a .safetensors file beside "
                                "the index; re-download the index")
    return weight_map


def shard_files(path: Path) -> list[Path]:
    """All files of a sharded set: from its ``*.index.json``, or from any one ``-0000i-of-0000n`` shard."""
    if path.name.endswith(".index.json"):
        files = [path.parent / name for name in dict.fromkeys(_weight_map(path).values())]
    else:
        m = SHARD_RE.match(path.name)
        if not m:
            return [path]
        n = int(m.group("n"))
        files = [path.parent / f"{m.group('stem')}-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FlashI2VError(f"sharded checkpoint '{path}' lacks {len(missing)} shard(s) (first: {missing[0]}): "
                            "download every shard next to the index")
    return files


def load_safetensors_set(path: str | Path, meta: bool = False) -> dict[str, torch.Tensor]:
    """A single file, or every shard of a sharded set (given the index or any shard). With an index, every
    tensor it lists must be in the shards: a shard from another download would otherwise load silently."""
    path = Path(path)
    state = {}
    for file in shard_files(path):
        state.update(load_safetensors(file, meta))
    if path.name.endswith(".index.json"):
        absent = [key for key in _weight_map(path) if key not in state]
        if absent:
            raise FlashI2VError(f"'{path}' lists {len(absent)} tensor(s) that no shard holds (first: {absent[0]}): "
                                "the shards and the index come from different saves; re-download them together")
    return state


# -- containers ------------------------------------------------------------------------------------


@dataclass
class WeightSet:
    """One state dict taken from a file: ``label`` says where in the file it came from."""

    state: dict[str, torch.Tensor]
    label: str
    ema: bool = False
    dropped: list[str] = field(default_factory=list)  # non-tensor entries left out (e.g. ``_extra_state``)


def _clean(state: dict, label: str, ema: bool) -> WeightSet:
    """Keep the tensors; ``*._extra_state`` (None in Megatron saves) and other non-tensors are dropped."""
    tensors, dropped = {}, []
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and not key.endswith(EXTRA_STATE_SUFFIX):
            tensors[str(key)] = value
        else:
            dropped.append(str(key))
    return WeightSet(tensors, label, ema, dropped)


def unwrap_container(obj, source: str) -> list[WeightSet]:
    """The state dicts in a loaded pickle, in the order the authors' loader prefers them.

    ``ema_model``, then ``model``, then ``state_dict``, then the object itself as a flat dict. The
    first is what inference uses; the others are returned too so a converter can keep them.
    """
    if not isinstance(obj, dict):
        raise FlashI2VError(f"{source}: holds a {type(obj).__name__}, not a state dict: pass a weights file")
    sets = [_clean(obj[name], name, name == "ema_model") for name in CONTAINER_PRIORITY
            if isinstance(obj.get(name), dict)]
    if not sets:
        sets = [_clean(obj, "flat state dict", False)]
    if not any(s.state for s in sets):
        raise FlashI2VError(f"{source}: contains no tensors (top-level keys: {', '.join(map(str, list(obj)[:5]))}): "
                            "pass the weights file")
    return sets


def as_meta(ws: WeightSet) -> WeightSet:
    """The same weight set with meta tensors (shape and dtype only)."""
    state = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in ws.state.items()}
    return WeightSet(state, ws.label, ws.ema, ws.dropped)


def read_weight_file(path: str | Path, meta: bool = False) -> list[WeightSet]:
    """Every state dict in one weights file (safetensors, shard set or pickle), best first."""
    path = Path(path)
    if not path.is_file():
        raise FlashI2VError(f"weights file '{path}' does not exist: check the path")
    if path.name.endswith(".safetensors") or path.name.endswith(".index.json"):
        return [_clean(load_safetensors_set(path, meta), "safetensors", False)]
    if path.suffix in PICKLE_SUFFIXES:
        sets = unwrap_container(load_pickle(path), str(path))
        return [as_meta(s) for s in sets] if meta else sets
    raise FlashI2VError(f"'{path}' has an unknown weights extension: use .safetensors, .pt, .pth or .bin")
