"""flashi2v: FlashI2V image-to-video generation (Fourier-guided latent shifting on a Wan2.1 DiT)."""

from .config import PRESETS, TransformerConfig, preset
from .errors import FlashI2VError
from .model import FlashI2VTransformer
from .pipeline import FlashI2VOutput, FlashI2VPipeline, export_to_mp4

__all__ = [
    "FlashI2VError",
    "FlashI2VOutput",
    "FlashI2VPipeline",
    "FlashI2VTransformer",
    "PRESETS",
    "TransformerConfig",
    "export_to_mp4",
    "preset",
]
__version__ = "0.1.0"
