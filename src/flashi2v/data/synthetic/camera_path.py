"""The virtual camera's path over a photo: one window (cx, cy, size, angle) per frame."""

from __future__ import annotations

import math

import numpy as np

from flashi2v.captions import motion_kind
from flashi2v.errors import FlashI2VError

# A window is (cx, cy, size, angle): centre in continuous photo pixels (pixel i spans [i, i+1)), height in
# photo pixels (its width is size * width / height), rotation in radians (positive turns the window
# clockwise on screen, so the content seen through it turns counterclockwise).
SCALE_RANGE = (0.4, 1.0)  # random window size, as a fraction of the largest one that fits
_MARGIN = 2.0  # photo pixels kept free at the border, so bicubic sampling never reaches past the photo


def unit_path(motion: str, speed: float, num_frames: int, height: int, width: int) -> np.ndarray:
    """T x 4 windows (cx, cy, size, angle) of a camera starting at centre (0, 0) with size 1.

    Pans move the window by ``speed * min(height, width)`` output pixels per frame, the window opposite
    to the content; zooms scale it by exp(-/+speed) per frame; rolls turn it by ``speed`` degrees per frame.
    """
    kind = motion_kind(motion)
    t = np.arange(num_frames, dtype=np.float64)
    path = np.zeros((num_frames, 4))
    path[:, 2] = 1.0
    if kind == "pan":
        step = speed * min(height, width) / height  # in window heights per frame
        axis = 0 if motion.startswith("pan") else 1
        sign = -1.0 if motion in ("pan_left", "tilt_up") else 1.0
        path[:, axis] = sign * step * t
    elif kind == "zoom":
        path[:, 2] = np.exp((-1.0 if motion == "zoom_in" else 1.0) * speed * t)
    elif kind == "roll":
        path[:, 3] = (1.0 if motion == "roll_cw" else -1.0) * math.radians(speed) * t
    return path


def window_corners(windows: np.ndarray, height: int, width: int) -> np.ndarray:
    """T x 4 x 2 corner points (x, y) of each window in photo pixels."""
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * 0.5
    local = half[None] * windows[:, None, 2:3] * np.array([width / height, 1.0])
    c, s = np.cos(windows[:, 3])[:, None], np.sin(windows[:, 3])[:, None]
    x = windows[:, None, 0] + c * local[..., 0] - s * local[..., 1]
    y = windows[:, None, 1] + s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y], axis=-1)


def plan_camera_path(
    photo_hw: tuple[int, int],
    motion: str,
    speed: float,
    num_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """T x 4 windows over a photo of ``photo_hw``: random size and position, the whole path inside the photo.

    The size is drawn from ``SCALE_RANGE`` of the largest size for which every frame's window fits; the
    lower end is raised so the smallest window keeps at least ``height`` photo pixels when the photo allows
    it (less means the photo is upsampled, as if upscaled first). Draws exactly three numbers from ``rng``.
    """
    if num_frames < 1 or height < 1 or width < 1:
        raise FlashI2VError(f"camera clips need num_frames, height, width >= 1, got {num_frames}, {height}, {width}")
    unit = unit_path(motion, speed, num_frames, height, width)
    corners = window_corners(unit, height, width).reshape(-1, 2)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    photo_h, photo_w = photo_hw
    fit = min((photo_w - 2 * _MARGIN) / (hi[0] - lo[0]), (photo_h - 2 * _MARGIN) / (hi[1] - lo[1]))
    if fit <= 0:
        raise FlashI2VError(f"photo of {photo_w}x{photo_h} pixels is too small for a camera path; use a larger photo")
    sharp = height / unit[:, 2].min()  # the size at which the smallest window maps 1:1 to the output
    size = rng.uniform(min(max(SCALE_RANGE[0] * fit, sharp), fit), SCALE_RANGE[1] * fit)
    cx = rng.uniform(_MARGIN - lo[0] * size, photo_w - _MARGIN - hi[0] * size)
    cy = rng.uniform(_MARGIN - lo[1] * size, photo_h - _MARGIN - hi[1] * size)
    windows = unit.copy()
    windows[:, 0] = cx + unit[:, 0] * size
    windows[:, 1] = cy + unit[:, 1] * size
    windows[:, 2] = unit[:, 2] * size
    return windows
