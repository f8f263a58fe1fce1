"""Reading weight files safely: safetensors (single or sharded) and torch pickles that never run code.

A ``.pt``/``.pth`` file is a pickle, and unpickling can run arbitrary code. We first try
``torch.load(weights_only=True)``; a MindSpeed/Megatron save also carries an ``args`` Namespace of
framework config objects, which that refuses, so we then fall back to a restricted unpickler that
resolves only tensor-rebuilding globals and turns every other global into an inert placeholder.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import FlashI2VError
from ..safetensors_files import corrupt as _corrupt
from ..safetensors_files import load_safetensors_set
from .layouts import EXTRA_STATE_SUFFIX

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
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
