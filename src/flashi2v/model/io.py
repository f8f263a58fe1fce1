"""Our own transformer format: ``config.json`` + ``model.safetensors``, sharded when large.

It lives beside the model (``FlashI2VTransformer.save_pretrained`` / ``from_pretrained``); ``flashi2v.weights``
reads the foreign layouts (Wan2.1, diffusers, the authors' checkpoints) and may import this, never the reverse.

Shards follow the Hugging Face convention (``model-00001-of-00003.safetensors`` +
``model.safetensors.index.json`` with a ``weight_map``) so the usual tools can read them; a 14B
transformer in bf16 is ~28 GB, too large for one file on many filesystems and hubs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from ..config import TransformerConfig
from ..errors import FlashI2VError
from ..jsonfile import read_json_object
from ..safetensors_files import load_safetensors_set
from ..sizes import parse_size

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 5 * 2**30
CLASS_NAME = "FlashI2VTransformer"  # config.json's "_class_name", as diffusers writes it


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
    groups = plan_shards(state, parse_size(max_shard_size, "max_shard_size"))
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


def save_transformer(model: nn.Module, folder: str | Path, max_shard_size=DEFAULT_SHARD_BYTES) -> Path:
    """config.json + model.safetensors (or shards + index), Wan original key names, dtype as held."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"_class_name": CLASS_NAME, **model.config.to_dict()}
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
        return json.loads((folder / CONFIG_NAME).read_text()).get("_class_name") == CLASS_NAME
    except ValueError:
        return False


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors``, or of each shard an index lists (our own saves only)."""
    return load_safetensors_set(path)


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` (assigning the tensors), failing loudly on any key or shape mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
        if keys:
            raise FlashI2VError(f"{source}: {len(keys)} {what} keys (first: {', '.join(keys[:3])}): the weights do not match this config")
    model.load_state_dict(state, strict=True, assign=True)


def read_pretrained(folder: str | Path) -> tuple[TransformerConfig, dict[str, torch.Tensor]]:
    """The config and the tensors of a folder written by ``save_transformer`` (single file or sharded)."""
    folder = Path(folder)
    path = weights_path(folder)
    if not (folder / CONFIG_NAME).is_file() or path is None:
        raise FlashI2VError(f"transformer folder '{folder}' has no config.json + model.safetensors: "
                            "pass a folder written by save_pretrained or `flashi2v convert`")
    config = read_json_object(folder / CONFIG_NAME)
    return TransformerConfig.from_dict(config, source=str(folder / CONFIG_NAME)), read_state(path)
