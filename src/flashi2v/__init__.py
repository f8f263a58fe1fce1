"""flashi2v: FlashI2V image-to-video generation (Fourier-guided latent shifting on a Wan2.1 DiT).

The names below are imported on first use (PEP 562), so ``import flashi2v.cli`` and ``flashi2v --help``
do not pay for torch, diffusers and transformers.
"""

from .errors import FlashI2VError, FlashI2VFileError, FlashI2VWarning
from .settings import GenerationSettings

_LAZY = {
    "PRESETS": ".config",
    "TransformerConfig": ".config",
    "preset": ".config",
    "FlashI2VTransformer": ".model",
    "FlashI2VOutput": ".pipeline",
    "FlashI2VPipeline": ".pipeline",
    "export_to_mp4": ".pipeline",
    "resolve_device": ".device",
}

__all__ = [
    "FlashI2VError",
    "FlashI2VFileError",
    "FlashI2VOutput",
    "FlashI2VPipeline",
    "FlashI2VTransformer",
    "FlashI2VWarning",
    "GenerationSettings",
    "PRESETS",
    "TransformerConfig",
    "export_to_mp4",
    "preset",
    "resolve_device",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
