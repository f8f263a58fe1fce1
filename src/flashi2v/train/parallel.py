"""Distribution, applied from outside the model by small named functions (the only place that imports FSDP).

Works as a single process (no torchrun: no process group, nothing sharded) and under torchrun (FSDP2
per transformer block, then the root). CPU runs use gloo, GPU runs NCCL.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

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


# Which op outputs selective checkpointing keeps (everything else in a block is recomputed in backward).
# "attention": the SDPA kernels' outputs (incl. logsumexp), ~59 % of a block's forward FLOPs at 20k
# tokens for about 2 token-sized tensors per block. "selective": also every matmul output, so backward
# only re-runs the elementwise work (norms, AdaLN, RoPE, GELU; fused by Inductor when compiled).
# Time and memory of each mode for the 1.3B: benchmarks/train_step.py, docs/performance.md "Training step".
_ATTENTION_OPS = {getattr(torch.ops.aten, name).default for name in (
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu",
) if hasattr(torch.ops.aten, name)}
_MATMUL_OPS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten._addmm_activation.default}
CHECKPOINT_MODES = ("none", "full", "attention", "selective")


def _save_attention(ctx, op, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if op in _ATTENTION_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _save_attention_and_matmuls(ctx, op, *args, **kwargs):
    keep = op in _ATTENTION_OPS or op in _MATMUL_OPS
    return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE


# The policy per mode ("full": none, recompute everything). Shared function objects: Dynamo guards on
# the policy, so one per block would trace every block anew.
_POLICIES = {"full": None, "attention": _save_attention, "selective": _save_attention_and_matmuls}


class CheckpointedBlock:
    """Mixin put in front of a block's class: its forward runs under ``torch.utils.checkpoint``.

    The checkpoint sits *inside* the block's own call, so ``apply_compile`` (``block.compile()``) traces
    it: Dynamo turns it into a checkpoint region and the selective policy tags the graph, which the
    partitioner obeys. A checkpoint around an already compiled block could only recompute all of it.
    ``preserve_rng_state=False``: the blocks draw no random numbers.
    """

    checkpoint_policy = None

    def forward(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return super().forward(*args, **kwargs)
        policy = self.checkpoint_policy
        if policy is None:
            return checkpoint(super().forward, *args, use_reentrant=False, preserve_rng_state=False, **kwargs)
        # The partial is built here, not stored: Dynamo accepts a context_fn it sees being made.
        return checkpoint(super().forward, *args, use_reentrant=False, preserve_rng_state=False,
                          context_fn=functools.partial(create_selective_checkpoint_contexts, policy), **kwargs)


_CHECKPOINTED_CLASSES: dict[type, type] = {}


def _checkpointed_class(cls: type) -> type:
    """One subclass per block class (not per block: Dynamo guards on the type, 30 types = 30 traces)."""
    if cls not in _CHECKPOINTED_CLASSES:
        _CHECKPOINTED_CLASSES[cls] = type("Checkpointed" + cls.__name__, (CheckpointedBlock, cls), {"plain_class": cls})
    return _CHECKPOINTED_CLASSES[cls]


def apply_activation_checkpointing(transformer: nn.Module, mode: str = "full", fraction: float = 1.0) -> None:
    """Activation checkpointing of the transformer blocks, in place; parameter names unchanged.

    mode: "full" keeps only each block's inputs and recomputes its whole forward in backward (least
    memory, ~4 forwards of work per step); "attention" also keeps the attention outputs, so attention,
    ~59 % of the FLOPs at 20k tokens, is not run again; "selective" keeps attention and matmul outputs
    and recomputes only elementwise work; "none" keeps everything (most memory).
    fraction: share of the blocks checkpointed (the first round(fraction * n)); the others keep all
    their activations: a knob between the mode's memory and "none"'s.
    Call before ``apply_compile``/FSDP (it changes the blocks' class, as FSDP does); calling it again
    replaces the previous setting.
    """
    if mode not in CHECKPOINT_MODES:
        raise FlashI2VError(f"activation checkpointing mode {mode!r}: use one of {CHECKPOINT_MODES}")
    if not 0.0 <= fraction <= 1.0:
        raise FlashI2VError(f"activation checkpointing fraction {fraction}: use a number in [0, 1]")
    blocks = transformer.blocks
    count = 0 if mode == "none" else round(fraction * len(blocks))
    for i, block in enumerate(blocks):
        base = getattr(type(block), "plain_class", type(block))
        if i < count:
            block.__class__ = _checkpointed_class(base)
            block.checkpoint_policy = _POLICIES[mode]
        else:
            block.__class__ = base
            block.__dict__.pop("checkpoint_policy", None)
    transformer.checkpoint_blocks = count > 0


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
