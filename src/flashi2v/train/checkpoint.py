"""Training checkpoints: one folder per step, written atomically, checked before use, the newest K kept.

``step-00000100/`` holds the model, EMA and optimizer (torch.distributed.checkpoint, so it works
sharded or not and reshards on load), ``rng-<rank>.pt`` and ``train_state.json`` (step, LR schedule,
sampler position, world size, model settings). It is written as ``step-00000100.tmp/``, synced to disk and
renamed only when complete, so a crash mid-write never leaves a folder that looks usable, and older
checkpoints are pruned only after the new one is in place.

A run folder may come from someone else, so reading one never executes code: DCP's ``.metadata`` is a
pickle, read here by an unpickler that builds only DCP's own metadata classes; the non-tensor values
(optimizer hyper-parameters) and the RNG files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import shutil
import typing
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader, _StorageInfo
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..errors import FlashI2VError
from .parallel import DistInfo, barrier

log = logging.getLogger("flashi2v.train")

STEP_DIR = re.compile(r"^step-(\d{8})$")
STATE_FILE = "train_state.json"
METADATA_FILE = ".metadata"


class DamagedCheckpoint(FlashI2VError):
    """A checkpoint folder that is incomplete or unreadable: resume falls back to an older one."""


# ---- reading DCP's pickled metadata without executing code ----------------------------------------------

def _allowed_globals() -> dict[tuple[str, str], object]:
    """Everything a DCP ``.metadata`` pickle refers to: DCP's metadata classes, torch.Size, dtypes, layouts
    (through torch's own by-name lookup) and the path type of ``storage_meta.checkpoint_id``."""
    import pathlib

    allowed: typing.ClassVar[dict[tuple[str, str], object]] = {}
    for cls in (dcp_metadata.Metadata, dcp_metadata.TensorStorageMetadata, dcp_metadata.BytesStorageMetadata,
                dcp_metadata.ChunkStorageMetadata, dcp_metadata.TensorProperties, dcp_metadata.StorageMeta,
                dcp_metadata.MetadataIndex, dcp_metadata._MEM_FORMAT_ENCODING, _StorageInfo):
        allowed[(cls.__module__, cls.__qualname__)] = cls
    allowed[("torch", "Size")] = torch.Size
    allowed[("torch.serialization", "_get_layout")] = torch.serialization._get_layout  # name -> torch.layout only
    for name, value in vars(torch).items():
        if isinstance(value, torch.dtype):
            allowed[("torch", name)] = value
    for name in ("PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path"):
        allowed[("pathlib", name)] = getattr(pathlib, name)
    for cls in (set, frozenset, slice):
        allowed[("builtins", cls.__name__)] = cls
    allowed[("collections", "OrderedDict")] = __import__("collections").OrderedDict
    return allowed


class UnsafePickle(pickle.UnpicklingError):
    """The pickle names something outside the allowed classes: it could run code, so it is not loaded."""


class _MetadataUnpickler(pickle.Unpickler):
    allowed: typing.ClassVar[dict[tuple[str, str], object]] = {}

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickle(f"{module}.{name}") from None


def read_dcp_metadata(path: Path) -> dcp_metadata.Metadata:
    """DCP's ``.metadata`` through the restricted unpickler. FlashI2VError if it names anything else
    (a planted payload), DamagedCheckpoint if it is missing, truncated or not DCP metadata."""
    if not _MetadataUnpickler.allowed:
        _MetadataUnpickler.allowed = _allowed_globals()
    try:
        with open(path, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
    except UnsafePickle as e:
        raise FlashI2VError(f"'{path}' is not plain checkpoint metadata (it refers to {e}, which could run code "
                            "when loaded): refusing to resume from it; use a checkpoint you wrote yourself") from None
    except FileNotFoundError:
        raise DamagedCheckpoint(f"'{path}' is missing") from None
    except Exception as e:  # truncated or garbage bytes
        raise DamagedCheckpoint(f"'{path}' is unreadable ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})") from None
    if not isinstance(metadata, dcp_metadata.Metadata) or not isinstance(metadata.storage_data, dict):
        raise DamagedCheckpoint(f"'{path}' does not hold DCP metadata")
    return metadata


class SafeReader(FileSystemReader):
    """FileSystemReader whose metadata comes from the restricted unpickler."""

    def read_metadata(self, *args, **kwargs) -> dcp_metadata.Metadata:
        if kwargs.get("rank") is not None:  # per-rank metadata files are not written by save_checkpoint
            raise FlashI2VError(f"'{self.path}' uses per-rank DCP metadata, which flashi2v does not write")
        metadata = read_dcp_metadata(Path(self.path) / METADATA_FILE)
        if metadata.storage_meta is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def _refused_global(error: Exception) -> str | None:
    """The line of a weights_only refusal that names the global it would not load, if that is the cause."""
    return next((line.strip() for line in str(error).splitlines() if "unsupported global" in line.lower()), None)


class SafeLoadPlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner that reads non-tensor values (optimizer hyper-parameters) with weights_only=True;
    the default would unpickle them with weights_only=False."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            raise FlashI2VError(f"checkpoint value {read_item.dest_index.fqn!r} is not plain data "
                                f"({_refused_global(e) or str(e).splitlines()[0]}): refusing to resume from it") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


# ---- finding and checking checkpoints -------------------------------------------------------------------

def step_folders(root: Path, complete_only: bool = True) -> list[Path]:
    """Checkpoint folders (by default only those with a train_state.json), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and p.is_dir()
             and (not complete_only or (p / STATE_FILE).is_file())]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(root: Path) -> Path | None:
    folders = step_folders(root)
    return folders[-1] if folders else None


def read_train_state(folder: Path) -> dict:
    """train_state.json, checked for the fields resume needs (DamagedCheckpoint if it is unusable)."""
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise DamagedCheckpoint(f"'{path}' is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedCheckpoint(f"'{path}' is not valid JSON ({e})") from None
    def whole(value, low: int = 0) -> bool:
        return type(value) is int and value >= low

    ok = (isinstance(state, dict) and whole(state.get("step")) and whole(state.get("world_size", 1), 1)
          and isinstance(state.get("scheduler"), dict) and whole(state["scheduler"].get("last_epoch"), -1)
          and isinstance(state["scheduler"].get("base_lrs"), list)
          and isinstance(state.get("sampler"), dict)
          and all(whole(state["sampler"].get(k)) for k in ("epoch", "offset", "seed", "dataset_len"))
          and whole(state["sampler"].get("world_size"), 1) and isinstance(state["sampler"].get("shuffle"), bool))
    if not ok:
        raise DamagedCheckpoint(f"'{path}' lacks a valid step / scheduler / sampler state")
    match = STEP_DIR.match(folder.name)
    if match and int(match.group(1)) != state["step"]:
        raise DamagedCheckpoint(f"'{path}' says step {state['step']} in folder {folder.name}")
    return state


def _read_rng(path: Path) -> dict:
    try:
        rng = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise DamagedCheckpoint(f"'{path}' is missing") from None
    except pickle.UnpicklingError as e:
        if _refused_global(e):
            raise FlashI2VError(f"'{path}' is not a plain RNG state ({_refused_global(e)}): refusing to resume "
                                "from it; use a checkpoint you wrote yourself") from None
        raise DamagedCheckpoint(f"'{path}' is unreadable ({str(e).splitlines()[0]})") from None
    except Exception as e:  # truncated zip, garbage
        raise DamagedCheckpoint(f"'{path}' is unreadable ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not (isinstance(rng, dict) and isinstance(rng.get("cpu"), torch.Tensor) and rng["cpu"].dtype == torch.uint8):
        raise DamagedCheckpoint(f"'{path}' does not hold an RNG state")
    return rng


def check_checkpoint(folder: Path) -> tuple[dict, dcp_metadata.Metadata]:
    """(train_state, DCP metadata) of a checkpoint folder whose every file is present, readable and as long
    as its metadata says. DamagedCheckpoint names the first problem; FlashI2VError refuses unsafe contents."""
    if not folder.is_dir():
        raise DamagedCheckpoint(f"'{folder}' is not a folder")
    state = read_train_state(folder)
    metadata = read_dcp_metadata(folder / METADATA_FILE)
    for info in metadata.storage_data.values():
        if not isinstance(info, _StorageInfo) or not isinstance(info.relative_path, str) \
                or Path(info.relative_path).name != info.relative_path:
            raise DamagedCheckpoint(f"'{folder / METADATA_FILE}' points outside its folder")
        if info.transform_descriptors:  # save_checkpoint writes plain tensors; no decoder runs on a loaded file
            raise DamagedCheckpoint(f"'{folder / METADATA_FILE}' asks for stream transforms {info.transform_descriptors}")
        data = folder / info.relative_path
        if not data.is_file():
            raise DamagedCheckpoint(f"'{data}' is missing")
        if data.stat().st_size < info.offset + info.length:
            raise DamagedCheckpoint(f"'{data}' is truncated ({data.stat().st_size} of {info.offset + info.length} bytes)")
    for rank in range(state.get("world_size", 1)):
        _read_rng(folder / f"rng-{rank}.pt")
    return state, metadata


def find_resumable(root: Path, announce: bool = True) -> tuple[Path, dict]:
    """The newest complete checkpoint under ``root`` and its train_state; damaged newer ones are named
    (one warning line each) and passed over. FlashI2VError if none is complete."""
    damaged = []
    for folder in reversed(step_folders(root, complete_only=False)):
        try:
            state, _ = check_checkpoint(folder)
        except DamagedCheckpoint as e:
            damaged.append(folder.name)
            if announce:
                log.warning("checkpoint %s is damaged: %s", folder.name, e)
            continue
        if damaged and announce:
            log.warning("resuming from %s, the newest complete checkpoint (passed over: %s)", folder.name,
                        ", ".join(damaged))
        return folder, state
    detail = f" (damaged: {', '.join(damaged)})" if damaged else ""
    raise FlashI2VError(f"--resume: no complete checkpoint under '{root}'{detail}: start without --resume "
                        "(with --overwrite if the folder holds a run)")


# ---- writing --------------------------------------------------------------------------------------------

def resume_point(root: Path, resume, announce: bool) -> tuple[Path, dict]:
    """(folder, train_state) to resume from: the newest complete checkpoint under ``root`` (damaged newer ones are
    named and passed over) when ``resume`` is True, else the given step folder, which must be complete."""
    if resume is True:
        return find_resumable(root, announce=announce)
    folder = Path(resume)
    try:
        state, _ = check_checkpoint(folder)
    except DamagedCheckpoint as e:
        raise FlashI2VError(f"cannot resume from '{folder}': {e}; pass another step folder, or --resume alone "
                            "for the newest complete one") from None
    return folder, state


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Flush every file of ``folder`` and the folder itself, so the rename that publishes it comes after its data."""
    for p in folder.iterdir():
        if p.is_file():
            _fsync(p)
    _fsync(folder)


def _options(trainable_only: bool) -> StateDictOptions:
    """A LoRA run saves and restores only the trainable weights: the frozen base is rebuilt from its source."""
    return StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only)


