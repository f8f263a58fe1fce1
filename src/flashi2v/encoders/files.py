"""Checks and reads of component folders that fail with one line naming the file and the fix, never with
a traceback from safetensors, json, transformers or diffusers."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from flashi2v.errors import FlashI2VError

WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
)


def check_model_folder(folder: str | Path, what: str, example: str) -> Path:
    """Fail early with a fix-naming message instead of a library traceback deep inside from_pretrained."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FlashI2VError(f"{what} folder '{folder}' does not exist: pass the {example} folder (see README)")
    if not (folder / "config.json").is_file():
        hint = f" (did you mean '{folder / example}'?)" if (folder / example / "config.json").is_file() else ""
        raise FlashI2VError(
            f"{what} folder '{folder}' has no config.json{hint}: pass the {example}/ subfolder of a "
            "Wan2.1-T2V-1.3B-Diffusers-style folder (see README)"
        )
    if not any((folder / name).is_file() for name in WEIGHT_NAMES):
        raise FlashI2VError(
            f"{what} folder '{folder}' has config.json but no weights (*.safetensors): "
            "download the complete Wan2.1-T2V-1.3B-Diffusers folder (see README)"
        )
    return folder


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def check_safetensors(path: Path, fix: str) -> None:
    """The file's header parses and its tensors end exactly at the end of the file (a truncated download or
    an interrupted copy fails here, named, before a library reads it)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or length > size - 8:
                raise ValueError("the header is cut off")
            header = json.loads(f.read(length))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise FlashI2VError(f"weights file '{path}' is corrupt ({_first_line(err)}): {fix}") from None
    if 8 + length + max(ends, default=0) != size:
        raise FlashI2VError(f"weights file '{path}' is truncated or corrupt ({size} bytes, its header describes "
                            f"{8 + length + max(ends, default=0)}): {fix}")


def check_weight_files(folder: Path, fix: str) -> None:
    """``check_safetensors`` for every safetensors file in ``folder``."""
    for path in sorted(folder.glob("*.safetensors")):
        check_safetensors(path, fix)


def load_safetensors(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """Every tensor of one safetensors file, or one line naming it and the fix."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FlashI2VError(f"'{path}' is missing: {fix}")
    check_safetensors(path, fix)
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError
        raise FlashI2VError(f"weights file '{path}' is corrupt ({_first_line(err)}): {fix}") from None


def library_error(what: str, folder: Path, err: Exception, fix: str) -> FlashI2VError:
    """A diffusers / transformers loading failure as one line naming the folder and the fix."""
    return FlashI2VError(f"cannot load the {what} from '{folder}' ({_first_line(err)}): {fix}")
