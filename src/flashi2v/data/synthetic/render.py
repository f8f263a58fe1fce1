"""Rendering a camera path: each frame is the photo seen through its window (bicubic, antialiased)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from flashi2v.data.synthetic.camera_path import plan_camera_path, window_corners
from flashi2v.errors import FlashI2VError
from flashi2v.threads import single_torch_thread


def check_photo(photo) -> np.ndarray:
    """The photo as a uint8 H x W x 3 array, with a clear error for anything else."""
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[-1] != 3 or photo.dtype != np.uint8:
        raise FlashI2VError(f"photo must be uint8 H x W x 3, got {photo.dtype} {photo.shape}; load it with load_photo")
    return photo


def photo_tensor(photo: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 -> float32 1 x 3 x H x W in 0..255."""
    return torch.from_numpy(np.ascontiguousarray(check_photo(photo))).permute(2, 0, 1)[None].float()


def window_grids(windows: np.ndarray, photo_hw: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """N x H x W x 2 sampling grids of N windows, in grid_sample's normalised coordinates (align_corners=False)."""
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
    cx, cy, size, angle = (windows[:, k, None, None] for k in range(4))
    ys = ((np.arange(height) + 0.5) / height - 0.5)[None, :, None] * size
    xs = ((np.arange(width) + 0.5) / width - 0.5)[None, None, :] * size * width / height
    c, s = np.cos(angle), np.sin(angle)
    photo_h, photo_w = photo_hw
    grids = np.empty((len(windows), height, width, 2), dtype=np.float32)
    grids[..., 0] = 2 * (cx + c * xs - s * ys) / photo_w - 1
    grids[..., 1] = 2 * (cy + s * xs + c * ys) / photo_h - 1
    return torch.from_numpy(grids)


def window_source(
    photo: np.ndarray, windows: np.ndarray, height: int, width: int, factor: float | None = None
) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """(pixels, (top, left), (crop_h, crop_w)): the part of the uint8 H x W x 3 photo that ``windows`` (N x 4,
    or one window) see, as float32 1 x 3 x h x w, shrunk (antialiased) by ``factor`` (default: the smallest
    window's size / height, floored at 1) to about one pixel per output pixel, so sampling does not alias.

    Only the windows' bounding box plus the filters' reach is converted and shrunk, which keeps large photos cheap.
    """
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
    factor = factor if factor is not None else max(float(windows[:, 2].min()) / height, 1.0)
    corners = window_corners(windows, height, width).reshape(-1, 2)
    reach = math.ceil(4 * factor) + 4  # antialias filter plus bicubic sampling support, in photo pixels
    photo_h, photo_w = photo.shape[:2]
    top = max(0, math.floor(corners[:, 1].min()) - reach)
    left = max(0, math.floor(corners[:, 0].min()) - reach)
    bottom = min(photo_h, math.ceil(corners[:, 1].max()) + reach)
    right = min(photo_w, math.ceil(corners[:, 0].max()) + reach)
    crop_hw = (bottom - top, right - left)
    shape = (max(1, round(crop_hw[0] / factor)), max(1, round(crop_hw[1] / factor)))
    pixels = photo_tensor(photo[top:bottom, left:right])
    if shape != crop_hw:
        pixels = F.interpolate(pixels, size=shape, mode="bicubic", align_corners=False, antialias=True)
    return pixels, (top, left), crop_hw


def _sample(photo: np.ndarray, windows: np.ndarray, height: int, width: int) -> np.ndarray:
    """N x H x W x 3 uint8: the windows sampled (bicubic) from one shrunk source covering all of them."""
    pixels, (top, left), crop_hw = window_source(photo, windows, height, width)
    local = np.array(windows, dtype=np.float64).reshape(-1, 4)
    local[:, 0] -= left
    local[:, 1] -= top
    grids = window_grids(local, crop_hw, height, width)
    out = F.grid_sample(pixels.expand(len(grids), -1, -1, -1), grids, mode="bicubic", padding_mode="border",
                        align_corners=False)
    return np.clip(np.rint(out.numpy().transpose(0, 2, 3, 1)), 0, 255).astype(np.uint8)  # numpy: no thread pool


def render_window(photo, window: Sequence[float], height: int, width: int) -> np.ndarray:
    """One frame: the photo seen through ``window``, uint8 H x W x 3 (bicubic, antialiased when shrinking).

    Depends on nothing but the photo and this window, so frame 0 of a clip is exactly the start crop.
    """
    return _sample(check_photo(photo), np.asarray(window, dtype=np.float64)[None], height, width)[0]


# Frames share one shrunk source while their windows' sizes differ by at most this ratio: the larger ones are
# then shrunk by up to this much more inside the bicubic sampling, too little to alias.
SHARED_SHRINK_RATIO = 1.1


def frame_groups(windows: np.ndarray, height: int) -> list[np.ndarray]:
    """Indices of consecutive frames that share a shrunk source (sizes within ``SHARED_SHRINK_RATIO``, or all
    at or below one photo pixel per output pixel, where nothing is shrunk)."""
    factors = np.maximum(np.asarray(windows, dtype=np.float64)[:, 2] / height, 1.0)
    groups, start = [], 0
    for i in range(1, len(factors) + 1):
        if i == len(factors) or max(factors[start:i + 1]) > SHARED_SHRINK_RATIO * min(factors[start:i + 1]):
            groups.append(np.arange(start, i))
            start = i
    return groups


def render_windows(photo: np.ndarray, windows: np.ndarray, height: int, width: int) -> np.ndarray:
    """T x H x W x 3 uint8 frames of a camera path.

    Frame 0 is ``render_window`` of the first window (the start crop, exactly); the later frames are sampled
    in groups (``frame_groups``) from one shrunk source per group, in one batched call: pans, tilts, rolls and
    stills shrink the photo once per clip instead of once per frame.
    """
    photo, windows = check_photo(photo), np.asarray(windows, dtype=np.float64)
    with single_torch_thread():
        frames = [render_window(photo, windows[0], height, width)[None]]
        for group in frame_groups(windows[1:], height):
            frames.append(_sample(photo, windows[1:][group], height, width))
    return np.concatenate(frames)


def render_camera_clip(
    photo: np.ndarray,
    motion: str,
    speed: float,
    num_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """A virtual camera over ``photo`` (uint8 H x W x 3) -> uint8 T x H x W x 3.

    ``speed`` is per frame: a fraction of the shorter output side for pans/tilts, a log scale for zooms,
    degrees for rolls (see ``SPEEDS``). The crop is random (from ``rng``) but the whole path stays inside
    the photo; frame 0 is the start crop itself.
    """
    windows = plan_camera_path(np.asarray(photo).shape[:2], motion, speed, num_frames, height, width, rng)
    return render_windows(photo, windows, height, width)
