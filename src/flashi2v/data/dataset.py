"""Torch dataset of training clips that survives bad files.

A corrupt, unreadable or too-short clip must not stop a multi-day run: it is skipped, the next index is used
instead (deterministically, so every rank and every resume sees the same substitution), and the clip is
recorded with its reason and logged once.

Skip counts and DataLoader workers: each worker process has its own copy of the dataset, so the counts in
``dataset.skipped`` of the main process stay empty when ``num_workers > 0``. Every sample therefore carries
``"skipped"``: the (path, reason) pairs its worker newly discovered while producing it. Collate with
``collate_clips`` (it concatenates those lists) and feed them to a main-process ``SkipLog.update`` to get
the totals; the log counts distinct clips, so a clip found by several workers is counted once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch.utils.data import Dataset

from flashi2v.data.decode import decode_clip
from flashi2v.data.index import ClipRecord
from flashi2v.data.media import CORRUPT, MISSING, TOO_SHORT, UNREADABLE, ClipError
from flashi2v.errors import FlashI2VError
from flashi2v.video import to_unit_range

logger = logging.getLogger(__name__)

ERROR = "error"  # anything unexpected while decoding one clip; still skipped, never fatal
SKIP_REASONS = (MISSING, UNREADABLE, CORRUPT, TOO_SHORT, ERROR)


@dataclass(frozen=True)
class DataConfig:
    """Shape of a training sample; the defaults are the reference recipe (49 frames at 16 fps, 480 x 832)."""

    num_frames: int = 49
    fps: float = 16.0
    height: int = 480
    width: int = 832

    def __post_init__(self):
        if self.num_frames < 1 or self.fps <= 0 or self.height < 1 or self.width < 1:
            raise FlashI2VError(f"DataConfig needs positive num_frames, fps, height and width, got {self}")


@dataclass
class SkipLog:
    """Clips that could not be used, one reason per distinct path (so merging worker reports never double counts)."""

    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, reason: str) -> bool:
        """Record a bad clip; True when it was not known before."""
        if path in self.reasons:
            return False
        self.reasons[path] = reason
        return True

    def update(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Merge (path, reason) pairs, e.g. the ``"skipped"`` entries of collated batches."""
        for path, reason in pairs:
            self.add(path, reason)

    @property
    def counts(self) -> dict[str, int]:
        """Number of distinct bad clips per reason (every reason listed, zeros included)."""
        counts = dict.fromkeys(SKIP_REASONS, 0)
        for reason in self.reasons.values():
            counts[reason] = counts.get(reason, 0) + 1
        return counts

    @property
    def paths(self) -> set[str]:
        return set(self.reasons)

    def __len__(self) -> int:
        return len(self.reasons)


class VideoClipDataset(Dataset):
    """Map-style dataset: ``{"video": 3xFxHxW, "image": 3xHxW, "caption": str, "index": int, "skipped": list}``.

    ``image`` is the first video frame (FlashI2V's condition image); ``index`` is the index of the clip actually
    returned, which differs from the requested one when bad clips were skipped.
    """

    def __init__(self, records: Sequence[ClipRecord], config: DataConfig = DataConfig(),
                 shapes: Sequence[tuple[int, int, int]] | None = None):
        """``shapes``: each record's (frames, height, width) (its bucket, flashi2v.data.buckets) instead of
        config's; a bad clip is then replaced by the next one of the same shape, so a batch keeps one shape."""
        if not records:
            raise FlashI2VError("VideoClipDataset got no clip records; check the index or the filter settings")
        self.records = list(records)
        self.config = config
        self.shapes = None if shapes is None else [tuple(s) for s in shapes]
        if self.shapes is not None and len(self.shapes) != len(self.records):
            raise FlashI2VError(f"VideoClipDataset got {len(self.shapes)} shapes for {len(self.records)} records")
        self.skipped = SkipLog()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        found: list[tuple[str, str]] = []
        shape = self.shape(index)
        for attempt in range(len(self.records)):
            i = (index + attempt) % len(self.records)
            if self.shapes is not None and self.shapes[i] != shape:
                continue
            video = self._load(self.records[i], found, shape)
            if video is not None:
                return {
                    "video": video,
                    "image": video[:, 0].clone(),
                    "caption": self.records[i].cap,
                    "index": i,
                    "skipped": found,
                }
        raise FlashI2VError(
            f"none of the {len(self.records)} clips can be decoded as {shape[0]} frames of {shape[1]}x{shape[2]} at "
            f"{self.config.fps:g} fps (bad clips by reason: {self.skipped.counts}); run filter_clips on the index"
        )

    def shape(self, index: int) -> tuple[int, int, int]:
        """(frames, height, width) that clip ``index`` is decoded to."""
        c = self.config
        return self.shapes[index] if self.shapes is not None else (c.num_frames, c.height, c.width)

    def _load(self, record: ClipRecord, found: list[tuple[str, str]],
              shape: tuple[int, int, int]) -> torch.Tensor | None:
        """Decode one clip, or record why not (appending to ``found``) and return None."""
        if record.path in self.skipped.reasons:
            return None
        frames, height, width = shape
        try:
            return decode_clip(record, frames, self.config.fps, height, width)
        except ClipError as e:
            self._skip(record.path, e.reason, str(e), found)
        except Exception as e:  # noqa: BLE001 - one odd file must not end a training run
            self._skip(record.path, ERROR, f"{type(e).__name__}: {e}", found)
        return None

    def _skip(self, path: str, reason: str, message: str, found: list[tuple[str, str]]) -> None:
        if self.skipped.add(path, reason):
            found.append((path, reason))
            logger.warning("skipping clip %s (%s): %s", path, reason, message)


def collate_clips(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: tensors stacked, captions and skip reports as flat lists (default_collate would reject
    ``"skipped"`` lists of different lengths)."""
    return {
        "video": torch.stack([s["video"] for s in batch]),
        "image": torch.stack([s["image"] for s in batch]),
        "caption": [s["caption"] for s in batch],
        "index": torch.tensor([s["index"] for s in batch]),
        "skipped": [pair for s in batch for pair in s["skipped"]],
    }


class TensorClips(Dataset):
    """Clips already decoded to tensors (``{"video": 3xFxHxW, uint8 or float in [-1,1], "caption"}``), cycled to ``length``.

    For small sets of real footage carried to a machine without a video decoder; ``length`` sets how
    often they come up next to a larger dataset in a ConcatDataset.
    """

    def __init__(self, clips: Sequence[dict[str, Any]], length: int | None = None):
        if not clips:
            raise FlashI2VError("TensorClips got no clips")
        self.clips = list(clips)
        self.length = length or len(self.clips)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self.clips[index % len(self.clips)]
        video = clip["video"]
        video = to_unit_range(video) if video.dtype == torch.uint8 else video.float()
        return {"video": video, "image": video[:, 0].clone(), "caption": clip["caption"], "index": index, "skipped": []}
