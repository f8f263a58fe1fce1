"""A file of pre-rendered clips: one safetensors tensor ``video`` (uint8, N x 3 x F x H x W) and the captions.

Rendering camera-motion clips costs ~25 ms of CPU a clip; a study that trains many small models on one GPU at
once would spend its CPUs re-rendering the same clips in every process. Written once, the file is memory-mapped
by every training process (one copy in the page cache), and clip ``i`` is read as a slice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import FlashI2VError, FlashI2VFileError
from ..outputs import staged_file
from ..video import to_unit_range

VIDEO_KEY = "video"


def write_clip_file(path: str | os.PathLike, videos: torch.Tensor, captions: Iterable[str]) -> Path:
    """Write uint8 ``videos`` (N x 3 x F x H x W) and one caption per clip; atomic (temporary file, then rename)."""
    from safetensors.torch import save_file

    captions = list(captions)
    if videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[1] != 3:
        raise FlashI2VError(f"clip file: videos must be uint8 N x 3 x F x H x W, got {videos.dtype} {tuple(videos.shape)}")
    if len(captions) != videos.shape[0]:
        raise FlashI2VError(f"clip file: {videos.shape[0]} clips but {len(captions)} captions")
    path = Path(path)
    with staged_file(path) as tmp:
        save_file({VIDEO_KEY: videos.contiguous()}, str(tmp), metadata={"captions": json.dumps(captions)})
    return path


class ClipFile(Dataset):
    """Clips of a file written by ``write_clip_file``, read lazily (each worker maps the file once).

    Items are the ``VideoClipDataset`` dict: float video 3 x F x H x W in [-1, 1], frame 0 as the image."""

    def __init__(self, path: str | os.PathLike):
        from safetensors import safe_open

        self.path = Path(path)
        fix = "write it again (flashi2v study ... renders it)"
        if not self.path.is_file():
            raise FlashI2VFileError(f"clip file '{self.path}' not found: {fix}", self.path)
        try:
            with safe_open(str(self.path), framework="pt") as f:
                shape = f.get_slice(VIDEO_KEY).get_shape()
                captions = json.loads((f.metadata() or {}).get("captions", "null"))
        except Exception as err:  # safetensors raises its own error types for a damaged header
            raise FlashI2VError(f"clip file '{self.path}' cannot be read ({type(err).__name__}): {fix}") from None
        if len(shape) != 5 or not isinstance(captions, list) or len(captions) != shape[0]:
            raise FlashI2VError(f"clip file '{self.path}' holds no clip tensor with one caption per clip: {fix}")
        self.shape, self.captions = tuple(shape), [str(c) for c in captions]
        self._file = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        from safetensors import safe_open

        if self._file is None:  # opened in the worker process that reads it, not pickled across
            self._file = safe_open(str(self.path), framework="pt")
        video = to_unit_range(self._file.get_slice(VIDEO_KEY)[index])
        return {"video": video, "image": video[:, 0].clone(), "caption": self.captions[index], "index": index,
                "skipped": []}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        return state

