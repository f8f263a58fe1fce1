"""Decode one training clip: frames sampled at the training fps, centre-crop-resized, in [-1, 1].

Decoding stops at the last frame needed, and a clip that starts late (a ``cut``) seeks to the key frame
before its start, so the cost is about the length of the sample, not of the file.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Iterator

import torch

from flashi2v.data.index import ClipRecord

if TYPE_CHECKING:  # PyAV is imported where a video is decoded: rendered or pre-decoded clips train without it
    import av
from flashi2v.data.media import (
    CORRUPT,
    TOO_SHORT,
    UNREADABLE,
    ClipError,
    as_fraction,
    open_video,
    source_indices,
    stream_fps,
)
from flashi2v.errors import FlashI2VError
from flashi2v.video import center_crop_resize, to_unit_range


def decode_clip(
    record: ClipRecord,
    num_frames: int = 49,
    fps: float = 16.0,
    height: int = 480,
    width: int = 832,
    start: int | None = None,
) -> torch.Tensor:
    """Return float32 3 x F x H x W in [-1, 1]: source frames ``start + round(i * src_fps / fps)``.

    ``start`` (a source frame index) defaults to the cut start, else 0, so a clip always yields the same
    sample. The file's own frame rate is used (the record's ``fps`` only when the stream has none). Raises
    ``ClipError`` with reason ``unreadable``, ``corrupt`` or ``too_short``.
    """
    if num_frames < 1 or fps <= 0:
        raise FlashI2VError(f"decode_clip needs num_frames >= 1 and fps > 0, got {num_frames} and {fps}")
    start = (record.cut[0] if record.cut else 0) if start is None else start
    if start < 0:
        raise FlashI2VError(f"decode_clip start must be a source frame index >= 0, got {start}")
    with open_video(record.path) as (container, stream):
        src_fps = stream_fps(stream) or (as_fraction(record.fps) if record.fps else None)
        if src_fps is None:
            raise ClipError(UNREADABLE, f"{record.path} has no frame rate; re-encode it or drop it from the index")
        wanted = source_indices(num_frames, src_fps, fps, start)
        _check_cut(record, wanted)
        frames = _collect(container, stream, src_fps, wanted, record.path, seek=start > 0)
        if frames is not None:
            return _to_video(frames, height, width)
    with open_video(record.path) as (container, stream):  # the seek did not work out: decode from the start
        return _to_video(_collect(container, stream, src_fps, wanted, record.path, seek=False), height, width)


def _check_cut(record: ClipRecord, wanted: list[int]) -> None:
    """A sample may not run past the end of its cut; catching that here saves decoding."""
    if record.cut is not None and wanted[-1] >= record.cut[1]:
        raise ClipError(
            TOO_SHORT,
            f"{record.path}: cut {list(record.cut)} is too short, one sample spans {wanted[-1] - wanted[0] + 1} frames",
        )


def _collect(
    container, stream, src_fps: Fraction, wanted: list[int], path: str, seek: bool
) -> list[av.VideoFrame] | None:
    """Decode up to the last wanted frame; None when a seek did not lead to the wanted frames (no timestamps
    to index frames by, or a demuxer that seeks imprecisely), so the caller retries from the file start.

    For each wanted index the latest frame at or before it is kept: an exact match for constant-rate
    video, and still sensible when a variable-rate stream skips an index.

    Threads: the decoder runs single-threaded. DataLoader workers already decode in parallel, and a threaded
    decoder that is still awaiting garbage collection when a DataLoader forks its workers deadlocks the
    worker that frees it; single-threaded decoding is as fast here for clips of a few dozen frames.
    """
    import av

    stream.codec_context.thread_count = 1
    if seek and not _seek(container, stream, src_fps, wanted[0]):
        return None  # a failed seek can leave the demuxer anywhere
    try:
        picked = _pick(_indexed_frames(container, stream, src_fps, seek), wanted, seek)
    except (av.FFmpegError, OSError) as e:
        raise ClipError(CORRUPT, f"decoding {path} failed ({e}); re-encode it or drop it from the index") from None
    if seek and (picked is None or len(picked) < len(wanted)):
        return None  # some demuxers "seek" to the wrong place; only a pass from the start can tell a short clip
    if len(picked) < len(wanted):
        raise ClipError(
            TOO_SHORT,
            f"{path} ended after {len(picked)} of {len(wanted)} sampled frames (needs source frame {wanted[-1]})",
        )
    return picked


def _seek(container, stream, src_fps: Fraction, index: int) -> bool:
    """Jump to the key frame at or before source frame ``index``; False when the file cannot seek."""
    if not stream.time_base:
        return False
    import av

    target = Fraction(index, 1) / src_fps / stream.time_base + (stream.start_time or 0)
    try:
        container.seek(int(target), stream=stream, backward=True, any_frame=False)
    except av.FFmpegError:
        return False
    return True


def _indexed_frames(container, stream, src_fps: Fraction, need_pts: bool) -> Iterator[tuple[int | None, av.VideoFrame]]:
    """Yield (source frame index, frame): from the timestamp when there is one, else by counting.

    Counting is only valid from the file start, so after a seek a frame without a timestamp yields
    index None, which tells the caller to start over without seeking.
    """
    t0 = stream.start_time or 0
    for count, frame in enumerate(container.decode(stream)):
        if frame.pts is not None and stream.time_base:
            yield round((frame.pts - t0) * stream.time_base * src_fps), frame
        else:
            yield (None if need_pts else count), frame


def _pick(
    frames: Iterator[tuple[int | None, av.VideoFrame]], wanted: list[int], seeked: bool
) -> list[av.VideoFrame] | None:
    """Match frames to the ascending ``wanted`` indices, stopping once the last one is reached.

    None when frames cannot be indexed (no timestamps) or a seek landed after the first wanted frame.
    """
    picked: list[av.VideoFrame] = []
    previous = None
    for index, frame in frames:
        if index is None or (seeked and previous is None and index > wanted[0]):
            return None
        while len(picked) < len(wanted) and wanted[len(picked)] < index:
            picked.append(previous if previous is not None else frame)
        while len(picked) < len(wanted) and wanted[len(picked)] == index:
            picked.append(frame)
        if len(picked) == len(wanted):
            break
        previous = frame
    return picked


def _to_video(frames: list[av.VideoFrame], height: int, width: int) -> torch.Tensor:
    return torch.stack([_to_pixels(f, height, width) for f in frames], dim=1)


def _to_pixels(frame: av.VideoFrame, height: int, width: int) -> torch.Tensor:
    """One decoded frame -> 3 x height x width float in [-1, 1], resized frame by frame to bound memory."""
    rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
    return center_crop_resize(to_unit_range(rgb), height, width)
