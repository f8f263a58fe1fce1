"""Step caching for sampling: reuse the transformer blocks' output across denoising steps (off by default).

First-block cache (FBCache / TeaCache style), applied from outside the model: at every forward the first
block runs; the change it makes to the tokens (its residual) is compared with the previous step's. While
the relative L1 change, accumulated over the steps skipped since the last full forward, stays below
``threshold``, blocks 1..N-1 are not run: the residual they added at the last full forward is added
instead. Otherwise they run and their residual is stored.

    from flashi2v.step_cache import apply_step_cache
    cache = apply_step_cache(pipe.transformer, threshold=0.1)   # or pipe.enable_step_cache(0.1)
    video = pipe(image, prompt)                                  # the pipeline resets the cache per call
    print(cache.stats())                                         # steps computed / skipped

Guards against the known failure (frozen image-to-video motion):
- the first ``warmup_steps`` steps and the last ``final_steps`` steps always run in full (the last one
  needs ``reset(num_steps)``, which the pipeline calls at the start of every generation);
- threshold 0 never skips (bit-identical to no cache);
- one decision per step for the whole batch: batched CFG (cond + uncond as a batch of 2B) and
  unbatched CFG (two forwards at one timestep: the first decides, the second follows) skip together;
- under context parallelism the change is summed over the ranks, so all ranks decide alike;
- state never leaks between generations: ``reset`` clears it, and a forward whose timestep does not
  decrease or whose token shape changed starts a new generation on its own.
``benchmarks/step_cache.py`` measures what a threshold costs in motion and first-frame fidelity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import FlashI2VError

# Recommended threshold, from benchmarks/step_cache.py on the built-in model at its defaults: the largest measured
# at several seeds that keeps the mean motion and frame-0 PSNR within the bound (the table: docs/performance.md,
# "Step caching"). Re-measure for other models.
DEFAULT_THRESHOLD = 0.2
_CUDA_GRAPHS = ("the step cache decides per step on the host, which a CUDA graph of the whole forward cannot "
                "replay: use it without cuda_graphs (apply_fast_path's default)")


@dataclass
class _Branch:
    """State of one forward per step (batched CFG or no CFG: one branch; unbatched CFG: two)."""

    first_residual: torch.Tensor | None = None  # block 0's residual at the previous step
    rest_residual: torch.Tensor | None = None  # residual of blocks 1..N-1 at the last full forward


@dataclass
class FirstBlockCache:
    """Decide per step whether blocks 1..N-1 of a transformer can be skipped. See the module docstring.

    threshold: largest accumulated relative L1 change of block 0's residual at which a step is skipped
      (0: never skip). warmup_steps / final_steps: steps at the start / end that always run in full.
    Counters (of the current, or last, generation): ``computed`` and ``skipped`` steps, ``decisions``
    (True = skipped, one per step) and ``changes`` (the accumulated change each decision saw).
    """

    threshold: float
    warmup_steps: int = 1
    final_steps: int = 1
    num_steps: int | None = None
    computed: int = 0
    skipped: int = 0
    decisions: list[bool] = field(default_factory=list)
    changes: list[float] = field(default_factory=list)

    def __post_init__(self):
        if not self.threshold >= 0:
            raise FlashI2VError(f"step-cache threshold {self.threshold} must be >= 0 (0 never skips; try 0.05-0.2)")
        if self.warmup_steps < 1 or self.final_steps < 0:
            raise FlashI2VError("step cache: warmup_steps must be >= 1 and final_steps >= 0")
        self.reset(self.num_steps)

    # -- state -------------------------------------------------------------------------------------

    def reset(self, num_steps: int | None = None) -> None:
        """Forget everything: call at the start of each generation. ``num_steps`` (the number of model
        evaluations, i.e. sampler steps) lets the last ``final_steps`` be protected."""
        self.num_steps = num_steps
        self.computed = self.skipped = 0
        self.decisions, self.changes = [], []
        self._branches: list[_Branch] = []
        self._step = -1  # index of the current step
        self._branch = 0  # forwards seen in the current step
        self._t: torch.Tensor | None = None  # timestep of the current step (CPU float copy)
        self._accumulated = 0.0
        self._skip = False  # decision of the current step

    def stats(self) -> dict:
        steps = self.computed + self.skipped
        return {"threshold": self.threshold, "steps": steps, "computed": self.computed, "skipped": self.skipped,
                "skip_fraction": self.skipped / steps if steps else 0.0, "decisions": list(self.decisions),
                "changes": list(self.changes)}

    def _advance(self, t: torch.Tensor, shape: torch.Size) -> None:
        """Track steps by timestep: a new timestep is a new step, a repeated one another branch of this step.
        A timestep that does not decrease, or a new token shape, means a new generation."""
        t = t.detach().float().flatten().cpu()
        if self._t is not None and t.shape == self._t.shape and torch.equal(t, self._t):
            self._branch += 1
            return
        restart = (self._t is not None and (t.shape != self._t.shape or bool((t >= self._t).any()))) or (
            bool(self._branches) and self._branches[0].first_residual is not None
            and self._branches[0].first_residual.shape != shape)
        if restart:
            self.reset(None)
        self._t, self._step, self._branch = t, self._step + 1, 0

    # -- the block loop ----------------------------------------------------------------------------

    def run_blocks(self, model, tokens: torch.Tensor, e0, context, rope, t: torch.Tensor) -> torch.Tensor:
        """Replacement for ``for block in model.blocks: tokens = model.run_block(block, tokens, ...)``."""
        blocks = model.blocks
        if torch.is_grad_enabled() or len(blocks) < 2:  # training, or nothing to skip: the plain loop
            for block in blocks:
                tokens = model.run_block(block, tokens, e0, context, rope)
            return tokens
        if tokens.is_cuda and torch.cuda.is_current_stream_capturing():
            raise FlashI2VError(_CUDA_GRAPHS)
        self._advance(t, tokens.shape)
        while len(self._branches) <= self._branch:
            self._branches.append(_Branch())
        branch = self._branches[self._branch]

        start = tokens
        tokens = model.run_block(blocks[0], tokens, e0, context, rope)
        first_residual = tokens - start
        if self._branch == 0:
            self._skip = self._decide(branch.first_residual, first_residual, model.context_parallel)
        skip = self._skip and branch.rest_residual is not None and branch.rest_residual.shape == tokens.shape
        branch.first_residual = first_residual
        if skip:
            tokens = tokens + branch.rest_residual
        else:
            after_first = tokens
            for block in blocks[1:]:
                tokens = model.run_block(block, tokens, e0, context, rope)
            branch.rest_residual = tokens - after_first
        if self._branch == 0:
            self.decisions.append(skip)
            self.skipped += skip
            self.computed += not skip
            if not skip:
                self._accumulated = 0.0
        return tokens

    def _decide(self, previous: torch.Tensor | None, current: torch.Tensor, cp) -> bool:
        """Skip this step? Updates the accumulated change (reset to 0 by the caller when the step runs)."""
        if previous is None or previous.shape != current.shape:
            self.changes.append(float("inf"))
            return False
        diff = (current.float() - previous.float()).abs().sum()
        norm = previous.float().abs().sum()
        if cp is not None:  # every rank holds a slice of the tokens: decide on the whole sequence
            import torch.distributed as dist

            both = torch.stack([diff, norm])
            dist.all_reduce(both, group=cp.group)
            diff, norm = both[0], both[1]
        change = float(diff / norm.clamp_min(1e-12))
        self._accumulated += change
        self.changes.append(self._accumulated)
        if self._step < self.warmup_steps:
            return False
        if self.num_steps is not None and self._step >= self.num_steps - self.final_steps:
            return False
        return self._accumulated < self.threshold


def apply_step_cache(transformer, threshold: float = DEFAULT_THRESHOLD, warmup_steps: int = 1, final_steps: int = 1) -> FirstBlockCache:
    """Install a ``FirstBlockCache`` on a ``FlashI2VTransformer`` (replacing any previous one); returns it."""
    if hasattr(transformer, "_cuda_graphs"):
        raise FlashI2VError(_CUDA_GRAPHS)
    if not hasattr(transformer, "step_cache"):
        raise FlashI2VError(f"{type(transformer).__name__} has no step_cache hook: use a FlashI2VTransformer")
    transformer.step_cache = FirstBlockCache(float(threshold), warmup_steps, final_steps)
    return transformer.step_cache


def remove_step_cache(transformer) -> None:
    """Back to running every block at every step."""
    transformer.step_cache = None


class step_cache_scope:
    """Context manager for one generation: with ``threshold`` set, a cache of that threshold for this
    generation only (the installed one, if any, comes back after); with None, the installed cache (or none).
    Either way the cache is reset for ``num_steps`` steps on entry. ``as`` gives the cache (or None)."""

    def __init__(self, transformer, threshold: float | None, num_steps: int | None):
        self.transformer, self.threshold, self.num_steps = transformer, threshold, num_steps

    def __enter__(self) -> FirstBlockCache | None:
        self.previous = self.transformer.step_cache
        if self.threshold is not None:  # keep the installed cache's warmup / final steps, if any
            keep = {} if self.previous is None else dict(warmup_steps=self.previous.warmup_steps,
                                                         final_steps=self.previous.final_steps)
            self.transformer.step_cache = FirstBlockCache(float(self.threshold), **keep)
        cache = self.transformer.step_cache
        if cache is not None:
            cache.reset(self.num_steps)
        return cache

    def __exit__(self, *exc) -> None:
        self.transformer.step_cache = self.previous
