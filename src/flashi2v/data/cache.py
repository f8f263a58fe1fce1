"""Precomputed training inputs: VAE latents of each clip and of its first frame, and text embeddings.

Encoding a 49 x 480 x 832 clip with the Wan VAE and a caption with umT5 costs more than a training
step of the DiT; caching them once makes training cheaper and the result identical (the same frozen
encoders compute the same tensors). Layout of a cache folder:

- ``shard-00000.safetensors`` ...: tensors ``<i>.x`` (C x T x H x W), ``<i>.s`` (C x 1 x H x W) and
  ``<i>.context`` (L_i x D, the caption embedding cut at its real length; the model zero-pads it back);
- ``null_context.safetensors``: the embedding of the empty caption (caption dropout);
- ``index.json``: per sample its shard, caption and source clip, plus the settings used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..errors import FlashI2VError
from ..outputs import check_output, staged_folder, write_text_atomic

INDEX = "index.json"
NULL = "null_context.safetensors"


@torch.no_grad()
def encode_videos(vae, video: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels in [-1, 1] -> (x: B x C x T x h x w, s: B x C x 1 x h x w), both normalised float32 latents."""
    x = vae.encode(video.to(vae.device))
    s = vae.encode(image[:, :, None].to(vae.device))
    return x, s


def trim_context(context: torch.Tensor) -> torch.Tensor:
    """L x D embedding -> its first rows up to the last non-zero one (the text encoder zeroes the padding)."""
    nonzero = context.abs().sum(dim=-1).nonzero()
    length = int(nonzero.max()) + 1 if len(nonzero) else 1
    return context[:length].contiguous()


