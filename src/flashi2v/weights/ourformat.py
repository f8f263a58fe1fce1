"""Our own transformer format: ``config.json`` + ``model.safetensors``, sharded when large.

Shards follow the Hugging Face convention (``model-00001-of-00003.safetensors`` +
``model.safetensors.index.json`` with a ``weight_map``) so the usual tools can read them; a 14B
transformer in bf16 is ~28 GB, too large for one file on many filesystems and hubs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..config import TransformerConfig
from ..errors import FlashI2VError
from ..model import FlashI2VTransformer
from .readers import load_safetensors_set

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 5 * 2**30


def parse_size(size) -> int:
    """5_000_000, '5GB', '500MB' -> bytes."""
    if isinstance(size, int):
        return size
    text = str(size).strip().upper()
    for unit, factor in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10), ("B", 1)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def plan_shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    """Keys grouped in order into shards of at most max_bytes (a bigger tensor gets a shard alone)."""
    shards, current, size = [], [], 0
    for key, tensor in state.items():
        if current and size + _nbytes(tensor) > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(key)
        size += _nbytes(tensor)
    return shards + [current] if current else shards


def _write(state: dict, path: Path) -> None:
    """Atomic write, so an interrupted save never leaves a file that looks complete."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def save_state_sharded(state: dict[str, torch.Tensor], folder: str | Path, max_shard_size=DEFAULT_SHARD_BYTES,
                       weights_name: str = WEIGHTS_NAME) -> list[Path]:
    """Write ``state`` as one safetensors file, or as shards + index when over max_shard_size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in state.items()}
    groups = plan_shards(state, parse_size(max_shard_size))
    stem = weights_name[: -len(".safetensors")]
    for old in folder.glob(f"{stem}*.safetensors*"):
        old.unlink()  # stale shards of an earlier save would otherwise be picked up
    if len(groups) <= 1:
        _write(state, folder / weights_name)
        return [folder / weights_name]
    names = [f"{stem}-{i:05d}-of-{len(groups):05d}.safetensors" for i in range(1, len(groups) + 1)]
    for name, keys in zip(names, groups):
        _write({k: state[k] for k in keys}, folder / name)
    index = {"metadata": {"total_size": sum(_nbytes(v) for v in state.values())},
             "weight_map": {k: name for name, keys in zip(names, groups) for k in keys}}
    (folder / f"{weights_name}.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return [folder / n for n in names]


def save_transformer(model: FlashI2VTransformer, folder: str | Path, max_shard_size=DEFAULT_SHARD_BYTES) -> Path:
    """config.json + model.safetensors (or shards + index), Wan original key names, dtype as held."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"_class_name": type(model).__name__, **model.config.to_dict()}
    (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    save_state_sharded(model.state_dict(), folder, max_shard_size)
    return folder


def weights_path(folder: Path) -> Path | None:
    """The index of a sharded save, else the single weights file, else None."""
    for name in (INDEX_NAME, WEIGHTS_NAME):
        if (folder / name).is_file():
            return folder / name
    return None


def is_our_folder(folder: Path) -> bool:
    if not (folder / CONFIG_NAME).is_file() or weights_path(folder) is None:
        return False
    try:
        return json.loads((folder / CONFIG_NAME).read_text()).get("_class_name") == FlashI2VTransformer.__name__
    except ValueError:
        return False


def load_transformer(folder: str | Path, device="cpu", dtype: torch.dtype | None = None) -> FlashI2VTransformer:
    """Load a folder written by ``save_transformer`` (single file or sharded), strictly."""
    from ..model import load_state_dict_strict

    folder = Path(folder)
    path = weights_path(folder)
    if not (folder / CONFIG_NAME).is_file() or path is None:
        raise FlashI2VError(f"transformer folder '{folder}' has no config.json + model.safetensors: "
                            "pass a folder written by save_pretrained or `flashi2v convert`")
    config = TransformerConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
    with torch.device("meta"):
        model = FlashI2VTransformer.from_config(config)
    state = load_safetensors_set(path)
    state = {k: v.to(device=device, dtype=dtype if dtype and v.is_floating_point() else v.dtype)
             for k, v in state.items()}
    load_state_dict_strict(model, state, source=str(folder))
    return model
