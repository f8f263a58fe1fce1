"""torch.compile per transformer block, and CUDA-graph replay of the whole forward."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import FlashI2VError


def apply_compile(model: nn.Module, fullgraph: bool = True, dynamic: bool | None = False,
                  options: dict | None = None, **kwargs) -> nn.Module:
    """``torch.compile`` each transformer block in place (the blocks are alike, so one graph is traced
    and reused by all 30). Fuses the norms, AdaLN modulation, RoPE, casts and residuals into a few
    kernels. ``dynamic=False``: a new video size compiles anew (~10 s on an H100 machine) rather than
    running slower shape-generic kernels. ``options``: Inductor options, passed through.
    Parameters and state-dict keys are untouched.
    """
    for block in model.blocks:
        block.compile(fullgraph=fullgraph, dynamic=dynamic, options=options, **kwargs)
    return model


def apply_cuda_graphs(model: nn.Module) -> nn.Module:
    """Replay the whole forward as a CUDA graph, one graph per input shape (captured at its first call).

    Removes the launch gaps between the forward's ~500 kernels. Inference only: runs the plain forward
    when gradients are enabled or the input is not on a GPU. Each captured shape keeps its activation
    memory reserved (a private pool, about the size of one forward's activations) until
    ``release_cuda_graphs(model)``. Inputs are copied into static buffers; the output is a fresh tensor.
    """
    if hasattr(model, "_cuda_graphs"):
        return model
    if getattr(model, "block_swap", None) is not None:  # the graphs would replay reads of swapped-out slots
        raise FlashI2VError("CUDA graphs cannot be combined with block swapping (apply_block_swap)")
    plain_forward = model.forward
    graphs: dict = {}

    def signature(*tensors):
        return tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in tensors)

    def forward(x, t, context, fourier_features=None):
        if torch.is_grad_enabled() or not x.is_cuda:
            return plain_forward(x, t, context, fourier_features)
        key = signature(x, t, context, fourier_features)
        if key not in graphs:
            static = [None if v is None else v.clone() for v in (x, t, context, fourier_features)]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # compile / autotune for this shape outside the capture
                    plain_forward(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = plain_forward(*static)
            graphs[key] = (graph, static, out)
        graph, static, out = graphs[key]
        for dst, src in zip(static, (x, t, context, fourier_features)):
            if dst is not None:
                dst.copy_(src)
        graph.replay()
        return out.clone()

    model.forward = forward
    model._cuda_graphs = graphs
    return model


def release_cuda_graphs(model: nn.Module) -> None:
    """Drop the captured graphs (their memory returns to the allocator); later calls capture again."""
    getattr(model, "_cuda_graphs", {}).clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
