"""Safetensors files, single or sharded (Hugging Face's ``*.index.json`` + ``-0000i-of-0000n`` shards), read
with one-line errors: a truncated file, a missing shard, an index from another save.

Used by our own model folders (``flashi2v.model.io``) and by the readers of foreign layouts
(``flashi2v.weights``), so it sits below both.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .errors import FlashI2VError
from .jsonfile import read_json_object

SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.safetensors$")


def corrupt(path: Path, err: Exception) -> FlashI2VError:
    """The one line for a file that cannot be read: its name and the first sentence of the reader's error."""
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    msg = msg.split(". ")[0][:160]  # torch's zip errors run on for several sentences
    return FlashI2VError(f"'{path}' is truncated or corrupt ({msg}): re-download or re-save it")


def _safe_open(path: Path):
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError / OSError types
        raise corrupt(path, err) from err


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
                    raise corrupt(path, err) from err
    return out


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file's header (empty when it has none)."""
    path = Path(path)
    with _safe_open(path) as f:
        return dict(f.metadata() or {})


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
