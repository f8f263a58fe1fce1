"""Low-level video access shared by probing and decoding: opening a file, its frame rate, frame sampling.

The sampling rule lives here once, because the filter (which decides whether a clip is long enough) and the
decoder (which picks the frames) must agree exactly: frame ``i`` of a training clip is source frame
``start + round(i * src_fps / fps)``, rounding halves up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import math
from contextlib import contextmanager
from fractions import Fraction
from typing import Iterator


from flashi2v.errors import FlashI2VError

# Reasons a clip is rejected; the keys of filter and skip counts.
MISSING, UNREADABLE, CORRUPT, TOO_SHORT, TOO_SMALL, ASPECT = (
    "missing",
    "unreadable",
    "corrupt",
    "too_short",
    "too_small",
    "aspect",
)


class ClipError(FlashI2VError):
    """A single clip cannot be used; ``reason`` is one of the module's reason names, for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


if TYPE_CHECKING:  # PyAV is imported where a video is opened
    import av


@contextmanager
def open_video(path: str) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` and select its first video stream, turning every failure into ``ClipError``."""
    import av

    try:
        container = av.open(path)
    except FileNotFoundError:
        raise ClipError(MISSING, f"video {path} does not exist; fix the path or drop it from the index") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise ClipError(UNREADABLE, f"cannot open video {path} ({e}); re-encode it or drop it from the index") from None
    try:
        if not container.streams.video:
            raise ClipError(UNREADABLE, f"{path} has no video stream; drop it from the index")
        yield container, container.streams.video[0]
    finally:
        container.close()


def stream_fps(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The stream's frame rate as an exact fraction (NTSC rates stay 30000/1001), or None when unknown."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate.numerator, rate.denominator)
    return None


def as_fraction(fps: float | Fraction) -> Fraction:
    """Exact rate for the index arithmetic; floats such as 29.97 snap to the nearest simple fraction."""
    return fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(100_000)


def source_indices(num_frames: int, src_fps: float | Fraction, fps: float | Fraction, start: int = 0) -> list[int]:
    """Source frame indices that give ``num_frames`` frames at ``fps`` from a ``src_fps`` video, from ``start``.

    Computed in exact fractions and rounded half up so that the result never depends on float error.
    """
    step = as_fraction(src_fps) / as_fraction(fps)
    return [start + math.floor(i * step + Fraction(1, 2)) for i in range(num_frames)]


def frames_needed(num_frames: int, src_fps: float | Fraction, fps: float | Fraction) -> int:
    """How many consecutive source frames one training clip spans (the last sampled index + 1)."""
    return source_indices(num_frames, src_fps, fps)[-1] + 1
