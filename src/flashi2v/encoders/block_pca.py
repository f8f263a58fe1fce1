"""BlockPCACodec: the built-in model's linear latent codec (pixel blocks on their principal components)."""

from __future__ import annotations

from pathlib import Path

import torch

from flashi2v.errors import FlashI2VError

from ..jsonfile import read_json
from .files import load_safetensors
from .latent_codec import LatentCodec

class BlockPCACodec(LatentCodec):
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

    # -- codec interface (as WanVAE; sizes and device from LatentCodec) ------------------------------

    def pixel_scales(self, latent_frames: int) -> torch.Tensor:
        """C x T: the length in pixel space of one unit of each latent channel in each latent frame (frame 0 has
        its own basis and scale), i.e. how much of the decoded video an error in that channel moves."""
        first, later = self.std0 * self.basis0.norm(dim=0), self.std * self.basis.norm(dim=0)
        return torch.stack([first] + [later] * (latent_frames - 1), dim=1)

    def _check(self, pixels: torch.Tensor) -> None:
        self.check_video(pixels, "the built-in codec")

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
        folder = Path(folder)
        fix = "the codec was not saved completely: rebuild it (or reinstall flashi2v for the built-in model)"
        cfg = read_json(folder / cls.CONFIG)
        try:
            codec = cls(cfg["spatial"], cfg["temporal"], cfg["channels"], cfg.get("colour_channels", 0))
        except (KeyError, TypeError, AttributeError) as err:
            raise FlashI2VError(f"'{folder / cls.CONFIG}' is not a block-PCA codec config ({err!r}): {fix}") from None
        state = load_safetensors(folder / cls.WEIGHTS, fix)
        try:
            codec.load_state_dict(state)
        except RuntimeError as err:  # missing, unexpected or mis-shaped buffers
            raise FlashI2VError(f"'{folder / cls.WEIGHTS}' does not match its config.json ({str(err).splitlines()[0]}): {fix}") from None
        return codec.to(device)
