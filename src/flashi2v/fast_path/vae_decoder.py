"""The Wan VAE's decoder with leaner low-precision forwards (``WanVAE.enable_bf16_decode`` runs through them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # diffusers is imported where a Wan VAE is built, so the other components load without it
    from diffusers import AutoencoderKLWan

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
