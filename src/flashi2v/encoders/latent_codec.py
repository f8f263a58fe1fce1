"""What the built-in model's codecs share: the VAE interface's sizes and the check of the video they take."""

from __future__ import annotations

import torch

from flashi2v.errors import FlashI2VError


class LatentCodec(torch.nn.Module):
    """Base of a codec with ``channels`` latent channels, ``spatial`` x smaller frames, frame 0 alone and then
    groups of ``temporal`` frames (the Wan VAE's layout), and a ``mean`` buffer on its device."""

    channels: int
    spatial: int
    temporal: int

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

    def check_video(self, pixels: torch.Tensor, what: str) -> None:
        """One line naming the problem: B x 3 x (temporal k + 1) x H x W, sides divisible by ``spatial``."""
        if pixels.ndim != 5:
            raise FlashI2VError(f"{what} needs B x 3 x F x H x W video, got shape {tuple(pixels.shape)}")
        _, c, f, h, w = pixels.shape
        t, s = self.temporal, self.spatial
        if c != 3 or (f - 1) % t or h % s or w % s:
            raise FlashI2VError(f"{what} needs RGB video of {t}k+1 frames with sizes divisible by {s}, "
                                f"got {c} channels, {f}x{h}x{w}")