def pad_contexts(contexts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack L_i x D embeddings into B x max(L_i) x D with zero padding (what the DiT pads to anyway)."""
    length = max(c.shape[0] for c in contexts)
    return torch.stack([torch.nn.functional.pad(c, (0, 0, 0, length - c.shape[0])) for c in contexts])


def check_cache_args(folder: str | os.PathLike, index: str | os.PathLike | None = None, text_len: int = 512,
                     shard_size: int = 64, overwrite: bool = False) -> Path:
    """Refuse bad settings and an output folder that is the clip index (or its video folder), a file, or a
    non-empty folder without ``overwrite``: before any clip is decoded."""
    if isinstance(text_len, bool) or not isinstance(text_len, int) or text_len < 1:
        raise FlashI2VError(f"text_len {text_len!r} must be a positive integer (the transformer's text_len, 512 for Wan)")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise FlashI2VError(f"shard_size {shard_size!r} must be a positive number of samples per shard (e.g. 64)")
    inputs = [("clip index", index)] if index is not None else []
    return check_output(folder, inputs, overwrite, folder=True)


def write_latent_cache(
    dataset,
    vae,
    text_encoder,
    text_len: int,
    folder: str | os.PathLike,
    shard_size: int = 64,
    batch_size: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Encode every clip of ``dataset`` (a VideoClipDataset) into ``folder``. Returns the index dict.

    Bad clips are skipped by the dataset itself (and listed under ``skipped`` in the index). An existing
    non-empty ``folder`` is replaced only with ``overwrite``; the cache is built in a temporary folder
    and renamed at the end, so an interrupted run leaves no cache that looks complete.
    """
    folder = check_cache_args(folder, None, text_len, shard_size, overwrite)
    with staged_folder(folder) as tmp:
        index = _write_cache(dataset, vae, text_encoder, text_len, tmp, shard_size, batch_size, progress)
    return index


def _write_cache(dataset, vae, text_encoder, text_len: int, folder: Path, shard_size: int, batch_size: int,
                 progress: bool) -> dict[str, Any]:
    from .dataset import SkipLog, collate_clips

    samples, shard, shard_id, seen = [], {}, 0, set()
    skipped = SkipLog()

    def flush():
        nonlocal shard, shard_id
        if shard:
            tmp = folder / f".shard-{shard_id:05d}.tmp"
            save_file(shard, str(tmp))
            os.replace(tmp, folder / f"shard-{shard_id:05d}.safetensors")
            shard, shard_id = {}, shard_id + 1

    order = list(range(len(dataset)))
    for start in tqdm(range(0, len(order), batch_size), desc="caching", unit="batch", disable=not progress):
        batch = collate_clips([dataset[i] for i in order[start : start + batch_size]])
        skipped.update(batch["skipped"])
        keep = [j for j, idx in enumerate(batch["index"].tolist()) if idx not in seen]  # skips fall back to a neighbour
        if not keep:
            continue
        x, s = encode_videos(vae, batch["video"][keep], batch["image"][keep])
        captions = [batch["caption"][j] for j in keep]
        contexts = text_encoder.encode(captions, max_length=text_len).cpu()
        for k, j in enumerate(keep):
            i = len(samples)
            idx = int(batch["index"][j])
            seen.add(idx)
            shard[f"{i}.x"], shard[f"{i}.s"] = x[k].cpu().contiguous(), s[k].cpu().contiguous()
            shard[f"{i}.context"] = trim_context(contexts[k])
            samples.append({"shard": shard_id, "caption": captions[k], "clip": idx, "path": dataset.records[idx].path})
            if len(shard) >= 3 * shard_size:
                flush()
    flush()
    null = trim_context(text_encoder.encode([""], max_length=text_len)[0].cpu())
    save_file({"context": null}, str(folder / NULL))
    index = {
        "samples": samples,
        "text_len": text_len,
        "skipped": skipped.reasons,
        "data": {k: getattr(dataset.config, k) for k in ("num_frames", "fps", "height", "width")},
    }
    write_text_atomic(folder / INDEX, json.dumps(index, indent=1))
    return index


def _load_shard(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise FlashI2VError(f"latent cache file '{path}' is truncated or corrupt ({str(err).splitlines()[0]}): "
                            "rebuild the cache with `flashi2v data cache --overwrite`") from None


def read_cache_index(path: Path) -> dict[str, Any]:
    """A cache's index.json, checked: a list of samples, each with an integer shard and a text caption."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise FlashI2VError(f"'{path}' is not a valid cache index ({type(err).__name__}): rebuild the cache") from None
    samples = index.get("samples") if isinstance(index, dict) else None
    if not isinstance(samples, list):
        raise FlashI2VError(f"'{path}' needs a \"samples\" list: rebuild the cache with `flashi2v data cache`")
    for i, sample in enumerate(samples):
        if (not isinstance(sample, dict) or isinstance(sample.get("shard"), bool)
                or not isinstance(sample.get("shard"), int) or sample["shard"] < 0
                or not isinstance(sample.get("caption"), str)):
            raise FlashI2VError(f"'{path}': sample {i} needs an integer \"shard\" >= 0 and a text \"caption\", "
                                f"got {sample!r}; rebuild the cache")
    return index


class CachedLatentDataset(Dataset):
    """Samples of a cache folder: ``{"x", "s", "context", "caption", "index", "skipped": []}``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not (self.folder / INDEX).is_file():
            raise FlashI2VError(f"'{folder}' is not a latent cache (no {INDEX}): create one with `flashi2v data cache`")
        self.index = read_cache_index(self.folder / INDEX)
        self.samples = self.index["samples"]
        if not self.samples:
            raise FlashI2VError(
                f"latent cache '{folder}' holds no samples: rebuild it from a clip index with usable clips"
            )
        needed = {f"shard-{m['shard']:05d}.safetensors" for m in self.samples} | {NULL}
        missing = sorted(needed - {p.name for p in self.folder.iterdir()})
        if missing:
            raise FlashI2VError(f"latent cache '{folder}' lacks {len(missing)} file(s) (first: {missing[0]}): "
                                "rebuild it with `flashi2v data cache --overwrite`")
        self.null_context = _load_shard(self.folder / NULL)["context"]
        self._shards: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _shard(self, shard_id: int) -> dict[str, torch.Tensor]:
        if shard_id not in self._shards:
            self._shards = {shard_id: _load_shard(self.folder / f"shard-{shard_id:05d}.safetensors")}
        return self._shards[shard_id]

    def __getitem__(self, i: int) -> dict[str, Any]:
        meta = self.samples[i]
        shard = self._shard(meta["shard"])
        return {
            "x": shard[f"{i}.x"],
            "s": shard[f"{i}.s"],
            "context": shard[f"{i}.context"],
            "caption": meta["caption"],
            "index": i,
            "skipped": [],
        }


def collate_cached(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "x": torch.stack([b["x"] for b in batch]),
        "s": torch.stack([b["s"] for b in batch]),
        "context": pad_contexts([b["context"] for b in batch]),
        "caption": [b["caption"] for b in batch],
        "index": torch.tensor([b["index"] for b in batch]),
        "skipped": [],
    }
