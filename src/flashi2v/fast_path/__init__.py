"""Speed-ups applied to a model from outside, one small named function each (torchtitan style).

The model code stays plain PyTorch; these functions change *how* it runs, never *what* it computes
(to bf16 rounding) and never its state-dict keys::

    from flashi2v.fast_path.recipe import apply_fast_path
    apply_fast_path(pipe.transformer)          # FA4 or cuDNN attention, GELU epilogue, norm kernels, fused QKV, compiled blocks

or piece by piece: ``flashi2v.model.attention.set_attention_backend("cudnn")``; in ``fusion``: ``fuse_ffn_gelu``,
``fuse_norms``, ``fuse_qkv``; in ``compile``: ``apply_compile``, ``apply_cuda_graphs``; in ``vae_decoder``:
``fuse_wan_decoder`` (the Wan VAE's low-precision decode). Moving weights between the GPU and CPU memory is
``flashi2v.offload``. What each one buys on an H100 is in docs/performance.md (benchmarks/dit_forward.py
measures it).
"""
