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


class TrainableEMA(nn.Module):
    """float32 averages of a model's trainable parameters only: a LoRA run's adapters (and the modules it trains
    in full). The frozen base needs no average, and a copy of it would cost more than the adapters' whole run.
    Made after FSDP, so under FSDP each average is a shard like the parameter it follows."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.averages = nn.ParameterList(nn.Parameter(p.detach().float().clone(), requires_grad=False)
                                         for p in model.parameters() if p.requires_grad)

    def named_averages(self) -> dict[str, torch.Tensor]:
        """{model parameter name: average}, the averages unsharded (full tensors) on the CPU."""
        return {n: (a.full_tensor() if hasattr(a, "full_tensor") else a).detach().cpu()
                for n, a in zip(self.names, self.averages)}


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for every parameter (a TrainableEMA: every trainable one)."""
    ema_params = list(ema.parameters())
    if isinstance(ema, TrainableEMA):
        params = [model.get_parameter(n).detach() for n in ema.names]
    else:
        params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
