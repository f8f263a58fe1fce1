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
