"""Ulysses context parallelism for the DiT's self-attention, applied from outside the model.

The video tokens are split along the sequence over the P ranks of a process group; everything in a
block is token-local except self-attention, where an all-to-all trades the sequence split for a head
split (each rank then attends over all tokens with H/P heads) and a second all-to-all trades back.
Cross-attention needs no communication (every rank holds the whole text). The head output is gathered
at the end, so callers see the full velocity. The model only calls the hooks installed here; it never
imports torch.distributed itself. The same code serves generation and
training: each exchange is a permutation of the data across ranks, so its backward is the inverse
exchange (custom autograd functions below).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .errors import FlashI2VError


class UlyssesContextParallel:
    """The sequence <-> head exchanges for one process group (default: the whole world)."""

    def __init__(self, group=None):
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def _check(self, length: int) -> None:
        if length % self.size:
            raise FlashI2VError(f"{length} video tokens do not split over context-parallel degree {self.size}: "
                                "pick a frame count / size whose token count divides by it")

    def shard_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """B x L x D -> this rank's B x L/P x D."""
        self._check(x.shape[1])
        return x.chunk(self.size, dim=1)[self.rank]

    def shard_rope(self, rope: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin tables L x D/2 -> this rank's rows."""
        return tuple(t.chunk(self.size, dim=0)[self.rank] for t in rope)

    def _exchange(self, x: torch.Tensor) -> torch.Tensor:
        """all-to-all over dim 0 (chunk j goes to rank j). Both buffers must be contiguous: empty_like of a
        permuted view would keep its strides, and the collective writes memory in order."""
        x = x.contiguous()
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=self.group)
        return out

    def to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """B x L/P x H x D (sequence split) -> B x L x H/P x D (head split); differentiable."""
        return _Exchange.apply(x, self, True)

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """B x L x H/P x D (head split) -> B x L/P x H x D (sequence split); differentiable."""
        return _Exchange.apply(x, self, False)

    def gather_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """B x L/P x C -> B x L x C on every rank. Every rank then computes the same loss from the whole
        output, so the backward keeps only this rank's slice of the gradient (no sum over ranks)."""
        return _Gather.apply(x, self)

    def _to_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, lp, h, d = x.shape
        x = x.reshape(b, lp, self.size, h // self.size, d).permute(2, 0, 1, 3, 4)  # P(dest) B Lp Hp D
        x = self._exchange(x)  # P(source = sequence chunk) B Lp Hp D
        return x.permute(1, 0, 2, 3, 4).reshape(b, self.size * lp, h // self.size, d)

    def _to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, length, hp, d = x.shape
        lp = length // self.size
        x = x.reshape(b, self.size, lp, hp, d).permute(1, 0, 2, 3, 4)  # P(dest = sequence chunk) B Lp Hp D
        x = self._exchange(x)  # P(source = head group) B Lp Hp D
        return x.permute(1, 2, 0, 3, 4).reshape(b, lp, self.size * hp, d)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=1)


class _Exchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cp, to_heads):
        ctx.cp, ctx.to_heads = cp, to_heads
        return cp._to_heads(x) if to_heads else cp._to_tokens(x)

    @staticmethod
    def backward(ctx, grad):
        return (ctx.cp._to_tokens(grad) if ctx.to_heads else ctx.cp._to_heads(grad)), None, None


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cp):
        ctx.cp = cp
        return cp._gather(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.chunk(ctx.cp.size, dim=1)[ctx.cp.rank].contiguous(), None


def apply_context_parallel(transformer, group=None) -> UlyssesContextParallel:
    """Install Ulysses hooks on a FlashI2VTransformer (its head count must divide by the group size)."""
    cp = UlyssesContextParallel(group)
    heads = transformer.config.num_heads
    if heads % cp.size:
        raise FlashI2VError(f"{heads} attention heads do not divide by context-parallel degree {cp.size}: "
                            "use a degree that divides the head count (12 for the 1.3B: 2, 3, 4, 6)")
    transformer.context_parallel = cp
    for block in transformer.blocks:
        block.self_attn.context_parallel = cp
    return cp
