"""Exponential moving average of the transformer weights, kept in float32 beside the live ones."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen float32 copy of ``model`` (same structure, so it shards and saves like the original)."""
    ema = copy.deepcopy(model).float().eval()
    ema.requires_grad_(False)
    return ema


def ema_decay(decay: float, step: int, warmup: bool) -> float:
    """The decay used after optimizer step ``step`` (1-based). With warmup, min(decay, (1 + step) / (10 + step)):
    a model trained from scratch would otherwise keep its random init in the average for ~1 / (1 - decay) steps."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for every parameter."""
    ema_params = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
