"""Model configuration: one dataclass whose fields are the transformer's constructor keywords.

Field names follow the Wan2.1 / FlashI2V configs so a reader can hold them side by side.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import FlashI2VError

PROJ_KERNELS = ("1x3x3", "3x3x3")
# How the condition image enters the model (flashi2v.paradigms, one strategy each); named here so that a
# config can be checked without importing torch.
PARADIGM_NAMES = ("flashi2v", "latent-shift", "fourier", "repeat-concat", "zero-pad-concat", "inpaint")
CONCAT_PARADIGMS = ("repeat-concat", "zero-pad-concat", "inpaint")  # these widen the DiT's input (in_dim > out_dim)
# The layers a LoRA adapts by default (flashi2v.lora): attention (self and cross: q, k, v, o) and FFN projections,
# named relative to a block; here so that a training config can be checked without importing torch.
LORA_TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")


@dataclass(frozen=True)
class TransformerConfig:
    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    text_len: int = 512
    patch_size: tuple[int, int, int] = (1, 2, 2)
    cross_attn_norm: bool = True
    eps: float = 1e-6
    proj_kernel: str = "1x3x3"
    # The I2V paradigm the model is trained and sampled with; in_dim = out_dim + its extra input channels.
    paradigm: str = "flashi2v"

    def __post_init__(self):
        self.validate()
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        object.__setattr__(self, "eps", float(self.eps))
        if self.dim % self.num_heads:
            raise FlashI2VError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}: pick dim = heads * head_dim")
        if (self.dim // self.num_heads) % 2:
            raise FlashI2VError(f"head dim {self.dim // self.num_heads} is odd: RoPE needs an even head dim")
        if self.proj_kernel not in PROJ_KERNELS:
            raise FlashI2VError(f"proj_kernel {self.proj_kernel!r} is not supported: use one of {PROJ_KERNELS}")
        if self.paradigm not in PARADIGM_NAMES:
            raise FlashI2VError(f"paradigm {self.paradigm!r} is not supported: use one of {', '.join(PARADIGM_NAMES)}")
        if (self.paradigm in CONCAT_PARADIGMS) != (self.in_dim > self.out_dim):
            need = "more input channels than output channels" if self.paradigm in CONCAT_PARADIGMS else "in_dim == out_dim"
            raise FlashI2VError(f"paradigm {self.paradigm!r} needs {need}, got in_dim {self.in_dim}, out_dim "
                                f"{self.out_dim}: build the config with paradigms.paradigm_config")

    def validate(self, source: str = "transformer config") -> None:
        """Every field has its type and a usable value; a config.json with ``"dim": "1536"``, ``0`` or a list
        would otherwise fail deep inside torch. The message names ``source`` and the key."""
        def bad(name: str, want: str) -> FlashI2VError:
            value = getattr(self, name)
            return FlashI2VError(f"{source}: key '{name}' must be {want}, got {value!r} ({type(value).__name__}); "
                                 "fix the value or re-save the model")

        for name in ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "freq_dim", "text_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "a positive integer")
        patch = self.patch_size
        if (not isinstance(patch, (list, tuple)) or len(patch) != 3
                or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patch)):
            raise bad("patch_size", "3 positive integers [t, h, w]")
        if not isinstance(self.cross_attn_norm, bool):
            raise bad("cross_attn_norm", "true or false")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 < self.eps < 1:
            raise bad("eps", "a small positive number such as 1e-6")
        if not isinstance(self.proj_kernel, str):
            raise bad("proj_kernel", f"one of {PROJ_KERNELS}")
        if not isinstance(self.paradigm, str):
            raise bad("paradigm", f"one of {PARADIGM_NAMES}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "transformer config.json") -> TransformerConfig:
        """Build from a config.json mapping; wrong types, unknown keys or a non-mapping name ``source``."""
        if not isinstance(d, dict):
            raise FlashI2VError(f"{source} must hold a JSON object of config keys, not a {type(d).__name__}: "
                                "is this a flashi2v config.json?")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"_class_name", "model_type"})
        if unknown:
            raise FlashI2VError(f"{source}: unknown transformer config keys {unknown}: is this a flashi2v config.json?")
        fields = {k: v for k, v in d.items() if k in names}
        # Validate with the file's name before __post_init__ (which can only say "transformer config").
        probe = object.__new__(cls)
        for f in dataclasses.fields(cls):
            object.__setattr__(probe, f.name, fields.get(f.name, f.default))
        probe.validate(source)
        return cls(**fields)


PRESETS: dict[str, TransformerConfig] = {
    # Wan2.1-T2V-1.3B backbone; the released FlashI2V-1.3B weights use the 3x3x3 projection.
    "flashi2v-1.3b": TransformerConfig(),
    "flashi2v-14b": TransformerConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    # The built-in model, second edition (the shipped one): latents of its causal video autoencoder (8x8 pixels x 4
    # frames -> 64 channels), one latent pixel per token (the same 16 x 16 tokens per latent frame at 128 x 128 as the
    # first edition's 2 x 2 patches of 4 x 4 blocks), all-MiniLM-L6-v2 text (384-d).
    "builtin-2": TransformerConfig(dim=320, ffn_dim=1280, num_heads=5, num_layers=6, in_dim=64, out_dim=64,
                                   text_dim=384, freq_dim=128, text_len=32, patch_size=(1, 1, 1)),
    # The built-in model's first edition: block-PCA latents (4x4 pixels x 4 frames -> 16 channels), all-MiniLM-L6-v2
    # text (384-d); the leakage study's backbone.
    "builtin": TransformerConfig(dim=320, ffn_dim=1280, num_heads=5, num_layers=6, in_dim=16, out_dim=16, text_dim=384,
                                 freq_dim=128, text_len=32),
    # The built-in backbone's interfaces (block-PCA latents, MiniLM text) at test size: the leakage study's CPU smoke run.
    "builtin-tiny": TransformerConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=1, in_dim=16, out_dim=16, text_dim=384,
                                      freq_dim=32, text_len=32),
    # For tests: every code path of the 1.3B (3-D RoPE split, cross-attn norm, both embeddings) in KBs.
    "tiny": TransformerConfig(dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=32, freq_dim=32, text_len=16),
}


def preset(name: str, **overrides) -> TransformerConfig:
    """A named configuration, optionally with some fields replaced."""
    if name not in PRESETS:
        raise FlashI2VError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
