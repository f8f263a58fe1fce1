"""Pixels in and out: load an image, centre-crop-resize frames, write mp4 files and PNG strips.

Convention: a video tensor is ... x 3 x H x W (channels before the spatial axes); pixels handed to the
VAE are float in [-1, 1]; pixels handed back to the user are uint8 T x H x W x 3.
"""

from __future__ import annotations

import os
import uuid
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from flashi2v.errors import FlashI2VError


def center_crop_resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scale ``frames`` (... x 3 x H x W, float) so they cover height x width, then crop the centre.

    Bicubic with antialias, as the FlashI2V training data is prepared; the aspect ratio is kept, so
    nothing is stretched. Returns float32 in the value range of the input (clamped to it after the
    bicubic overshoot).
    """
    lead, (c, h, w) = frames.shape[:-3], frames.shape[-3:]
    x = frames.reshape(-1, c, h, w).float()
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        lo, hi = x.amin(), x.amax()
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(lo, hi)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    x = x[:, :, top : top + height, left : left + width]
    return x.reshape(*lead, c, height, width)


def to_unit_range(pixels_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the VAE's input range."""
    return pixels_uint8.float().div(127.5).sub(1.0)


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (rounded, clamped)."""
    return pixels.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


# -- images ------------------------------------------------------------------------------------------

_IMAGE_HINT = "(PNG/JPEG/WebP...)"


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB, honouring the EXIF orientation so phone photos are upright.

    Every way the path can be wrong becomes one FlashI2VError line, not a PIL traceback.
    """
    path = Path(path)
    if not path.exists():
        raise FlashI2VError(f"cannot read image '{path}': no such file; check the path")
    if path.is_dir():
        raise FlashI2VError(f"cannot read image '{path}': it is a directory; pass an image file {_IMAGE_HINT}")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise FlashI2VError(f"cannot read image '{path}': not an image file {_IMAGE_HINT} ({err})") from None


def _image_chw(image) -> torch.Tensor:
    """PIL image, path, uint8 H x W x 3 array/tensor or 3 x H x W tensor -> float32 3 x H x W in [-1, 1].

    Float tensors are taken to be in [-1, 1] already (the VAE's range); uint8 is the usual file range.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.array(image, copy=True))  # PIL arrays are read-only
    if not isinstance(image, torch.Tensor):
        raise FlashI2VError(f"unsupported image type {type(image).__name__}: pass a path, a PIL image or a tensor")
    if image.ndim == 3 and image.shape[-1] == 3 and image.shape[0] != 3:
        image = image.permute(2, 0, 1)
    if image.ndim != 3 or image.shape[0] != 3:
        raise FlashI2VError(f"image tensor must be 3 x H x W or H x W x 3, got shape {tuple(image.shape)}")
    return to_unit_range(image) if image.dtype == torch.uint8 else image.float()


def image_to_tensor(image_or_path, height: int, width: int) -> torch.Tensor:
    """Condition image -> float32 3 x height x width in [-1, 1], centre-cropped (never stretched)."""
    return center_crop_resize(_image_chw(image_or_path), height, width)


# -- videos ------------------------------------------------------------------------------------------


def frames_to_numpy(frames) -> np.ndarray:
    """uint8 T x H x W x 3 (torch or numpy) -> contiguous numpy array, with a clear error otherwise."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise FlashI2VError(f"video frames must be uint8 T x H x W x 3, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise FlashI2VError(f"video frames must be uint8, got {frames.dtype}: convert with flashi2v.video.to_uint8")
    return np.ascontiguousarray(frames)


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """yuv420p halves the chroma resolution, so H.264/MPEG-4 need even sizes: odd sizes get their last
    row/column repeated once (edge padding) rather than cropped, so no content is lost and the file
    stays playable everywhere. The written video is then 1 pixel taller/wider."""
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _pick_codec() -> str:
    """libx264 where FFmpeg was built with it (best quality per byte); otherwise the built-in mpeg4."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # PyAV raises different types across versions for an unknown codec
        return "mpeg4"


def _encode_mp4(frames: np.ndarray, path: Path, fps: Fraction, codec: str) -> None:
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "medium"}
        else:
            stream.bit_rate = max(2_000_000, int(frames.shape[1] * frames.shape[2] * float(fps) * 0.5))
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))


def write_mp4(frames_uint8, path: str | os.PathLike, fps: float = 16, codec: str | None = None) -> Path:
    """Write uint8 T x H x W x 3 frames as an H.264 (or MPEG-4 fallback) yuv420p mp4.

    Written to a temporary file in the target folder and moved into place with os.replace, so an
    interrupted run never leaves a truncated video under the final name.
    """
    frames = _pad_to_even(frames_to_numpy(frames_uint8))
    if not fps > 0:
        raise FlashI2VError(f"fps {fps} must be > 0 (16 is FlashI2V's rate)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp.mp4")
    try:
        _encode_mp4(frames, tmp, Fraction(fps).limit_denominator(1001), codec or _pick_codec())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_video_frames(path: str | os.PathLike) -> tuple[torch.Tensor, float]:
    """Decode every frame of a video -> (uint8 T x H x W x 3, fps); unreadable files raise FlashI2VError."""
    path = Path(path)
    if not path.is_file():
        raise FlashI2VError(f"cannot read video '{path}': no such file; check the path")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FlashI2VError(f"cannot read video '{path}': it has no video stream; pass an mp4/webm/mov video")
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise FlashI2VError(f"cannot read video '{path}': corrupt or not a video ({err}); re-encode or replace it") from None
    if not frames:
        raise FlashI2VError(f"cannot read video '{path}': it contains no frames; re-encode or replace it")
    return torch.from_numpy(np.stack(frames)), float(rate) if rate else 0.0


def save_png_strip(frames_uint8, path: str | os.PathLike, num: int = 8) -> Path:
    """Save ``num`` evenly spaced frames side by side as one PNG: a quick look at the motion in a report."""
    frames = frames_to_numpy(frames_uint8)
    count = max(1, min(num, frames.shape[0]))
    picks = np.linspace(0, frames.shape[0] - 1, count).round().astype(int)
    strip = np.concatenate(list(frames[picks]), axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).save(path, format="PNG")
    return path