def save_checkpoint(root: Path, step: int, info: DistInfo, *, model, ema, optimizer, train_state: dict,
                    keep: int, trainable_only: bool = False) -> Path:
    """Write step ``step`` atomically and prune to the newest ``keep`` folders. Collective: call on every rank.
    ``trainable_only``: leave frozen parameters out of the model and optimizer state (a LoRA run)."""
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # an earlier crash's incomplete write of this step
        tmp.mkdir(parents=True)
    barrier(info)
    options = _options(trainable_only)
    state = {
        "model": get_model_state_dict(model, options=options),
        "ema": get_model_state_dict(ema),
        "optim": get_optimizer_state_dict(model, optimizer, options=options),
    }
    with warnings.catch_warnings():  # a single process is a supported case, not worth a warning
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, checkpoint_id=str(tmp))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, tmp / f"rng-{info.rank}.pt")
    barrier(info)
    if info.is_main:
        (tmp / STATE_FILE).write_text(json.dumps({**train_state, "world_size": info.world_size}, indent=2))
        _sync_folder(tmp)
        old = root / f"step-{step:08d}.old"
        if final.exists():  # the same step saved again: keep it until the new copy is in place
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        _fsync(root)
        shutil.rmtree(old, ignore_errors=True)
        for stale in [*root.glob("step-*.tmp"), *root.glob("step-*.old")]:  # left by crashed saves
            shutil.rmtree(stale, ignore_errors=True)
        # newer folders (a resumed run passed over them as damaged) are left to be replaced at their step:
        # counting them could prune the checkpoint just written
        done = [p for p in step_folders(root) if int(STEP_DIR.match(p.name).group(1)) <= step]
        for previous in done[:-keep]:
            shutil.rmtree(previous, ignore_errors=True)
    barrier(info)
    return final


