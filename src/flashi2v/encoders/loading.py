"""Which class a component folder holds: the VAE or the codec, umT5 or a sentence encoder or a table."""

from __future__ import annotations

from pathlib import Path

import torch

from .block_pca import BlockPCACodec
from ..jsonfile import read_json
from .precomputed import PrecomputedTextEncoder
from .sentence import SentenceTextEncoder
from .umt5 import UMT5TextEncoder
from .video_autoencoder import CausalVideoAutoencoder
from .wan_vae import WanVAE

def load_vae(folder: str | Path, device="cpu", tiling: bool = False):
    """The latent codec stored in ``folder``: the Wan VAE (diffusers), or one of the built-in model's codecs
    (the learned causal autoencoder, or the block-PCA codec of its first edition)."""
    config = Path(folder) / "config.json"
    spec = read_json(config) if config.is_file() else None
    name = spec.get("_class_name") if isinstance(spec, dict) else None
    if name == BlockPCACodec.__name__:
        return BlockPCACodec.from_pretrained(folder, device=device)
    if name == CausalVideoAutoencoder.__name__:
        return CausalVideoAutoencoder.from_pretrained(folder, device=device)
    return WanVAE.from_pretrained(folder, device=device, tiling=tiling)


def load_text_encoder(text_encoder_folder: str | Path, tokenizer_folder: str | Path, device="cpu",
                      dtype: torch.dtype = torch.float32):
    """umT5 (transformers), a packaged sentence encoder, or a precomputed table, by what the folder holds."""
    folder = Path(text_encoder_folder)
    if (folder / SentenceTextEncoder.SOURCE).is_file():
        return SentenceTextEncoder.from_pretrained(folder, device=device)
    if (folder / PrecomputedTextEncoder.FILE).is_file():
        return PrecomputedTextEncoder.from_pretrained(folder)
    return UMT5TextEncoder.from_pretrained(folder, tokenizer_folder, device=device, dtype=dtype)
