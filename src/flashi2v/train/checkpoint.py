"""Training checkpoints: one folder per step, written atomically, the newest K kept.

``step-00000100/`` holds the model, EMA and optimizer (torch.distributed.checkpoint, so it works
sharded or not and reshards on load), ``rng-<rank>.pt`` and ``train_state.json`` (step, LR schedule,
sampler position). It is written as ``step-00000100.tmp/`` and renamed only when complete, so a crash
mid-write never leaves a folder that looks usable.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..errors import FlashI2VError
from .parallel import DistInfo, barrier

STEP_DIR = re.compile(r"^step-(\d{8})$")
STATE_FILE = "train_state.json"


def step_folders(root: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(root: Path) -> Path | None:
    folders = step_folders(root)
    return folders[-1] if folders else None


def save_checkpoint(root: Path, step: int, info: DistInfo, *, model, ema, optimizer, train_state: dict,
                    keep: int) -> Path:
    """Write step ``step`` atomically and prune to the newest ``keep`` folders. Collective: call on every rank."""
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(info)
    state = {
        "model": get_model_state_dict(model),
        "ema": get_model_state_dict(ema),
        "optim": get_optimizer_state_dict(model, optimizer),
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
        (tmp / STATE_FILE).write_text(json.dumps(train_state, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in step_folders(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(info)
    return final


def load_checkpoint(folder: Path, info: DistInfo, *, model, ema, optimizer) -> dict:
    """Restore model, EMA, optimizer and this rank's RNG from ``folder``; return its train_state."""
    if not (folder / STATE_FILE).is_file():
        raise FlashI2VError(f"'{folder}' is not a complete training checkpoint (no {STATE_FILE}): pass a step-N folder or --resume")
    state = {
        "model": get_model_state_dict(model),
        "ema": get_model_state_dict(ema),
        "optim": get_optimizer_state_dict(model, optimizer),
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(folder))
    set_model_state_dict(model, state["model"])
    set_model_state_dict(ema, state["ema"])
    set_optimizer_state_dict(model, optimizer, state["optim"])
    rng_file = folder / f"rng-{info.rank}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return json.loads((folder / STATE_FILE).read_text())


def full_state_dict(module) -> dict[str, torch.Tensor]:
    """Unsharded, CPU copy of a (possibly FSDP-sharded) module's weights; collective under FSDP."""
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