# ---- loading --------------------------------------------------------------------------------------------

def _check_shapes(folder: Path, metadata: dcp_metadata.Metadata, state: dict) -> None:
    """Clear error when the checkpoint's tensors do not fit this model (other dims or layout)."""
    saved = metadata.state_dict_metadata
    for prefix in ("model", "ema"):
        mine = {f"{prefix}.{k}": tuple(v.shape) for k, v in state[prefix].items()}
        theirs = {k: tuple(v.size) for k, v in saved.items() if k.startswith(prefix + ".") and hasattr(v, "size")}
        missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
        differ = sorted(k for k in set(mine) & set(theirs) if mine[k] != theirs[k])
        if missing or extra or differ:
            what = (f"{differ[0]} is {list(theirs[differ[0]])} there, {list(mine[differ[0]])} here" if differ else
                    f"{(missing or extra)[0]} is {'missing there' if missing else 'not in this model'}")
            raise FlashI2VError(f"checkpoint '{folder}' holds a different model ({what}): resume with the "
                                "model.* settings it was trained with, or start a new run in another output.dir")


def _load_dcp(state: dict, folder: Path) -> None:
    """dcp.load through the safe reader and planner; its failures (wrapped per rank) as one FlashI2VError."""
    from torch.distributed.checkpoint.api import CheckpointException

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        try:
            dcp.load(state, storage_reader=SafeReader(str(folder)), planner=SafeLoadPlanner())
        except CheckpointException as e:  # a BaseException holding each failed rank's exception
            error = next(iter(e.failures.values()))[0]
        except Exception as e:  # noqa: BLE001 (any reader failure means this checkpoint cannot be used)
            error = e
        else:
            return
    if isinstance(error, FlashI2VError):
        raise error from None
    detail = (str(error).strip().splitlines() or [""])[0]
    raise FlashI2VError(f"checkpoint '{folder}' could not be loaded ({type(error).__name__}: {detail}): resume "
                        "from an older step folder")


def load_checkpoint(folder: Path, info: DistInfo, *, model, ema, optimizer, trainable_only: bool = False) -> dict:
    """Restore model, EMA, optimizer and this rank's RNG from ``folder``; return its train_state."""
    train_state, metadata = check_checkpoint(folder)
    options = _options(trainable_only)
    state = {
        "model": get_model_state_dict(model, options=options),
        "ema": get_model_state_dict(ema),
        "optim": get_optimizer_state_dict(model, optimizer, options=options),
    }
    _check_shapes(folder, metadata, state)
    _load_dcp(state, folder)
    set_model_state_dict(model, state["model"], options=options)
    set_model_state_dict(ema, state["ema"])
    set_optimizer_state_dict(model, optimizer, state["optim"], options=options)
    rng_file = folder / f"rng-{info.rank}.pt"
    if rng_file.is_file():  # a run resumed on more ranks than it was saved with: new ranks keep their seed
        rng = _read_rng(rng_file)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return train_state


def full_state_dict(module) -> dict[str, torch.Tensor]:
    """Unsharded, CPU copy of a (possibly FSDP-sharded) module's weights; collective under FSDP."""
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
