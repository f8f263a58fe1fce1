"""Random tiny components: a complete pipeline of the real classes with random weights, built offline.

A feature for smoke runs: ``flashi2v generate`` when no model is given and no trained built-in model is
available, and ``flashi2v train`` with ``components: tiny-random`` (the loop end to end in seconds, no
downloads). A random model has learned nothing: its videos are noise-like, and the CLI says so. The tests
use the same builders (every code path of the real pipeline in a few MB).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

from .encoders import UMT5TextEncoder, WanVAE
from .model import FlashI2VTransformer
from .pipeline import FlashI2VPipeline

TINY_Z_DIM = 16
TINY_TEXT_DIM = 32

_WORDS = (
    "a the an of in on at with and is are cat dog bird car person woman man child runs walks flies drives "
    "swims jumps red blue green white black small big slowly quickly grass street city night day sky water "
    "camera moves pans zooms video high quality blurry static left right up down zoom in out still"
).split()


def make_tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    """Wan-shaped VAE (temporal factor 4, spatial factor 8, z_dim 16) with a few thousand weights.

    latents_mean / latents_std are non-trivial so tests can tell whether the per-channel
    normalisation is really applied.
    """
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=TINY_Z_DIM,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        latents_mean=[round(-0.8 + 0.1 * i, 3) for i in range(TINY_Z_DIM)],
        latents_std=[round(0.5 + 0.2 * i, 3) for i in range(TINY_Z_DIM)],
    )
    return vae.eval()


def make_tiny_tokenizer() -> T5Tokenizer:
    """A real Unigram T5 tokenizer over a small English vocabulary plus single characters (nothing unknown).

    Built from an explicit (piece, score) list, so no sentencepiece training or hub access is needed;
    pad=0, eos=1, unk=2 as in umT5.
    """
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -3.0) for w in _WORDS]
    vocab += [(c, -6.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.!?'-"]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def make_tiny_text_encoder(vocab_size: int, seed: int = 0) -> UMT5EncoderModel:
    """UMT5 encoder with d_model 32 and 2 layers (the tiny transformer preset's text_dim)."""
    torch.manual_seed(seed)
    config = UMT5Config(
        vocab_size=vocab_size, d_model=TINY_TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
    )
    return UMT5EncoderModel(config).eval()


def random_tiny_pipeline(seed: int = 0, proj_kernel: str = "1x3x3"):
    """A complete FlashI2VPipeline of tiny random components (the 'tiny' transformer preset)."""
    torch.manual_seed(seed)
    transformer = FlashI2VTransformer.from_config("tiny", proj_kernel=proj_kernel).eval()
    tokenizer = make_tiny_tokenizer()
    text_encoder = UMT5TextEncoder(make_tiny_text_encoder(len(tokenizer), seed), tokenizer)
    defaults = {"num_frames": 17, "height": 128, "width": 128, "steps": 20}
    return FlashI2VPipeline(transformer, WanVAE(make_tiny_vae(seed)), text_encoder, defaults=defaults)
