"""Transformer fusions for inference: bias + GELU in the matmul epilogue, one QKV projection, and the
normalisation steps as Triton kernels. Parameters and state-dict keys stay as they are."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import FlashI2VError

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
        from ..kernels.qk_norm_rope import rms_norm_rope, rms_norm_rope_qk

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
        from ..kernels.residual_layer_norm import layer_norm_modulate, residual_layer_norm

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
    from ..kernels import triton_available

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
