"""CausalVideoAutoencoder: the built-in model's learned latent codec (small, causal in time, 8x spatial).

Laid out as the Wan VAE is: frame 0 is encoded on its own, every later group of ``temporal`` frames into one
latent frame, so F = 4k + 1 frames give k + 1 latent frames of H/8 x W/8. Causal: latent frame t depends on
frames 0 .. 4t only, and decoded group t on latent frames 0, t - 1 and t only. Plain 2D convolutions (time lives
in the channels), so a 17-frame 128 x 128 clip decodes on a CPU in a fraction of a second.

Why each piece:
- the encoder sees, for a group, the frame before it as well: camera motion is then a shift of known content;
- the decoder of group t sees latent frame 0 (the sharpest view of the scene: the condition image's frame) and
  latent frame t - 1 beside latent frame t, so content the camera moved keeps frame 0's detail;
- latents are normalised per channel (frame 0 and the groups apart, as their statistics differ) so the DiT sees
  unit-variance channels; the statistics are measured on training clips after training (``fit_statistics``);
- a linear path beside the convolutions (``linear_path``): each 8 x 8 block of frame 0 (and 8 x 8 x 4 block of a
  group) goes to the latent by a linear map and back by another, fitted as principal components before training
  (``fit_linear``), with the convolutions' outputs added and starting at zero: training starts from the best linear
  codec of these sizes and learns what it misses, instead of learning the whole map from scratch;
- ``linear_encoder``: the encoder is the linear path alone (no encoder convolutions). Fitted once and then kept,
  its latent space is fixed before the decoder trains, so a DiT can train on those latents at the same time as the
  decoder, and the decoder learns to undo what a linear encoder drops (and a DiT gets wrong);
- during training the latents get Gaussian noise (``noise`` x their spread) before decoding, so the decoder stays
  well-behaved for the slightly-off latents a DiT generates.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FlashI2VError
from ..jsonfile import read_json
from .files import load_safetensors
from .latent_codec import LatentCodec


class ResBlock(nn.Module):
    """x + conv(silu(conv(silu(x)))): no normalisation, so a CPU runs only convolutions."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.bias)
        self.conv2.weight.data.mul_(0.1)  # each block starts close to the identity: a deep stack trains from step 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def upsample(in_channels: int, out_channels: int) -> nn.Sequential:
    """x2 by a 1x1 convolution to 4 x out_channels and a pixel shuffle (cheaper than a 3x3 at the high resolution)."""
    return nn.Sequential(nn.Conv2d(in_channels, 4 * out_channels, 1), nn.PixelShuffle(2))


