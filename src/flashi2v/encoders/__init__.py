"""The frozen components around the transformer: latent codecs and text encoders.

Thin adapters over the maintained libraries, so released weights load unchanged and the numerics match
Wan2.1: ``wan_vae`` (diffusers' AutoencoderKLWan; latents normalised per channel with the VAE's own
latents_mean / latents_std), ``umt5`` (transformers' UMT5; the text embedding zeroed beyond each prompt's real
length); and the built-in model's own: ``video_autoencoder`` (a small learned causal video autoencoder), ``block_pca``
(the linear codec of its first edition), ``sentence`` (a packaged MiniLM),
``precomputed`` (a table of caption embeddings). ``loading`` picks the class from what a folder holds.
"""

from .block_pca import BlockPCACodec
from .loading import load_text_encoder, load_vae
from .precomputed import PrecomputedTextEncoder
from .sentence import SentenceTextEncoder
from .umt5 import UMT5TextEncoder
from .video_autoencoder import CausalVideoAutoencoder
from .wan_vae import WanVAE

__all__ = ["BlockPCACodec", "CausalVideoAutoencoder", "PrecomputedTextEncoder", "SentenceTextEncoder", "UMT5TextEncoder", "WanVAE",
           "load_text_encoder", "load_vae"]
