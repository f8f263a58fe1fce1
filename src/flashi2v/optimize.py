"""Speed-ups applied to a model from outside, one small named function each (torchtitan style).

The model code stays plain PyTorch; these functions change *how* it runs, never *what* it computes
(to bf16 rounding) and never its state-dict keys::

    from flashi2v.optimize import apply_fast_path
    apply_fast_path(pipe.transformer)          # FA4 or cuDNN attention, GELU epilogue, norm kernels, fused QKV, compiled blocks
    pipe.enable_text_encoder_offload()         # umT5 weights stay in CPU memory

or piece by piece: ``set_attention_backend("cudnn")``, ``fuse_ffn_gelu(model)``, ``fuse_norms(model)``, ``fuse_qkv(model)``,
``apply_compile(model)``, ``apply_cuda_graphs(model)``; and moving weights between the GPU and pinned CPU
memory: ``stream_from_cpu`` (per layer, for frozen encoders), ``offload_to_cpu`` / ``load_to_device``
(a whole module, e.g. the transformer during the VAE decode).
What each one buys on an H100 is in docs/performance.md (benchmarks/dit_forward.py measures it).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import FlashI2VError
from .model.attention import attention_backend, fa3_available, fa4_available, get_attention_backend, set_attention_backend

__all__ = [
    "LinearGELU",
    "apply_compile",
    "apply_cuda_graphs",
    "apply_fast_path",
    "attention_backend",
    "best_attention_backend",
    "fuse_ffn_gelu",
    "fuse_norms",
    "fuse_qkv",
    "get_attention_backend",
    "load_to_device",
    "offload_to_cpu",
    "release_cuda_graphs",
    "set_attention_backend",
    "stream_from_cpu",
]


# -- attention -------------------------------------------------------------------------------------


def best_attention_backend(device: torch.device | str | None = None) -> str:
    """The fastest attention kernels for head dim 128 on ``device`` (benchmarks/kernels.py).

    Hopper / Blackwell (sm_90, sm_100) with flash-attn-4 installed: "fa4"; Hopper with flash_attn_3 built:
    "fa3" (a little behind FA4); sm_90+ with cuDNN: "cudnn"; other CUDA GPUs: "flash"; anything else: "auto"
    (torch's own choice). The kernels' speeds: docs/performance.md, "Attention kernels".
    """
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return "auto"
    capability = torch.cuda.get_device_capability(device)
    if capability[0] in (9, 10) and fa4_available():
        return "fa4"
    if capability[0] == 9 and fa3_available():
        return "fa3"
    if capability >= (9, 0) and torch.backends.cudnn.is_available():
        return "cudnn"
    return "flash"


# -- FFN: bias + GELU(tanh) in the matmul's epilogue ---------------------------------------------


class LinearGELU(nn.Linear):
    """``gelu_tanh(x @ W.T + b)`` with the bias and GELU done in cuBLASLt's epilogue on CUDA.

    Same parameters (and state-dict keys) as the nn.Linear it replaces. On CUDA ``_addmm_activation``
    applies the tanh-approximated GELU inside the matmul, so the B x L x ffn_dim activation is written
    once instead of written, read and written again. Elsewhere it is the plain two-op version.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and self.bias is not None:
            out = torch._addmm_activation(self.bias, x.reshape(-1, x.shape[-1]), self.weight.t(), use_gelu=True)
            return out.view(*x.shape[:-1], self.out_features)
        return F.gelu(F.linear(x, self.weight, self.bias), approximate="tanh")


def fuse_ffn_gelu(model: nn.Module) -> nn.Module:
    """In every ``ffn = Sequential(Linear, GELU(tanh), Linear)``: Linear+GELU -> LinearGELU, GELU -> Identity.

    In place; parameters are kept (not copied) and the state-dict keys (``ffn.0.*``, ``ffn.2.*``) do not change.
    """
    for module in model.modules():
        ffn = getattr(module, "ffn", None)
        if (isinstance(ffn, nn.Sequential) and len(ffn) == 3 and type(ffn[0]) is nn.Linear
                and isinstance(ffn[1], nn.GELU) and ffn[1].approximate == "tanh"):
            ffn[0].__class__ = LinearGELU
            ffn[1] = nn.Identity()
    return model


# -- fused QKV (inference only) ----------------------------------------------------------------------


class FusedQKVAttention(nn.Module):
    """Mixin for a self-attention ``Attention``: q, k, v as one matmul over a concatenated copy of
    their weights (see ``fuse_qkv``). Cross-attention calls keep the three separate matmuls."""

    def project(self, x: torch.Tensor, context: torch.Tensor | None):
        if context is not None:
            return super().project(x, context)
        return F.linear(x, self.qkv_weight, self.qkv_bias).chunk(3, dim=-1)

    def _apply(self, fn, recurse=True):
        # .to() / .half() / .cuda() convert the q/k/v parameters and the fused buffer into separate new
        # tensors: share them again, or in-place updates of the parameters would miss the buffer
        super()._apply(fn, recurse)
        _reshare_qkv(self)
        return self


def fuse_qkv(model: nn.Module) -> nn.Module:
    """Self-attention q, k, v as one (3 dim x dim) matmul: the three weights (and biases) are moved into
    one buffer and the q/k/v parameters become views of its rows.

    No extra memory; the Parameter objects, their names and the state-dict keys stay as they were, and
    an in-place update of a parameter (``load_state_dict``, an optimizer step) updates the fused weight
    too. ``state_dict()`` returns copies of these nine tensors per block (views of a shared buffer cannot
    be written to safetensors). What replaces the parameters' tensors (``.to()``, ``load_state_dict(assign=True)``)
    fuses that block anew from the new tensors, so the fused weight does not go stale (call this after
    moving the model to its device and dtype anyway: re-fusing costs a copy of the weights).
    """
    for block in model.blocks:
        attn = block.self_attn
        if not isinstance(attn, FusedQKVAttention):
            _share_qkv(attn)
            attn.__class__ = _with_mixin(FusedQKVAttention, type(attn))
            attn.register_state_dict_post_hook(_unshare_qkv)
            attn.register_load_state_dict_post_hook(lambda module, _keys: _reshare_qkv(module))
    return model


def _share_qkv(attn: nn.Module) -> None:
    """One buffer with the current q, k, v weights (and biases) stacked; the parameters become its rows."""
    linears = (attn.q, attn.k, attn.v)
    with torch.no_grad():
        w = torch.cat([m.weight for m in linears])
        b = torch.cat([m.bias for m in linears])
    n = attn.q.out_features
    for i, m in enumerate(linears):
        m.weight.data = w[i * n:(i + 1) * n]
        m.bias.data = b[i * n:(i + 1) * n]
    attn.register_buffer("qkv_weight", w, persistent=False)
    attn.register_buffer("qkv_bias", b, persistent=False)


def _qkv_shared(attn: nn.Module) -> bool:
    w, b, n = attn.qkv_weight, attn.qkv_bias, attn.q.out_features
    return all(m.weight.data_ptr() == w.data_ptr() + i * n * w.stride(0) * w.element_size()
               and m.bias.data_ptr() == b.data_ptr() + i * n * b.element_size()
               for i, m in enumerate((attn.q, attn.k, attn.v)))


def _reshare_qkv(attn: nn.Module) -> None:
    if not _qkv_shared(attn):
        _share_qkv(attn)


def _unshare_qkv(module, state_dict, prefix, local_metadata) -> None:
    for name in ("q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias"):
        if prefix + name in state_dict:
            state_dict[prefix + name] = state_dict[prefix + name].clone()


# -- norms as Triton kernels (inference on a GPU) ---------------------------------------------------


def _use_kernels(x: torch.Tensor) -> bool:
    """The kernels are forward-only: CUDA tensors with autograd off (``torch.no_grad``, as the pipeline
    samples), else the plain ops. Grad mode, not the inputs, decides: the norm weights may require grad."""
    return x.is_cuda and not torch.is_grad_enabled()


class FusedNormRopeAttention(nn.Module):
    """Mixin for a self-attention ``Attention``: qk RMSNorm + RoPE of q and k by one Triton kernel launch
    (``flashi2v.kernels.qk_norm_rope``)."""

    def norm_qk(self, q: torch.Tensor, k: torch.Tensor, rope):
        if rope is None or rope[0].shape[0] != q.shape[1] or not _use_kernels(q):
            return super().norm_qk(q, k, rope)
        from .kernels.qk_norm_rope import rms_norm_rope, rms_norm_rope_qk

        if self.norm_q.eps == self.norm_k.eps:
            q, k = rms_norm_rope_qk(q, k, self.norm_q.weight, self.norm_k.weight, *rope, self.norm_q.eps)
        else:
            q = rms_norm_rope(q, self.norm_q.weight, *rope, self.norm_q.eps)
            k = rms_norm_rope(k, self.norm_k.weight, *rope, self.norm_k.eps)
        return q.unflatten(-1, (self.num_heads, -1)), k.unflatten(-1, (self.num_heads, -1))


class FusedResidualNorm(nn.Module):
    """Mixin for a ``WanBlock`` or ``WanHead``: residual update + LayerNorm (+ AdaLN) by one Triton kernel
    (``flashi2v.kernels.residual_layer_norm``)."""

    def residual_norm(self, x, y, gate, norm, scale=None, shift=None):
        if not isinstance(norm, nn.LayerNorm) or not _use_kernels(x):
            return super().residual_norm(x, y, gate, norm, scale, shift)
        from .kernels.residual_layer_norm import layer_norm_modulate, residual_layer_norm

        # the modulation rows as the kernel reads them, made here where torch.compile fuses them with the
        # modulation sum (the op is opaque to it: inside the op they would be extra small kernels)
        gate, scale, shift = (None if t is None else t.float().contiguous() for t in (gate, scale, shift))
        if y is None:
            return x, layer_norm_modulate(x, norm.weight, norm.bias, scale, shift, norm.eps)
        return residual_layer_norm(x, y, gate, norm.weight, norm.bias, scale, shift, norm.eps)


def fuse_norms(model: nn.Module) -> nn.Module:
    """The blocks' normalisation steps as Triton kernels that read and write each row once: the residual
    update with the LayerNorm and AdaLN modulation after it (across blocks too: a transformer's
    ``defer_residuals`` is set, so a block's FFN update is added by the next block's first norm), and
    self-attention's q/k RMSNorm with RoPE.
    Same function (float32 inside, one rounding to the compute dtype, as compiled blocks do); parameters
    and state-dict keys untouched; forward-only (with grad mode on, and on CPU tensors, the plain ops run). Needs triton (CUDA builds of
    torch have it). In place."""
    from .kernels import triton_available

    if not triton_available():
        raise FlashI2VError("fuse_norms needs triton (it comes with CUDA builds of torch): pip install triton")
    if hasattr(model, "defer_residuals"):  # each FFN update joins the next norm kernel (a block's or the head's)
        model.defer_residuals = True
    head = getattr(model, "head", None)
    for block in list(getattr(model, "blocks", [model])) + ([head] if head is not None else []):  # a transformer, or one block
        if not isinstance(block, FusedResidualNorm):
            block.__class__ = _with_mixin(FusedResidualNorm, type(block))
        if hasattr(block, "self_attn") and not isinstance(block.self_attn, FusedNormRopeAttention):
            block.self_attn.__class__ = _with_mixin(FusedNormRopeAttention, type(block.self_attn))
    return model


_MIXED_CLASSES: dict[tuple[type, type], type] = {}


def _with_mixin(mixin: type, cls: type) -> type:
    """One subclass per (mixin, class): a class per module would make torch.compile trace every block
    anew (its guards check the module's type)."""
    if (mixin, cls) not in _MIXED_CLASSES:
        name = mixin.__name__.removesuffix("Attention") + cls.__name__
        _MIXED_CLASSES[mixin, cls] = type(name, (mixin, cls), {})
    return _MIXED_CLASSES[mixin, cls]


# -- compile ---------------------------------------------------------------------------------------


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


def apply_fast_path(model: nn.Module, compile: bool = True, attention: str | None = None,
                    fuse_gelu: bool = True, norms: bool | None = None, qkv: bool = True,
                    cuda_graphs: bool = False, compile_options: dict | None = None) -> nn.Module:
    """Everything that measured faster on an H100 (docs/performance.md, "Use it"), in one call.

    attention: an ATTENTION_BACKENDS name; default ``best_attention_backend`` of the model's device
    (process-wide, see ``set_attention_backend``). Then the FFN GELU in the matmul epilogue, the norm
    kernels (``norms``; default: on a CUDA device when triton is importable), fused QKV (``qkv``: the
    q/k/v parameters become views of one buffer, see ``fuse_qkv``) and compiled blocks
    (``compile_options``: Inductor options, passed through). ``cuda_graphs`` is off by default: no
    measurable gain, and it keeps GPU memory reserved per input shape (docs/performance.md). Call after
    moving the model to its device and dtype.
    """
    device = next(model.parameters()).device
    set_attention_backend(attention or best_attention_backend(device))
    if fuse_gelu:
        fuse_ffn_gelu(model)
    if norms is None:
        from .kernels import triton_available

        norms = device.type == "cuda" and triton_available()
    if norms:
        fuse_norms(model)
    if qkv:
        fuse_qkv(model)
    if compile:
        apply_compile(model, options=compile_options)
    if cuda_graphs:
        apply_cuda_graphs(model)
    return model


# -- CPU offload -----------------------------------------------------------------------------------


def _move(obj, device: torch.device):
    """Tensors anywhere in tuples, lists and dicts (a transformers ModelOutput too) -> ``device``."""
    if isinstance(obj, torch.Tensor):
        # non_blocking only towards the GPU: a non-blocking copy to the CPU could be read unfinished
        return obj.to(device, non_blocking=device.type != "cpu")
    if isinstance(obj, Mapping):
        if hasattr(obj, "__setitem__"):
            for key in list(obj.keys()):
                obj[key] = _move(obj[key], device)
            return obj
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_move(v, device) for v in obj)
    return obj


CPU_EMBEDDING_BYTES = 256 * 2**20


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def stream_from_cpu(module: nn.Module, device: torch.device | str) -> nn.Module:
    """Keep ``module``'s weights in (pinned) CPU memory and copy each layer's weights to ``device`` only
    for the duration of that layer's forward.

    The module then looks like a CPU module to its caller: inputs are moved to ``device`` on the way
    in and outputs back to the CPU on the way out. GPU memory holds one layer's weights at a time
    (for umT5-XXL: one 0.4 GB block instead of 11 GB), and the time is about one pass of the weights over
    PCIe. Embedding tables of ``CPU_EMBEDDING_BYTES`` (256 MiB) or more are not copied at all: the
    lookup runs on the CPU and only its output travels. Meant for frozen encoders used once per generation.
    """
    device = torch.device(device)
    module.to("cpu")
    pin = device.type == "cuda" and torch.cuda.is_available()
    pinned: dict[int, torch.Tensor] = {}

    def cpu_copy(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in pinned:
            pinned[id(t)] = t.data.pin_memory() if pin else t.data
        return pinned[id(t)]

    for sub in module.modules():
        tensors = [t for _, t in sub.named_parameters(recurse=False)] + [t for _, t in sub.named_buffers(recurse=False)]
        if not tensors:
            continue
        if isinstance(sub, nn.Embedding) and device.type != "cpu" and _nbytes(sub.weight) >= CPU_EMBEDDING_BYTES:
            # a large table (umT5-XXL's: 2.1 GB, a fifth of its weights) is looked up where it lies, unpinned:
            # only the looked-up rows travel to the GPU (same values, less PCIe traffic and GPU memory)
            sub.register_forward_pre_hook(lambda _mod, args: _move(args, torch.device("cpu")))
            sub.register_forward_hook(lambda _mod, _args, out: _move(out, module._flashi2v_streamed_to))
            continue
        homes = [cpu_copy(t) for t in tensors]
        for t, home in zip(tensors, homes):
            t.data = home

        def load(_mod, _args, tensors=tensors, homes=homes):
            target = module._flashi2v_streamed_to
            for t, home in zip(tensors, homes):
                t.data = home.to(target, non_blocking=True)

        def unload(_mod, _args, _out, tensors=tensors, homes=homes):
            for t, home in zip(tensors, homes):
                t.data = home

        sub.register_forward_pre_hook(load)
        sub.register_forward_hook(unload)

    def inputs_in(_mod, args, kwargs):
        target = module._flashi2v_streamed_to
        return _move(args, target), _move(kwargs, target)

    def outputs_out(_mod, _args, out):
        return _move(out, torch.device("cpu"))

    module._flashi2v_streamed_to = device  # where the layers run; may be changed later
    module.register_forward_pre_hook(inputs_in, with_kwargs=True, prepend=True)
    module.register_forward_hook(outputs_out)
    return module


# -- whole-module offload (e.g. the transformer while the VAE decodes) ------------------------------


def _storage_groups(module: nn.Module) -> list[tuple[torch.UntypedStorage, list[torch.Tensor]]]:
    """The module's parameters and buffers grouped by the storage they live in (fused QKV: the q/k/v
    parameters and the fused weight share one), in a fixed order."""
    seen, groups = set(), {}
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        st = t.untyped_storage()
        groups.setdefault((str(st.device), st.data_ptr()), (st, []))[1].append(t)
    return list(groups.values())


def _rebind(tensors: list[torch.Tensor], storage: torch.UntypedStorage, byte_offset: int = 0) -> None:
    """Point each tensor's ``.data`` at ``storage``, ``byte_offset`` further than its current storage offset,
    with its shape and strides (views of one storage stay views of one storage)."""
    for t in tensors:
        view = torch.empty(0, dtype=t.dtype, device=storage.device)
        t.data = view.set_(storage, t.storage_offset() + byte_offset // t.element_size(), t.size(), t.stride())


def _as_bytes(storage: torch.UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


def _check_no_cuda_graphs(module: nn.Module) -> None:
    if getattr(module, "_cuda_graphs", None) is not None:
        raise RuntimeError("this module replays CUDA graphs (apply_cuda_graphs), which read its weights at fixed "
                           "addresses: moving the weights would make the graphs read freed memory")


_ALIGN = 256  # bytes: every storage starts aligned in the flat buffers (any dtype's element size divides it)


def offload_to_cpu(module: nn.Module, non_blocking: bool = False, force: bool = False) -> nn.Module:
    """Move ``module``'s parameters and buffers into one flat pinned CPU buffer, freeing their GPU memory.

    The Parameter objects stay the same (only their ``.data`` changes) and views stay views of one storage
    (fused QKV). The pinned buffer is kept on the module and reused by the next offload: pinning is slow,
    one copy over PCIe is not (docs/performance.md, "Use it").
    ``load_to_device`` brings the weights back as one GPU allocation with the same layout, so the next
    offload is again one copy. ``non_blocking``: the copies are queued on the current CUDA stream; their
    GPU memory is reusable by later work on that stream at once, but read the weights on the CPU only
    after synchronising. ``force`` copies tensors that already are on the CPU too (tests). Not for
    modules under ``apply_cuda_graphs``.
    """
    _check_no_cuda_graphs(module)
    groups = [(st, ts) for st, ts in _storage_groups(module) if st.device.type != "cpu" or force]
    if not groups:
        return module
    offsets, total = [], 0
    for storage, _ in groups:
        offsets.append(total)
        total += -(-storage.nbytes() // _ALIGN) * _ALIGN
    flat = module.__dict__.get("_flashi2v_cpu_flat")
    if (flat is None or flat.numel() != total
            or any(st.data_ptr() == flat.untyped_storage().data_ptr() for st, _ in groups)):
        flat = torch.empty(total, dtype=torch.uint8, pin_memory=torch.cuda.is_available())
        module.__dict__["_flashi2v_cpu_flat"] = flat
    for (storage, tensors), offset in zip(groups, offsets):
        flat[offset:offset + storage.nbytes()].copy_(_as_bytes(storage), non_blocking=non_blocking)
        _rebind(tensors, flat.untyped_storage(), offset)
    return module


def load_to_device(module: nn.Module, device: torch.device | str, non_blocking: bool = False,
                   force: bool = False) -> nn.Module:
    """Inverse of ``offload_to_cpu``: copy the weights to ``device``, one allocation and one copy per
    storage (after an offload: one for the whole module), keeping the Parameter objects, views and the
    pinned CPU buffer (for the next offload). ``non_blocking``: queued on the current stream, which is
    all later GPU work needs. A no-op for tensors already on ``device`` (unless ``force``)."""
    _check_no_cuda_graphs(module)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    for storage, tensors in _storage_groups(module):
        if storage.device == device and not force:
            continue
        copy = torch.empty(storage.nbytes(), dtype=torch.uint8, device=device)
        copy.copy_(_as_bytes(storage), non_blocking=non_blocking)
        _rebind(tensors, copy.untyped_storage())
    return module
