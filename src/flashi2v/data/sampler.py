"""An endless, resumable, rank-sharded stream of dataset indices.

Training is counted in steps, not epochs, so the sampler runs epoch after epoch without end. Each epoch is a
permutation fixed by (seed, epoch); rank r takes every world_size-th entry of it, truncated to an equal share
per rank so that ranks stay in the same epoch and never see the same clip in it (the dropped tail differs
between epochs, so no clip is left out for good). The position is (epoch, offset), enough to continue the
exact stream after a restart.

With a DataLoader, the loader pulls indices ahead of training (prefetching), so the sampler's own position
runs ahead of what was trained on. For an exact resume, count the samples this rank consumed since the
loader iterator was created and pass that count to ``state_dict(consumed=...)``.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np
from torch.utils.data import Sampler

from flashi2v.errors import FlashI2VError

logger = logging.getLogger(__name__)


class ResumableSampler(Sampler[int]):
    """Infinite index stream for one rank; ``state_dict`` / ``load_state_dict`` save and restore its position."""

    def __init__(self, dataset_len: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if world_size < 1 or not 0 <= rank < world_size:
            raise FlashI2VError(
                f"ResumableSampler got rank {rank} of world size {world_size}; need 0 <= rank < world_size"
            )
        if dataset_len < world_size:
            raise FlashI2VError(
                f"{dataset_len} clips cannot be shared by {world_size} ranks; add clips or use fewer GPUs"
            )
        self.dataset_len, self.rank, self.world_size = dataset_len, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.offset = 0, 0
        self._iter_start = (0, 0)
        self._cache: tuple[int, np.ndarray] | None = None

    @property
    def epoch_length(self) -> int:
        """Indices this rank gets per epoch."""
        return self.dataset_len // self.world_size

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This rank's share of the epoch's order, a pure function of (seed, epoch, rank, world_size)."""
        if self._cache is None or self._cache[0] != epoch:
            order = (
                np.random.default_rng([self.seed, epoch]).permutation(self.dataset_len)
                if self.shuffle
                else np.arange(self.dataset_len)
            )
            self._cache = (epoch, order[: self.epoch_length * self.world_size][self.rank :: self.world_size])
        return self._cache[1]

    def __iter__(self) -> Iterator[int]:
        """Continue from the current position, advancing it with every index handed out."""
        self._iter_start = (self.epoch, self.offset)
        while True:
            indices = self.epoch_indices(self.epoch)
            while self.offset < len(indices):
                index = int(indices[self.offset])
                self.offset += 1
                yield index
            self.epoch, self.offset = self.epoch + 1, 0

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Position to resume from: after everything yielded, or after ``consumed`` indices counted from the
        start of the latest iteration (use that when a DataLoader prefetched beyond what was trained on)."""
        epoch, offset = self.epoch, self.offset
        if consumed is not None:
            epoch, offset = divmod(
                self._iter_start[0] * self.epoch_length + self._iter_start[1] + consumed, self.epoch_length
            )
        return {
            "epoch": epoch,
            "offset": offset,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "dataset_len": self.dataset_len,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position. The order must be the same one (same clips, seed, shuffle); a different world size
        is accepted by keeping the number of clips consumed across all ranks, which is close but not exact."""
        for key in ("dataset_len", "seed", "shuffle"):
            if state[key] != getattr(self, key):
                raise FlashI2VError(
                    f"sampler state has {key}={state[key]!r} but this run has {getattr(self, key)!r}; "
                    "resume with the same clip index and seed, or start without the sampler state"
                )
        epoch, offset = int(state["epoch"]), int(state["offset"])
        if state["world_size"] != self.world_size:
            logger.warning(
                "resuming the sampler on %d ranks instead of %d: the clip order is only approximately continued",
                self.world_size,
                state["world_size"],
            )
            offset = min(offset * state["world_size"] // self.world_size, self.epoch_length)
        self.epoch, self.offset = epoch, offset
        self._iter_start = (epoch, offset)
