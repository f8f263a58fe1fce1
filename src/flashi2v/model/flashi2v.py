"""FlashI2VTransformer: the Wan2.1 DiT plus FlashI2V's two additions (docs/method.md sections 4-6).

- ``learnable_proj`` (phi): maps the condition latent s to the shift phi(s) applied to both ends of
  the flow. Applied from outside the DiT forward (the flow code subtracts it), once per generation.
- ``fourier_embedding``: a second patch embedding for the high-frequency magnitude of s, added to
  the ordinary patch embedding of the DiT input.
Both start at zero output, so a freshly initialised FlashI2V is exactly the T2V backbone.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import TransformerConfig, preset
from ..errors import FlashI2VError
from .attention import RopeCache
from .io import (
    DEFAULT_SHARD_BYTES,
    load_state_dict_strict,
    read_pretrained,
    save_transformer,
)
from .wan import WanBlock, WanHead, patchify, sinusoidal_embedding, unpatchify


def _xavier_2d_(weight: torch.Tensor) -> None:
    """Xavier-uniform on a conv weight viewed as out x (in * kernel), as Wan inits its patch embedding."""
    nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))


class LearnableProjection(nn.Module):
    """phi: Conv3d(C -> 4C) -> SiLU -> Conv3d(4C -> C), 'same' padding, kept and evaluated in float32.

    ``1x3x3``: phi is applied to the single condition frame, then broadcast over T.
    ``3x3x3``: the condition is repeated to T frames first, then phi is applied, so the first and last
    latent frames see zero temporal padding and differ from the middle ones (the released weights).
    """

    def __init__(self, channels: int, kernel: str):
        super().__init__()
        self.kernel = kernel
        k = tuple(int(n) for n in kernel.split("x"))
        pad = tuple(n // 2 for n in k)
        self.proj = nn.Sequential(
            nn.Conv3d(channels, 4 * channels, k, padding=pad), nn.SiLU(), nn.Conv3d(4 * channels, channels, k, padding=pad)
        )

    def reset_parameters(self) -> None:
        _xavier_2d_(self.proj[0].weight)
        nn.init.zeros_(self.proj[0].bias)
        nn.init.zeros_(self.proj[2].weight)
        nn.init.zeros_(self.proj[2].bias)

    def forward(self, s: torch.Tensor, num_frames: int) -> torch.Tensor:
        """s: B x C x 1 x H x W condition latent -> phi(s): B x C x num_frames x H x W, float32."""
        with torch.autocast(s.device.type, enabled=False):
            x = s.float()
            if self.kernel == "3x3x3":
                x = x.expand(-1, -1, num_frames, -1, -1)
            first, last = self.proj[0], self.proj[2]
            x = F.conv3d(x, first.weight.float(), first.bias.float(), padding=first.padding)
            x = F.conv3d(F.silu(x), last.weight.float(), last.bias.float(), padding=last.padding)
            return x.expand(-1, -1, num_frames, -1, -1) if self.kernel == "1x3x3" else x


class FlashI2VTransformer(nn.Module):
    """Velocity predictor v(z, t, c, s_high). State-dict keys use the Wan2.1 original layout."""

    def __init__(self, config: TransformerConfig | None = None):
        """``config`` holds every hyperparameter (default: the 1.3B); it is saved as config.json beside the weights."""
        super().__init__()
        cfg = config if config is not None else TransformerConfig()
        if not isinstance(cfg, TransformerConfig):
            raise FlashI2VError(f"FlashI2VTransformer takes a TransformerConfig, not {type(cfg).__name__}: "
                                "use FlashI2VTransformer.from_config for a preset name or a dict")
        self.config = cfg
        dim, in_dim, p = cfg.dim, cfg.in_dim, cfg.patch_size
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=p, stride=p)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(WanBlock(dim, cfg.ffn_dim, cfg.num_heads, cfg.cross_attn_norm, cfg.eps)
                                    for _ in range(cfg.num_layers))
        self.head = WanHead(dim, cfg.out_dim, p, cfg.eps)
        # Both FlashI2V modules read the condition latent, which has the latent's channels (out_dim); in_dim is
        # wider only for the concatenating paradigms, whose extra channels enter through the patch embedding.
        self.fourier_embedding = nn.Sequential(nn.Conv3d(cfg.out_dim, dim, kernel_size=p, stride=p),
                                               nn.Conv3d(dim, dim, 1))
        self.learnable_proj = LearnableProjection(cfg.out_dim, cfg.proj_kernel)
        self.rope = RopeCache(cfg.head_dim)
        self.context_parallel = None  # set by flashi2v.context_parallel.apply_context_parallel
        self.step_cache = None  # set by flashi2v.step_cache.apply_step_cache (sampling only)
        self.block_swap = None  # set by flashi2v.offload.apply_block_swap: blocks visit the GPU one at a time
        self.defer_residuals = False  # True: each block's last update is added by the next norm (fuse_norms)
        self.checkpoint_blocks = False  # True once flashi2v.train.parallel.apply_activation_checkpointing wraps blocks
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: TransformerConfig | str | dict, **overrides) -> "FlashI2VTransformer":
        """Build from a TransformerConfig, a preset name ('flashi2v-1.3b', 'flashi2v-14b', 'tiny') or a dict."""
        if isinstance(config, str):
            return cls(preset(config, **overrides))
        if isinstance(config, dict):
            config = TransformerConfig.from_dict(config)
        return cls(dataclasses.replace(config, **overrides) if overrides else config)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Wan2.1's initialisation for the backbone; zero-output init for the two FlashI2V modules."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        _xavier_2d_(self.patch_embedding.weight)
        nn.init.zeros_(self.patch_embedding.bias)
        # A concatenating paradigm's extra input channels start at zero: every paradigm starts as the T2V backbone.
        nn.init.zeros_(self.patch_embedding.weight[:, self.config.out_dim:])
        for m in (self.text_embedding[0], self.text_embedding[2], self.time_embedding[0], self.time_embedding[2]):
            nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)
        _xavier_2d_(self.fourier_embedding[0].weight)
        nn.init.zeros_(self.fourier_embedding[0].bias)
        nn.init.zeros_(self.fourier_embedding[1].weight)
        nn.init.zeros_(self.fourier_embedding[1].bias)
        self.learnable_proj.reset_parameters()

    # -- forward ---------------------------------------------------------------------------------

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """B x L x text_dim -> B x text_len x dim; shorter contexts are zero-padded to text_len as Wan does."""
        length = self.config.text_len
        if context.shape[1] > length:
            raise FlashI2VError(f"text context has {context.shape[1]} tokens, more than text_len={length}: truncate the prompt embedding")
        if context.shape[1] < length:
            context = F.pad(context, (0, 0, 0, length - context.shape[1]))
        w = self.text_embedding[0].weight
        return self.text_embedding(context.to(w.dtype))

    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t (B,) = 1000 * sigma -> (e: B x dim, e0: B x 6 x dim), both float32."""
        w = self.time_embedding[0].weight
        e = self.time_embedding(sinusoidal_embedding(t, self.config.freq_dim).to(w.dtype))
        e0 = self.time_projection(e).unflatten(1, (6, self.config.dim))
        return e.float(), e0.float()

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        fourier_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the flow velocity.

        x: B x C x T x H x W, the (already latent-shifted) noisy latent z_sigma - phi(s).
        t: B, the timestep 1000 * sigma.
        context: B x L x text_dim text embeddings (L <= text_len).
        fourier_features: B x C x T x H x W high-frequency magnitude of s (None: T2V backbone only).
        Returns the velocity, float32, shape of x.
        """
        b, _, f, h, w = x.shape
        pt, ph, pw = self.config.patch_size
        if f % pt or h % ph or w % pw:
            raise FlashI2VError(f"latent size {f}x{h}x{w} is not divisible by the patch size {self.config.patch_size}")
        grid = (f // pt, h // ph, w // pw)
        tokens = self.embed_patches(x, fourier_features)
        e, e0 = self.embed_time(t.expand(b) if t.ndim == 0 else t)
        context = self.embed_text(context)
        rope = self.rope(grid, x.device)
        cp = self.context_parallel
        if cp is not None:  # each rank keeps a slice of the tokens (and of the RoPE table)
            tokens, rope = cp.shard_tokens(tokens), cp.shard_rope(rope)
        if self.step_cache is not None:  # may reuse blocks 1..N-1 from an earlier step (flashi2v.step_cache)
            tokens, pending = self.step_cache.run_blocks(self, tokens, e0, context, rope, t), None
        else:
            tokens, pending = self.run_blocks(tokens, e0, context, rope)
        out = self.head(tokens, e, residual=pending)
        if cp is not None:
            out = cp.gather_tokens(out)
        return unpatchify(out, grid, self.config.patch_size).float()

    def embed_patches(self, x: torch.Tensor, fourier_features: torch.Tensor | None = None) -> torch.Tensor:
        """z_sigma (and s_high) -> B x L x dim tokens: the patch embedding, plus the Fourier embedding.

        Both first convs have kernel = stride, so they are linear maps of non-overlapping patches and run as
        matmuls on ``patchify``'d input: the tokens come out as B x L x dim, where a conv's B x dim x L output
        would need a transposed copy (at 480p on an H100 that copy took longer than the two convs).
        """
        p, w = self.config.patch_size, self.patch_embedding.weight
        tokens = F.linear(patchify(x.to(w.dtype), p), w.flatten(1), self.patch_embedding.bias)
        if fourier_features is not None:
            first, second = self.fourier_embedding
            f = F.linear(patchify(fourier_features.to(w.dtype), p), first.weight.flatten(1), first.bias)
            tokens = tokens + F.linear(f, second.weight.flatten(1), second.bias)
        return tokens

    def run_blocks(self, tokens, e0, context, rope) -> tuple[torch.Tensor, tuple | None]:
        """All blocks in order -> (tokens, pending update). With ``defer_residuals`` (set by
        ``flashi2v.fast_path.fusion.fuse_norms``, for inference) each block leaves its last residual update (y, gate)
        to the next block's first norm, which adds it in the same kernel, and the last one to the head's
        norm; without, pending is None."""
        if not self.defer_residuals:
            for block in self.blocks:
                tokens = self.run_block(block, tokens, e0, context, rope)
            return tokens, None
        pending = None
        for block in self.blocks:
            tokens, pending = self.call_block(block, tokens, e0, context, rope, residual=pending, defer=True)
        return tokens, pending

    def run_block(self, block: nn.Module, tokens, e0, context, rope) -> torch.Tensor:
        """One transformer block. Activation checkpointing, when on, runs inside the block's own call
        (flashi2v.train.parallel.apply_activation_checkpointing), not here: a compiled block must trace
        the checkpoint for a selective policy to reach the compiled graph."""
        return self.call_block(block, tokens, e0, context, rope)

    def call_block(self, block: nn.Module, *args, **kwargs):
        """``block(*args, **kwargs)``; with block swapping, its weights are brought to the device around the call
        (here, outside the block: a compiled block must not trace the copies)."""
        if self.block_swap is None:
            return block(*args, **kwargs)
        with self.block_swap.resident(block):
            return block(*args, **kwargs)

    # -- persistence -----------------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike, max_shard_size=DEFAULT_SHARD_BYTES) -> None:
        """Write config.json + model.safetensors (Wan original key names; sharded with an index when large)."""
        save_transformer(self, folder, max_shard_size)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device="cpu", dtype: torch.dtype | None = None) -> "FlashI2VTransformer":
        """Load a folder written by ``save_pretrained``, strictly. Weights keep their stored dtype unless ``dtype`` is given.

        Other layouts (Wan2.1, diffusers, the authors' checkpoints): ``flashi2v.weights.load_transformer_weights``.
        """
        config, state = read_pretrained(folder)
        with torch.device("meta"):
            model = cls(config)
        state = {k: v.to(device=device, dtype=dtype if dtype and v.is_floating_point() else v.dtype)
                 for k, v in state.items()}
        load_state_dict_strict(model, state, source=str(folder))
        return model
