"""Probe clips for size, rate and length, and drop the ones training cannot use before it starts.

Filtering ahead of time keeps bad clips from costing decode time (and skip noise) in every epoch; the kept
records carry the probed facts, so saving them gives an index that never needs probing again.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from tqdm import tqdm

from flashi2v.data.index import ClipRecord
from flashi2v.data.media import (
    ASPECT,
    MISSING,
    TOO_SHORT,
    TOO_SMALL,
    UNREADABLE,
    ClipError,
    frames_needed,
    open_video,
    stream_fps,
)
from flashi2v.errors import FlashI2VError

FILTER_REASONS = (MISSING, UNREADABLE, TOO_SMALL, ASPECT, TOO_SHORT)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream; ``fps`` is exact (NTSC stays 30000/1001)."""

    height: int
    width: int
    fps: Fraction
    num_frames: int


@dataclass(frozen=True)
class FilterConfig:
    """Which clips are worth training on. The defaults keep every readable clip long enough for one sample
    of ``num_frames`` frames at ``fps`` (the reference's 49 at 16 fps); ``aspect`` is width / height."""

    min_pixels: int = 0
    min_aspect: float = 0.0
    max_aspect: float = math.inf
    num_frames: int = 49
    fps: float = 16.0

    def __post_init__(self):
        if self.num_frames < 1 or not 0 < self.fps < math.inf:
            raise FlashI2VError(f"FilterConfig needs num_frames >= 1 and a finite fps > 0, got {self.num_frames} and "
                                f"{self.fps}")
        if not self.min_pixels >= 0:
            raise FlashI2VError(f"FilterConfig min_pixels {self.min_pixels} must be >= 0 (height * width, e.g. 480*832)")
        if not (0 <= self.min_aspect < math.inf and 0 < self.max_aspect):  # also refuses NaN
            raise FlashI2VError(f"FilterConfig aspect limits must be >= 0 (width / height), got min_aspect "
                                f"{self.min_aspect} and max_aspect {self.max_aspect}")
        if self.min_aspect > self.max_aspect:
            raise FlashI2VError(
                f"FilterConfig min_aspect {self.min_aspect} exceeds max_aspect {self.max_aspect}; swap them"
            )


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read height, width, frame rate and frame count from the container, without decoding pictures.

    Containers such as Matroska/WebM do not store a frame count; it is then estimated as duration * fps,
    and counted from the packets when no duration is known either. Raises ``ClipError`` when unreadable.
    """
    path = os.fspath(path)
    with open_video(path) as (container, stream):
        fps = stream_fps(stream)
        height, width = stream.codec_context.height, stream.codec_context.width
        if fps is None or not height or not width:
            raise ClipError(UNREADABLE, f"{path} reports no frame rate or size; re-encode it or drop it from the index")
        count = stream.frames or _estimate_frames(container, stream, fps) or _count_packets(container, stream)
    return VideoInfo(height=height, width=width, fps=fps, num_frames=count)


def _estimate_frames(container, stream, fps: Fraction) -> int:
    """Frames from the stream's (else the container's) duration; 0 when neither is known."""
    if stream.duration and stream.time_base:
        return round(stream.duration * stream.time_base * fps)
    if container.duration:
        return round(Fraction(container.duration, 1_000_000) * fps)
    return 0


def _count_packets(container, stream) -> int:
    """Last resort: demux (not decode) the whole stream and count its non-empty packets."""
    return sum(1 for packet in container.demux(stream) if packet.size)


def filter_clips(
    records: Sequence[ClipRecord], config: FilterConfig = FilterConfig(), workers: int = 8, progress: bool = True
) -> tuple[list[ClipRecord], dict[str, int]]:
    """Keep the clips that pass ``config``; return them (in order, probed fields filled) and counts per reason.

    Records that already carry resolution, fps and num_frames are trusted and only checked for existence; the
    others are probed in ``workers`` threads (probing is mostly file I/O) behind a progress bar.
    """
    with ThreadPoolExecutor(max(1, workers)) as pool:
        jobs = pool.map(lambda r: _check(r, config), records)
        results = list(tqdm(jobs, total=len(records), desc="probing clips", unit="clip", disable=not progress))
    counts = dict.fromkeys(FILTER_REASONS, 0)
    kept = []
    for record, reason in results:
        if reason is None:
            kept.append(record)
        else:
            counts[reason] += 1
    return kept, counts


def _check(record: ClipRecord, config: FilterConfig) -> tuple[ClipRecord, str | None]:
    """Fill the record's stream facts if needed and return (record, reason it fails or None)."""
    if not os.path.isfile(record.path):
        return record, MISSING
    if not record.has_info:
        try:
            info = probe_video(record.path)
        except ClipError as e:
            return record, e.reason
        record = record.with_info(info.height, info.width, float(info.fps), info.num_frames)
    return record, _rejection(record, config)


def _rejection(record: ClipRecord, config: FilterConfig) -> str | None:
    """The first rule a fully described record breaks, or None."""
    if record.height * record.width < config.min_pixels:
        return TOO_SMALL
    if not config.min_aspect <= record.width / record.height <= config.max_aspect:
        return ASPECT
    if record.fps <= 0 or usable_frames(record) < frames_needed(config.num_frames, record.fps, config.fps):
        return TOO_SHORT
    return None


def usable_frames(record: ClipRecord) -> int:
    """Source frames available to sampling: the whole file, or the part of it inside ``cut``."""
    if record.cut is None:
        return record.num_frames
    start, end = record.cut
    return max(0, min(end, record.num_frames) - start)
