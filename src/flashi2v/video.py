"""Pixels in and out: load an image, centre-crop-resize frames, write mp4 files and PNG strips.

Convention: a video tensor is ... x 3 x H x W (channels before the spatial axes); pixels handed to the
VAE are float in [-1, 1]; pixels handed back to the user are uint8 T x H x W x 3.
"""

from __future__ import annotations

import os
import re
import struct
import uuid
import warnings
from fractions import Fraction
from pathlib import Path

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
# An image smaller than this on either side has no content to animate: upscaling a 1x1 pixel to 480x832
# gives a flat frame the model was never trained on, so it is refused instead of silently stretched.
MIN_IMAGE_SIDE = 16
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _pixel_limit() -> int | None:
    """PIL's decompression-bomb limit (users may raise it through PIL.Image.MAX_IMAGE_PIXELS)."""
    return Image.MAX_IMAGE_PIXELS


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB with the image's real bit depth and transparency honoured.

    PIL's own ``convert("RGB")`` clips 16-bit greyscale (PNG ``I;16``, read as 0..65535) at 255, so such
    a file comes out nearly white; here it is scaled by 255/65535 instead. Transparent pixels are
    composited on white: their stored colour is often black or garbage, and white is what a viewer shows.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.round(grey / 257.0), 0, 255).astype(np.uint8)  # 65535 / 257 = 255 exactly
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "F":  # float TIFF/EXR-like data: taken as 0..1
        grey = np.clip(np.round(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _check_pixels(width: int, height: int, what: str) -> None:
    limit = _pixel_limit()
    if limit and width * height > limit:
        raise FlashI2VError(f"{what} is {width}x{height} = {width * height:,} pixels, over the {limit:,}-pixel limit "
                            "(decompression-bomb guard): downscale it first")


def _check_condition_size(width: int, height: int, what: str) -> None:
    if min(width, height) < MIN_IMAGE_SIDE:
        raise FlashI2VError(f"{what} is only {width}x{height} pixels: a condition image needs at least "
                            f"{MIN_IMAGE_SIDE} pixels on each side; pass a larger photo")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as 8-bit RGB, honouring the EXIF orientation so phone photos are upright.

    The pixel count is checked from the header before anything is decoded (decompression bombs), and
    every way the file can be wrong (missing, a folder, not an image, truncated, too small, too large)
    becomes one FlashI2VError line, not a PIL traceback.
    """
    path = Path(path)
    what = f"image '{path}'"
    if not path.exists():
        raise FlashI2VError(f"cannot read {what}: no such file; check the path")
    if path.is_dir():
        raise FlashI2VError(f"cannot read {what}: it is a directory; pass an image file {_IMAGE_HINT}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check below says it in one line
            with Image.open(path) as image:  # reads the header only
                _check_pixels(*image.size, what)
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except Image.DecompressionBombError as err:  # PIL refuses in Image.open itself above twice its limit
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise FlashI2VError(f"{what} has {size}, over the {_pixel_limit():,}-pixel limit (decompression-bomb guard): "
                            "downscale it first") from None
    except FlashI2VError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        if isinstance(err, UnidentifiedImageError):  # PIL's message only repeats the path
            raise FlashI2VError(f"cannot read {what}: not an image file {_IMAGE_HINT}; pass a photo") from None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FlashI2VError(f"cannot read {what}: truncated or corrupt ({reason}); re-save or replace it") from None


def _image_chw(image) -> torch.Tensor:
    """PIL image, path, uint8 H x W x 3 array/tensor or 3 x H x W tensor -> float32 3 x H x W in [-1, 1].

    Float tensors are taken to be in [-1, 1] already (the VAE's range); uint8 is the usual file range.
    A float image far outside [-1, 1] (0..255 floats, 0..1 is fine) or with NaN/inf is refused: it would
    give a white or black first frame without any other sign of the mistake.
    """
    what = "condition image"
    if isinstance(image, (str, os.PathLike)):
        what = f"image '{image}'"
        image = load_image(image)
    if isinstance(image, Image.Image):
        _check_pixels(*image.size, "image")
        image = np.asarray(_to_rgb(image))
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16:  # 16-bit arrays: scale to 8 bits, as for 16-bit files
            image = np.round(image / 257.0).astype(np.uint8)
        elif image.dtype.kind not in "uifb":
            raise FlashI2VError(f"unsupported image array dtype {image.dtype}: pass uint8 pixels")
        image = torch.from_numpy(np.array(image, copy=True))  # PIL arrays are read-only
    if not isinstance(image, torch.Tensor):
        raise FlashI2VError(f"unsupported image type {type(image).__name__}: pass a path, a PIL image or a tensor")
    if image.ndim == 3 and image.shape[-1] == 3 and image.shape[0] != 3:
        image = image.permute(2, 0, 1)
    if image.ndim != 3 or image.shape[0] != 3:
        raise FlashI2VError(f"image tensor must be 3 x H x W or H x W x 3, got shape {tuple(image.shape)}")
    _check_condition_size(image.shape[2], image.shape[1], what)
    if image.dtype == torch.uint8:
        return to_unit_range(image)
    if not image.is_floating_point():
        raise FlashI2VError(f"image tensor dtype {image.dtype} is not supported: pass uint8 0..255 or float in [-1, 1]")
    image = image.float()
    if not torch.isfinite(image).all():
        raise FlashI2VError("image tensor holds NaN or infinite values: check how it was computed")
    lo, hi = image.min().item(), image.max().item()
    if lo < -1.01 or hi > 1.01:
        raise FlashI2VError(f"float image values must lie in [-1, 1], got {lo:.3g}..{hi:.3g}: pass uint8 0..255, "
                            "or scale with x / 127.5 - 1")
    return image


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
    import av  # PyAV is imported where videos are read or written: generating to tensors needs no codec library

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # PyAV raises different types across versions for an unknown codec
        return "mpeg4"


def _encode_mp4(frames: np.ndarray, path: Path, fps: Fraction, codec: str) -> None:
    import av

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
    import av

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
