"""CameraMotionClips: a dataset of camera-motion clips rendered on the fly from photos."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from flashi2v.captions import (
    CAPTION_TEMPLATES,
    MOTIONS,
    PACES,
    motion_caption,
    motion_speed,
)
from flashi2v.data.synthetic.render import check_photo, render_camera_clip
from flashi2v.errors import FlashI2VError
from flashi2v.photos import load_photo, photo_name
from flashi2v.video import to_unit_range


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
