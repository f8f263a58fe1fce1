"""Resolution and length buckets: train on clips of mixed sizes and lengths without cropping all to one shape.

A bucket is a sample shape (frames, height, width). ``assign_buckets`` gives each clip the bucket with the
most frames, then the largest area, among those it fills: enough source frames at the training fps, no
upscaling, an aspect ratio within ``tolerance`` of the clip's (so the centre crop removes little). Clips that
fit none are counted by reason. ``BucketBatchSampler`` then makes every batch from one bucket (a batch is a
stacked tensor, so its clips must share a shape) and, like ``ResumableSampler``, continues exactly from a
saved position.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from typing import Any, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from flashi2v.data.index import ClipRecord
from flashi2v.data.media import frames_needed
from flashi2v.data.probe import usable_frames
from flashi2v.errors import FlashI2VError

logger = logging.getLogger(__name__)

Bucket = tuple[int, int, int]  # (frames, height, width)
NO_SIZE, TOO_SHORT, ASPECT, TOO_SMALL = ("no size in the index", "shorter than every bucket",
                                          "aspect ratio fits no bucket", "smaller than its buckets")
UNASSIGNED_REASONS = (NO_SIZE, TOO_SHORT, ASPECT, TOO_SMALL)


def aspect_fits(height: int, width: int, bucket: Bucket, tolerance: float) -> bool:
    """The clip's width/height is within ``tolerance`` (relative) of the bucket's, either way round."""
    ratio = (width / height) / (bucket[2] / bucket[1])
    return max(ratio, 1 / ratio) <= 1 + tolerance


def bucket_for(record: ClipRecord, buckets: Sequence[Bucket], fps: float,
               tolerance: float) -> tuple[int | None, str | None]:
    """(index of the clip's bucket, None) or (None, why no bucket fits)."""
    if not record.has_info:
        return None, NO_SIZE
    long_enough = [i for i, b in enumerate(buckets) if usable_frames(record) >= frames_needed(b[0], record.fps, fps)]
    if not long_enough:
        return None, TOO_SHORT
    shaped = [i for i in long_enough if aspect_fits(record.height, record.width, buckets[i], tolerance)]
    if not shaped:
        return None, ASPECT
    # no upscaling: the crop of the clip's aspect ratio must hold the bucket's pixels in both directions
    fits = [i for i in shaped if _crop_holds(record.height, record.width, buckets[i])]
    if not fits:
        return None, TOO_SMALL
    best = max(fits, key=lambda i: (buckets[i][0], buckets[i][1] * buckets[i][2],
                                    -abs(np.log((record.width / record.height) / (buckets[i][2] / buckets[i][1])))))
    return best, None


def _crop_holds(height: int, width: int, bucket: Bucket) -> bool:
    """The centre crop of the clip to the bucket's aspect ratio is at least the bucket's size."""
    scale = min(height / bucket[1], width / bucket[2])
    return scale >= 1.0


def assign_buckets(records: Sequence[ClipRecord], buckets: Sequence[Bucket], fps: float,
                   tolerance: float = 0.15) -> tuple[list[int | None], dict[str, int]]:
    """Each record's bucket index (None: unassigned) and the unassigned counts per reason."""
    assigned, unassigned = [], dict.fromkeys(UNASSIGNED_REASONS, 0)
    for record in records:
        index, reason = bucket_for(record, buckets, fps, tolerance)
        assigned.append(index)
        if reason is not None:
            unassigned[reason] += 1
    return assigned, unassigned


def bucket_histogram(assigned: Sequence[int | None], buckets: Sequence[Bucket],
                     unassigned: dict[str, int]) -> list[str]:
    """Lines of a text histogram: clips per bucket, then the unassigned clips by reason."""
    counts = Counter(i for i in assigned if i is not None)
    total = max(1, sum(counts.values()) + sum(unassigned.values()))
    width = max(counts.values(), default=0)
    lines = []
    for i, (f, h, w) in enumerate(buckets):
        n = counts.get(i, 0)
        bar = "#" * (round(30 * n / width) if width else 0)
        lines.append(f"  bucket {f:>3} x {h:>4} x {w:<4} {n:>7} clips {100 * n / total:5.1f} % {bar}")
    left = sum(unassigned.values())
    lines.append(f"  unassigned{'':>16} {left:>7} clips {100 * left / total:5.1f} %"
                 + ("".join(f"; {reason}: {n}" for reason, n in unassigned.items() if n)))
    return lines


class BucketBatchSampler(Sampler[list[int]]):
    """Endless stream of index batches for one rank, each batch from a single bucket; resumable.

    Epoch e: the clips in the order of a permutation fixed by (seed, e), cut per bucket into full batches of
    ``batch_size`` (a bucket's remainder waits for another epoch's order), the batches shuffled by (seed, e)
    and dealt to the ranks round robin (truncated to an equal share). The position is counted in clips, as
    ResumableSampler counts it: ``state_dict(consumed=clips)`` after a DataLoader prefetched ahead.
    """

    def __init__(self, bucket_of: Sequence[int], batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if world_size < 1 or not 0 <= rank < world_size:
            raise FlashI2VError(f"BucketBatchSampler got rank {rank} of world size {world_size}")
        if batch_size < 1:
            raise FlashI2VError(f"BucketBatchSampler batch_size {batch_size} must be >= 1")
        self.bucket_of = np.asarray(bucket_of, dtype=np.int64)
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        full = sum(n // batch_size for n in Counter(self.bucket_of.tolist()).values())
        self.batches_per_rank = full // world_size
        if self.batches_per_rank == 0:
            raise FlashI2VError(f"no bucket holds enough clips for {world_size} rank(s) x batch size {batch_size} "
                                f"(clips per bucket: {dict(Counter(self.bucket_of.tolist()))}): lower "
                                "recipe.batch_size, merge buckets or add clips")
        self.epoch, self.offset = 0, 0
        self._iter_start = (0, 0)
        self._cache: tuple[int, list[list[int]]] | None = None

    @property
    def dataset_len(self) -> int:
        return len(self.bucket_of)

    @property
    def epoch_length(self) -> int:
        """Clips this rank gets per epoch (a multiple of the batch size)."""
        return self.batches_per_rank * self.batch_size

    def signature(self) -> str:
        """Which clip sits in which bucket: a resume must see the same assignment."""
        return hashlib.sha256(self.bucket_of.tobytes()).hexdigest()[:16]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of the epoch, a pure function of (seed, epoch, rank, world size, assignment)."""
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.bucket_of))
            batches = []
            for bucket in sorted(set(self.bucket_of.tolist())):
                members = order[self.bucket_of[order] == bucket]
                full = len(members) // self.batch_size * self.batch_size
                batches += [members[i:i + self.batch_size].tolist() for i in range(0, full, self.batch_size)]
            batches = [batches[i] for i in rng.permutation(len(batches))]
            share = batches[: self.batches_per_rank * self.world_size][self.rank::self.world_size]
            self._cache = (epoch, share)
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        self._iter_start = (self.epoch, self.offset)
        while True:
            batches = self.epoch_batches(self.epoch)
            while self.offset < self.epoch_length:
                batch = batches[self.offset // self.batch_size]
                self.offset += self.batch_size
                yield batch
            self.epoch, self.offset = self.epoch + 1, 0

    def __len__(self) -> int:  # DataLoader asks; the stream is endless, this is one epoch
        return self.batches_per_rank

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        epoch, offset = self.epoch, self.offset
        if consumed is not None:
            epoch, offset = divmod(self._iter_start[0] * self.epoch_length + self._iter_start[1] + consumed,
                                   self.epoch_length)
        return {"epoch": epoch, "offset": offset, "seed": self.seed, "shuffle": True, "dataset_len": self.dataset_len,
                "world_size": self.world_size, "batch_size": self.batch_size, "buckets": self.signature()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("dataset_len", "seed", "batch_size", "buckets", "world_size"):
            if state.get(key) != mine[key]:
                raise FlashI2VError(f"sampler state has {key}={state.get(key)!r} but this run has {mine[key]!r}: resume "
                                    "bucketed training with the same clip index, buckets, batch size, seed and "
                                    "number of processes")
        epoch, offset = int(state["epoch"]), int(state["offset"])
        if offset % self.batch_size or offset > self.epoch_length:
            raise FlashI2VError(f"sampler state offset {offset} is not a batch boundary of this run")
        self.epoch, self.offset = epoch, offset
        self._iter_start = (epoch, offset)
