"""WanVAE: the Wan2.1 causal 3-D VAE (diffusers' AutoencoderKLWan), run in float32 without gradient."""

from __future__ import annotations

import contextlib
from pathlib import Path

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # diffusers is imported where a Wan VAE is built, so the other components load without it
    from diffusers import AutoencoderKLWan

from flashi2v.errors import FlashI2VError
from flashi2v.fast_path.vae_decoder import fuse_wan_decoder

from .files import check_model_folder, check_weight_files, library_error

class WanVAE(torch.nn.Module):
    """The Wan2.1 causal 3-D VAE, kept in float32 and run without gradient.

    Weights stay float32 (the VAE is small next to the DiT), and encoding always computes in float32.
    Decoding computes in ``decode_dtype``: float32 by default; ``torch.bfloat16`` (``enable_bf16_decode``)
    decodes with bf16 copies of the decoder's weights made for that call (the stored weights are untouched)
    and bf16 activations, through the leaner forwards of ``fuse_wan_decoder`` (``fuse_decoder``; a float32
    decode is exactly diffusers'): faster, with about half the activation memory, pixels slightly different
    from the float32 decode (docs/performance.md, "Use it"). No gradient
    because FlashI2V never trains the VAE. ``cudnn_benchmark`` lets cuDNN time its convolution
    algorithms for each new shape during the decode (process-wide flag restored afterwards).
    """

    def __init__(self, vae: AutoencoderKLWan, decode_dtype: torch.dtype = torch.float32,
                 cudnn_benchmark: bool = False):
        super().__init__()
        self.vae = vae.float().eval().requires_grad_(False)
        self.decode_dtype = decode_dtype
        self.cudnn_benchmark = cudnn_benchmark
        self.fuse_decoder = True  # low-precision decode through fuse_wan_decoder's leaner forwards
        self._decoder_fused = False

    def enable_bf16_decode(self, enabled: bool = True) -> "WanVAE":
        """Decode in bfloat16 (weights cast per call, activations bf16); ``enabled=False``: float32 again."""
        self.decode_dtype = torch.bfloat16 if enabled else torch.float32
        return self

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu", tiling: bool = False) -> "WanVAE":
        """Load from the ``vae/`` subfolder of a Wan2.1-T2V-Diffusers folder (config.json + safetensors)."""
        folder = check_model_folder(folder, "VAE", "vae")
        fix = "re-download the vae/ folder (see README)"
        check_weight_files(folder, fix)
        from diffusers import AutoencoderKLWan

        try:
            vae = AutoencoderKLWan.from_pretrained(folder, torch_dtype=torch.float32, local_files_only=True)
        except Exception as err:  # diffusers, safetensors and torch raise many types for a bad file
            raise library_error("Wan VAE", folder, err, fix) from None
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
        dtype = self.decode_dtype or torch.float32
        with self._float32(), self._cudnn_flags():
            if dtype == torch.float32:
                return self.vae.decode(raw).sample.float().clamp(-1.0, 1.0)
            # low precision: the decoder's weights cast for this call only (functional_call swaps them in
            # and restores the float32 ones afterwards), activations in ``dtype`` from the first conv on
            if self.fuse_decoder != self._decoder_fused:
                self._decoder_fused = fuse_wan_decoder(self.vae, self.fuse_decoder)
            weights = {"vae." + name: p.to(dtype) for name, p in self.vae.named_parameters()
                       if name.startswith(("decoder.", "post_quant_conv."))}
            pixels = torch.func.functional_call(_Decoder(self.vae), weights, (raw.to(dtype),), strict=False)
            return pixels.float().clamp(-1.0, 1.0)

    @contextlib.contextmanager
    def _cudnn_flags(self):
        """cudnn.benchmark on for the decode when asked (restored afterwards); other cuDNN flags untouched."""
        if not self.cudnn_benchmark or self.device.type != "cuda":
            yield
            return
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = before


class _Decoder(torch.nn.Module):
    """``vae.decode(z).sample`` as a module forward, so ``torch.func.functional_call`` can run it with
    other weights. Built per call: not a registered submodule of WanVAE (its state dict is unchanged)."""

    def __init__(self, vae: AutoencoderKLWan):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample
