"""Distribution, applied from outside the model by small named functions (the only place that imports FSDP).

Works as a single process (no torchrun: no process group, nothing sharded) and under torchrun (FSDP2
per transformer block, then the root). CPU runs use gloo, GPU runs NCCL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import FlashI2VError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Read torchrun's environment; start a process group when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off, as the GPU hosts require
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return DistInfo(rank, world, local, dev)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a scalar over processes (for logging; gradients are averaged by FSDP itself)."""
    if info.distributed:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.AVG if value.device.type == "cuda" else dist.ReduceOp.SUM)
        if value.device.type != "cuda":
            value /= info.world_size
    return value


def apply_activation_checkpointing(transformer: nn.Module) -> None:
    """Recompute each block's activations in backward (parameter names unchanged). Done by the model's
    block loop through torch.utils.checkpoint, which composes with compiled blocks (torch's composable
    checkpoint hooks do not: Dynamo cannot trace their context manager)."""
    transformer.checkpoint_blocks = True


def apply_fsdp(root: nn.Module, blocks: nn.ModuleList) -> None:
    """FSDP2: shard every transformer block, then the root (embeddings, head, phi and the rest)."""
    from torch.distributed.fsdp import fully_shard

    for block in blocks:
        fully_shard(block)
    fully_shard(root)


def apply_context_parallel_groups(transformer: nn.Module, info: DistInfo, degree: int) -> tuple[int, int]:
    """Split the world into data-parallel groups of ``degree`` consecutive ranks that share each sample's
    tokens (Ulysses). Returns (data-parallel rank, data-parallel size) for sharding the data."""
    if degree == 1:
        return info.rank, info.world_size
    if info.world_size % degree:
        raise FlashI2VError(f"recipe.context_parallel={degree} does not divide the {info.world_size} processes")
    from ..context_parallel import apply_context_parallel

    mine = None
    for start in range(0, info.world_size, degree):  # every rank must create every group
        group = dist.new_group(list(range(start, start + degree)))
        if start <= info.rank < start + degree:
            mine = group
    apply_context_parallel(transformer, mine)
    return info.rank // degree, info.world_size // degree