class FrameEncoder(nn.Module):
    """One RGB frame -> features at 1/8 of its size (three stride-2 stages)."""

    def __init__(self, widths: tuple[int, int, int], features: int):
        super().__init__()
        w1, w2, w3 = widths
        self.layers = nn.Sequential(
            nn.Conv2d(3, w1, 4, stride=2, padding=1), ResBlock(w1),
            nn.Conv2d(w1, w2, 4, stride=2, padding=1), ResBlock(w2),
            nn.Conv2d(w2, w3, 4, stride=2, padding=1), ResBlock(w3),
            nn.Conv2d(w3, features, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FrameRenderer(nn.Module):
    """Features at 1/8 size -> one RGB frame (shared by frame 0 and every frame of a group).

    Nothing runs at full size: the last convolution, at half size, gives each pixel of a 2 x 2 block its own
    output (a pixel shuffle), because 3x3 convolutions at 128 x 128 cost most of a CPU decode's time."""

    def __init__(self, widths: tuple[int, int], features: int):
        super().__init__()
        w1, w2 = widths  # at 1/4 and 1/2 size
        self.layers = nn.Sequential(
            upsample(features, w1), ResBlock(w1), upsample(w1, w2), ResBlock(w2),
            nn.SiLU(), nn.Conv2d(w2, 3 * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CausalVideoAutoencoder(LatentCodec):
    """A small causal video autoencoder: B x 3 x (4k + 1) x H x W in [-1, 1] <-> B x C x (k + 1) x H/8 x W/8.

    The constructor is the config (saved as config.json beside the weights). ``channels``: latent channels;
    ``encoder_widths`` / ``renderer_widths``: the per-frame convolution widths from full size down / at 1/4 and
    1/2 size; ``features``: the width at 1/8 size; ``trunk``: the width of the per-latent-frame decoder trunk.
    """

    CONFIG = "config.json"
    WEIGHTS = "diffusion_pytorch_model.safetensors"
    spatial = 8
    temporal = 4

    def __init__(self, channels: int = 64, features: int = 128, trunk: int = 192,
                 encoder_widths: tuple[int, int, int] = (32, 64, 128), renderer_widths: tuple[int, int] = (64, 48),
                 linear_path: bool = True, linear_encoder: bool = False):
        super().__init__()
        if linear_encoder and not linear_path:
            raise ValueError("linear_encoder=True encodes by the linear path alone: it needs linear_path=True")
        self.channels, self.features, self.trunk, self.linear_path = channels, features, trunk, linear_path
        self.linear_encoder = linear_encoder
        self.encoder_widths, self.renderer_widths = tuple(encoder_widths), tuple(renderer_widths)
        t = self.temporal
        if not linear_encoder:
            self.frame_encoder = FrameEncoder(self.encoder_widths, features)
            self.encode_first = nn.Sequential(ResBlock(features), nn.Conv2d(features, channels, 3, padding=1))
            # a group's latent from its 4 frames' features and the frame before it
            self.encode_group = nn.Sequential(nn.Conv2d((t + 1) * features, trunk, 1), ResBlock(trunk),
                                              nn.Conv2d(trunk, channels, 3, padding=1))
        self.decode_first = nn.Sequential(nn.Conv2d(channels, trunk, 3, padding=1), ResBlock(trunk), ResBlock(trunk),
                                          nn.Conv2d(trunk, features, 1))
        # group t's 4 frames from latent frames 0, t - 1 and t
        self.decode_group = nn.Sequential(nn.Conv2d(3 * channels, trunk, 3, padding=1), ResBlock(trunk),
                                          ResBlock(trunk), nn.Conv2d(trunk, t * features, 1))
        self.renderer = FrameRenderer(self.renderer_widths, features)
        if linear_path:
            s = self.spatial  # a convolution with kernel = stride = 8 is a linear map of each 8 x 8 block
            self.linear_first = nn.Conv2d(3, channels, s, stride=s)
            self.linear_first_out = nn.ConvTranspose2d(channels, 3, s, stride=s)
            self.linear_group = nn.Conv2d(3 * t, channels, s, stride=s)
            self.linear_group_out = nn.ConvTranspose2d(channels, 3 * t, s, stride=s)
            convolutional_ends = [self.renderer.layers[-2]]
            if not linear_encoder:
                convolutional_ends += [self.encode_first[-1], self.encode_group[-1]]
            for last in convolutional_ends:
                nn.init.zeros_(last.weight)  # the convolutions add to the linear codec, from nothing at the start
                nn.init.zeros_(last.bias)
        # per-channel latent statistics (frame 0, groups): identity until fit_statistics
        self.register_buffer("mean0", torch.zeros(channels))
        self.register_buffer("std0", torch.ones(channels))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    # -- codec interface (as WanVAE; sizes and device from LatentCodec) ---------------------------------------

    def _check(self, pixels: torch.Tensor) -> None:
        self.check_video(pixels, "the video autoencoder")

    def encode_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised latents (what the statistics are measured on)."""
        self._check(pixels)
        b, _, f, h, w = pixels.shape
        x = pixels.to(self.mean.device, self.conv_dtype).transpose(1, 2).reshape(b * f, 3, h, w)
        starts = range(1, f, self.temporal)
        if self.linear_encoder:
            z = [0] * (1 + len(starts))
        else:
            e = self.frame_encoder(x).reshape(b, f, self.features, h // 8, w // 8)
            z = [self.encode_first(e[:, 0])]
            for start in starts:  # frames start-1 .. start+3: the one before and the group
                z.append(self.encode_group(e[:, start - 1:start + self.temporal].flatten(1, 2)))
        if self.linear_path:
            x = x.reshape(b, f, 3, h, w)
            z[0] = z[0] + self.linear_first(x[:, 0])
            for i, start in enumerate(starts, start=1):
                z[i] = z[i] + self.linear_group(x[:, start:start + self.temporal].flatten(1, 2))
        return torch.stack(z, dim=2).float()

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised latents -> pixels (unclamped: the training loss sees the raw output)."""
        b, c, n, h, w = z.shape
        z = z.to(self.conv_dtype)
        feats = [self.decode_first(z[:, :, 0])[:, None]]
        if n > 1:
            first = z[:, :, :1].expand(-1, -1, n - 1, -1, -1)
            trio = torch.cat([first, z[:, :, :-1], z[:, :, 1:]], dim=1)  # latent frames 0, t - 1, t
            trio = trio.transpose(1, 2).reshape(b * (n - 1), 3 * c, h, w)
            groups = self.decode_group(trio).reshape(b, (n - 1) * self.temporal, self.features, h, w)
            feats.append(groups)
        feats = torch.cat(feats, dim=1)  # B x F x features x h x w
        frames = feats.shape[1]
        x = self.renderer(feats.flatten(0, 1)).reshape(b, frames, 3, 8 * h, 8 * w)
        if self.linear_path:
            linear = [self.linear_first_out(z[:, :, 0])[:, None]]
            if n > 1:
                groups = self.linear_group_out(z[:, :, 1:].transpose(1, 2).flatten(0, 1))
                linear.append(groups.reshape(b, (n - 1) * self.temporal, 3, 8 * h, 8 * w))
            x = x + torch.cat(linear, dim=1)
        return x.transpose(1, 2).float()

    def forward(self, pixels: torch.Tensor, noise_scale: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """The training pass, raw pixels out: decode_raw(encode_raw(pixels) + noise_scale x spread x noise), the
        spread being each latent channel's std over the batch (frame 0 and the groups apart), ``noise_scale`` one
        number per clip. One call, so that data-parallel wrappers see the whole pass."""
        z = self.encode_raw(pixels)
        if noise is not None:
            spread = torch.cat([z[:, :, :1].std(dim=(0, 2, 3, 4), keepdim=True).expand_as(z[:, :, :1]),
                                z[:, :, 1:].std(dim=(0, 2, 3, 4), keepdim=True).expand_as(z[:, :, 1:])], dim=2)
            z = z + noise_scale.view(-1, 1, 1, 1, 1) * spread.detach() * noise
        return self.decode_raw(z)

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z.shape[2], z.device)
        return (z - mean) / std

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z.shape[2], z.device)
        return z * std + mean

    def _stats(self, latent_frames: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """1 x C x T x 1 x 1 mean and std: frame 0's for latent frame 0, the groups' for the rest."""
        def per_frame(first, later):
            return torch.stack([first] + [later] * (latent_frames - 1), dim=1)[None, :, :, None, None].to(device)
        return per_frame(self.mean0, self.mean), per_frame(self.std0, self.std)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """B x 3 x F x H x W in [-1, 1] (F = 4k + 1) -> B x C x (k + 1) x H/8 x W/8, unit variance per channel."""
        return self.normalise(self.encode_raw(pixels))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """B x C x (k + 1) x h x w -> B x 3 x (4k + 1) x 8h x 8w in [-1, 1]."""
        if latents.ndim != 5 or latents.shape[1] != self.channels:
            raise FlashI2VError(f"autoencoder latents must be B x {self.channels} x T x H x W, got {tuple(latents.shape)}")
        return self.decode_raw(self.denormalise(latents.float().to(self.device))).clamp(-1.0, 1.0)

    @property
    def conv_dtype(self) -> torch.dtype:
        return self.decode_first[0].weight.dtype

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters that decide the latents (what a frozen latent space keeps fixed)."""
        modules = [self.linear_first, self.linear_group] if self.linear_path else []
        if not self.linear_encoder:
            modules += [self.frame_encoder, self.encode_first, self.encode_group]
        return [p for m in modules for p in m.parameters()]

    def pixel_scales(self, latent_frames: int) -> torch.Tensor:
        """C x T: how far in pixels one unit of each normalised latent channel moves the decoded video, read from
        the linear path's decoder (for a linear encoder, its orthonormal basis: each channel's spread). What
        ``flow.channel_loss_weights`` weights a DiT's loss by (``recipe.channel_loss_power``)."""
        if not self.linear_encoder:
            raise FlashI2VError("pixel_scales needs an autoencoder with linear_encoder=True (a convolutional encoder "
                                "has no per-channel pixel scale): set recipe.channel_loss_power to 0")
        first = self.std0 * self.linear_first_out.weight.float().flatten(1).norm(dim=1)
        later = self.std * self.linear_group_out.weight.float().flatten(1).norm(dim=1)
        return torch.stack([first] + [later] * (latent_frames - 1), dim=1)

    @torch.no_grad()
    def fit_linear(self, videos: torch.Tensor) -> "CausalVideoAutoencoder":
        """The linear path as principal components of the blocks of ``videos`` (B x 3 x F x H x W in [-1, 1]): frame 0's
        8 x 8 x 3 blocks and the groups' 8 x 8 x 4 x 3 blocks, each centred on its per-channel mean (a constant per
        channel, which a convolution's bias can hold), projected on its ``channels`` leading components and back."""
        if not self.linear_path:
            raise FlashI2VError("this autoencoder has no linear path (linear_path=False): nothing to fit")
        self._check(videos)
        s, t, c = self.spatial, self.temporal, self.channels
        x = videos.double().cpu()
        first = x[:, :, 0]
        groups = x[:, :, 1:].reshape(x.shape[0], 3, -1, t, *x.shape[-2:]).permute(0, 2, 3, 1, 4, 5)
        groups = groups.reshape(-1, t * 3, *x.shape[-2:])  # channel = frame in the group x 3 + colour
        if not groups.shape[0]:
            raise FlashI2VError("fit_linear needs clips of at least 5 frames (frame 0 and one group)")
        for pixels, encode, decode in ((first, self.linear_first, self.linear_first_out),
                                       (groups, self.linear_group, self.linear_group_out)):
            centre = pixels.mean(dim=(0, 2, 3))  # per channel
            blocks = F.unfold(pixels - centre.view(1, -1, 1, 1), s, stride=s).transpose(1, 2).reshape(-1, pixels.shape[1] * s * s)
            if blocks.shape[1] < c:
                raise FlashI2VError(f"fit_linear: {c} latent channels exceed the {blocks.shape[1]} values of a block")
            _, _, vt = torch.linalg.svd(blocks[torch.randperm(len(blocks), generator=torch.Generator().manual_seed(0))[:200_000]],
                                        full_matrices=False)
            basis = vt[:c]  # c x D, rows orthonormal
            centre_block = centre.repeat_interleave(s * s)  # D, in unfold's (channel, y, x) order
            encode.weight.copy_(basis.reshape(c, -1, s, s).float())
            encode.bias.copy_((-basis @ centre_block).float())
            decode.weight.copy_(basis.reshape(c, -1, s, s).float())
            decode.bias.copy_(centre.float())
        return self

    @torch.no_grad()
    def fit_statistics(self, videos) -> "CausalVideoAutoencoder":
        """Per-channel mean and std of the raw latents of ``videos`` (an iterable of B x 3 x F x H x W batches)."""
        sums = torch.zeros(2, 3, self.channels, dtype=torch.float64)  # [first, groups] x [n, sum, sum of squares]
        for batch in videos:
            z = self.encode_raw(batch.to(self.device)).double().cpu()
            for i, part in enumerate((z[:, :, :1], z[:, :, 1:])):
                if part.shape[2]:
                    part = part.transpose(0, 1).reshape(self.channels, -1)
                    sums[i, 0] += part.shape[1]
                    sums[i, 1] += part.sum(1)
                    sums[i, 2] += (part**2).sum(1)
        for i, (mean_name, std_name) in enumerate((("mean0", "std0"), ("mean", "std"))):
            n, s, ss = sums[i]
            if n[0] < 2:
                raise FlashI2VError("fit_statistics needs clips of at least 5 frames (frame 0 and one group)")
            mean = s / n
            getattr(self, mean_name).copy_(mean.float())
            getattr(self, std_name).copy_((ss / n - mean**2).clamp_min(1e-12).sqrt().float())
        return self

    # -- persistence ---------------------------------------------------------------------------------------------

    def config_dict(self) -> dict:
        return {"_class_name": type(self).__name__, "spatial": self.spatial, "temporal": self.temporal,
                "channels": self.channels, "features": self.features, "trunk": self.trunk,
                "encoder_widths": list(self.encoder_widths), "renderer_widths": list(self.renderer_widths),
                "linear_path": self.linear_path, "linear_encoder": self.linear_encoder}

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype | None = None) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / self.CONFIG).write_text(json.dumps(self.config_dict(), indent=2) + "\n")
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() and not k.startswith(("mean", "std"))
                     else v).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / self.WEIGHTS))

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu", tiling: bool = False):
        folder = Path(folder)
        fix = "the autoencoder was not saved completely: save it again (or reinstall flashi2v for the built-in model)"
        cfg = read_json(folder / cls.CONFIG)
        try:
            if (cfg["spatial"], cfg["temporal"]) != (cls.spatial, cls.temporal):
                raise ValueError(f"spatial {cfg['spatial']} / temporal {cfg['temporal']}, this class is 8 / 4")
            model = cls(int(cfg["channels"]), int(cfg["features"]), int(cfg["trunk"]),
                        tuple(cfg["encoder_widths"]), tuple(cfg["renderer_widths"]), bool(cfg.get("linear_path", False)),
                        bool(cfg.get("linear_encoder", False)))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise FlashI2VError(f"'{folder / cls.CONFIG}' is not a video autoencoder config ({err}): {fix}") from None
        state = load_safetensors(folder / cls.WEIGHTS, fix)
        try:
            model.load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError as err:
            raise FlashI2VError(f"'{folder / cls.WEIGHTS}' does not match its config.json "
                                f"({str(err).splitlines()[0]}): {fix}") from None
        return model.eval().requires_grad_(False).to(device)
