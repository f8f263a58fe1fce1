"""flashi2v.fast_path: the fast path computes the same function as the plain model, keeps the state-dict
layout, and the text-encoder offload gives the same embeddings. CPU, tiny config."""

import copy
import tempfile

import pytest
import torch
from helpers_layouts import randomized_tiny  # every weight random (Wan's init zeroes the head)

from flashi2v import FlashI2VTransformer
from flashi2v.errors import FlashI2VError
from flashi2v.kernels import triton_available
from flashi2v.fast_path.fusion import LinearGELU, fuse_ffn_gelu, fuse_norms, fuse_qkv
from flashi2v.fast_path.recipe import apply_fast_path
from flashi2v.model.attention import (ATTENTION_BACKENDS, attention, attention_backend, fa3_available, fa4_available,
                                      get_attention_backend, set_attention_backend)
from flashi2v.offload import stream_from_cpu


def inputs(seed=1, b=2, t=3, h=8, w=12):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 16, t, h, w, generator=g)
    return x, 1000 * torch.rand(b, generator=g), torch.randn(b, 16, 32, generator=g), torch.randn(b, 16, t, h, w, generator=g).abs()


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(autouse=True)
def _restore_backend():
    yield
    set_attention_backend("auto")


@torch.no_grad()
def test_fast_path_matches_plain_and_keeps_state_dict():
    plain = randomized_tiny()
    fast = apply_fast_path(copy.deepcopy(plain))  # CPU: backend "auto", GELU + QKV fusion, compiled blocks
    x, t, c, s = inputs()
    ref = plain(x, t, c, s)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    out = fast(x, t, c, s)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert rel(out, ref) < 1e-5  # float32: compiled kernels only reorder float ops
    # the blocks share one compiled graph (a recompile per block would cost minutes on the 1.3B)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - before == 1
    assert isinstance(fast.blocks[0].ffn[0], LinearGELU)
    assert fast.blocks[0].self_attn.q.weight.data_ptr() == fast.blocks[0].self_attn.qkv_weight.data_ptr()
    sd, sd_plain = fast.state_dict(), plain.state_dict()
    assert list(sd) == list(sd_plain)
    assert all(torch.equal(sd[k], v) for k, v in sd_plain.items())


@torch.no_grad()
def test_fusions_eager_in_bf16_and_save_load_roundtrip():
    plain = randomized_tiny(seed=2).to(torch.bfloat16)
    fused = fuse_qkv(fuse_ffn_gelu(copy.deepcopy(plain)))
    attn = fused.blocks[0].self_attn
    assert attn.q.weight.untyped_storage().data_ptr() == attn.qkv_weight.untyped_storage().data_ptr()  # no copy
    x, t, c, s = (v.to(torch.bfloat16) if v.ndim > 1 else v for v in inputs(seed=3))
    shared = attn.qkv_weight
    assert rel(fused(x, t, c, s), plain(x, t, c, s)) < 2e-2  # bf16 rounding of a different op order
    assert attn.qkv_weight is shared  # still shared: the forward's check fused nothing anew
    # in-place loads reach the fused weight; saving writes plain (unshared) tensors
    other = randomized_tiny(seed=4).to(torch.bfloat16)
    fused.load_state_dict(other.state_dict())
    assert torch.equal(fused(x, t, c, s), fuse_qkv(fuse_ffn_gelu(copy.deepcopy(other)))(x, t, c, s))
    with tempfile.TemporaryDirectory() as folder:
        fused.save_pretrained(folder)
        back = FlashI2VTransformer.from_pretrained(folder)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in other.state_dict().items())


@torch.no_grad()
def test_fused_qkv_follows_replaced_parameters():
    """.to(dtype) or load_state_dict(assign=True) give q/k/v new tensors: the fused weight must follow."""
    x, t, c, s = inputs(seed=3)
    args = (x.double(), t.double(), c.double(), s.double())
    fused, plain = fuse_qkv(randomized_tiny(seed=2)).to(torch.float64), randomized_tiny(seed=2).to(torch.float64)
    for model in (fused, plain):  # an in-place update after .to(), as an optimizer step makes
        model.blocks[0].self_attn.k.weight.mul_(2.0)
    assert rel(fused(*args), plain(*args)) < 1e-12
    other = randomized_tiny(seed=4)
    fused.load_state_dict(other.state_dict())
    assert rel(fused(*args), other.to(torch.float64)(*args)) < 1e-12
    fused.load_state_dict(randomized_tiny(seed=5).double().state_dict(), assign=True)
    assert rel(fused(*args), randomized_tiny(seed=5).double()(*args)) < 1e-12


@torch.no_grad()
def test_deferred_residuals_compute_the_same_function():
    """run_blocks with defer_residuals (what fuse_norms turns on): each block's FFN update is added by the
    next block's first norm, and the last one by the loop; in eager float32 that is the same arithmetic."""
    model = randomized_tiny()
    args = inputs()
    plain = model(*args)
    model.defer_residuals = True
    assert torch.equal(model(*args), plain)
    block, context = model.blocks[0], inputs(b=1)[2]
    tokens, e0 = torch.randn(1, 6, model.config.dim), torch.randn(1, 6, model.config.dim)
    rope = model.rope((1, 2, 3), tokens.device)
    x_part, (y, gate) = block(tokens, e0, model.embed_text(context), rope, defer=True)
    assert torch.equal((x_part.float() + y.float() * gate).to(x_part.dtype), block(tokens, e0, model.embed_text(context), rope))


def test_attention_backends_compute_softmax_attention_and_bad_name_is_an_error():
    q, k, v = (torch.randn(2, 10, 4, 16, dtype=torch.float64) for _ in range(3))
    weights = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / 16 ** 0.5, dim=-1)
    ref = torch.einsum("bhqk,bkhd->bqhd", weights, v)  # the formula, written out
    for name in ("auto", "math", "efficient", "flash", "cudnn"):  # on the CPU, SDPA falls back to a CPU kernel
        with attention_backend(name):
            assert get_attention_backend() == name
            assert rel(attention(q, k, v), ref) < 1e-10
    assert get_attention_backend() == "auto"
    with pytest.raises(ValueError, match="unknown attention backend"):
        set_attention_backend("fa2")
    assert get_attention_backend() == "auto"
    assert set(ATTENTION_BACKENDS) >= {"auto", "cudnn", "flash", "fa3", "fa4"}


@pytest.mark.skipif(not (torch.cuda.is_available() and triton_available()), reason="needs a CUDA GPU and triton")
@torch.no_grad()
@pytest.mark.parametrize("heads, head_dim", [(3, 64), (2, 100)])
def test_norm_kernels_compute_the_plain_ops_on_the_gpu(heads, head_dim):
    """Widths 192 and 200: a row in a block of 256 with 64 or 56 masked columns."""
    from flashi2v.model.attention import RopeCache
    from flashi2v.model.wan import WanBlock

    dev, dim = torch.device("cuda"), heads * head_dim
    rope = RopeCache(head_dim)((1, 3, 7), dev)  # 21 tokens: rows do not fill the kernels' programs evenly
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        torch.manual_seed(0)
        block = WanBlock(dim, 64, heads, True, 1e-6).to(dev, dtype)
        for p in block.parameters():
            p.copy_(torch.randn_like(p))
        fused = fuse_norms(copy.deepcopy(block))
        x, y = torch.randn(2, 2, 21, 3 * dim, device=dev, dtype=dtype).unbind(0)
        q, k = x[..., :dim], x[..., dim:2 * dim]  # chunks of a fused qkv output: strided rows
        gate, scale, shift = torch.randn(2, 3, dim, device=dev).chunk(3, dim=1)
        y = y[..., :dim].contiguous()
        x = x[..., 2 * dim:].contiguous()
        tol = 1e-6 if dtype == torch.float32 else 4e-3  # the kernels skip the eager ops' intermediate roundings
        pairs = [(fused.self_attn.norm_qk(q, k, rope), block.self_attn.norm_qk(q, k, rope)),
                 (fused.residual_norm(x, None, None, fused.norm1, scale, shift), block.residual_norm(x, None, None, block.norm1, scale, shift)),
                 (fused.residual_norm(x, y, gate, fused.norm3), block.residual_norm(x, y, gate, block.norm3)),
                 (fused.residual_norm(x, y, None, fused.norm2, scale, shift), block.residual_norm(x, y, None, block.norm2, scale, shift))]
        for outs, refs in pairs:
            for out, ref in zip(outs, refs):
                assert out.dtype == dtype and out.shape == ref.shape and rel(out, ref) < tol
    model = randomized_tiny().to(dev, torch.bfloat16)
    args = [a.to(dev, torch.bfloat16) if a.is_floating_point() and a.ndim > 1 else a.to(dev) for a in inputs()]
    fused = fuse_norms(copy.deepcopy(model))
    assert rel(fused(*args), model(*args)) < 1e-2
    with torch.enable_grad():  # training: the plain ops run, so gradients flow
        fused(*args).float().square().mean().backward()
    assert fused.blocks[0].norm3.weight.grad is not None


@pytest.mark.skipif(triton_available(), reason="triton is installed here")
def test_norm_fusion_without_triton_says_how_to_get_it():
    with pytest.raises(FlashI2VError, match="pip install triton"):
        fuse_norms(randomized_tiny())


def test_fa4_wave_split_rows_and_one_output_from_two_calls():
    from flashi2v.model.attention import _fa4_sm90_forward, wave_split_rows

    # 1.3B at 49 frames on 132 SMs: 99 tiles of 192 rows x 12 heads = 9 whole waves, then 120 blocks of 128 rows
    assert wave_split_rows(12, 20280, 132) == wave_split_rows(24, 20280, 132) == 99 * 192
    assert wave_split_rows(12, 32760, 132) == 165 * 192  # 81 frames
    assert wave_split_rows(12, 256, 132) == 0  # fewer tiles than one whole wave needs
    assert wave_split_rows(6, 20280, 132) == 0  # the model predicts no gain (6 heads per GPU with Ulysses)
    calls = []

    def stand_in(q, k, v, out=None, tile_mn=(128, 128), **_):  # FA4's signature, SDPA's arithmetic
        calls.append((q.shape[1], tile_mn))
        o = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
        return (o if out is None else out.copy_(o)), None

    q, k, v = torch.randn(3, 1, 900, 2, 16).unbind(0)
    ref = stand_in(q, k, v)[0]
    calls.clear()
    out = _fa4_sm90_forward(stand_in, q, k, v, sms=6)  # 5 tiles x 2 heads on 6 SMs: 3 tiles, then 324 rows
    assert calls == [(576, (192, 128)), (324, (128, 128))]
    torch.testing.assert_close(out, ref)


@pytest.mark.skipif(not (torch.cuda.is_available() and fa4_available()), reason="needs a GPU with flash-attn-4")
@torch.no_grad()
def test_fa4_wave_split_matches_one_call_on_the_gpu():
    from flashi2v.model.attention import fa4_attention, set_fa4_wave_split

    q, k, v = torch.randn(3, 1, 20280, 12, 128, device="cuda", dtype=torch.bfloat16).unbind(0)
    try:
        set_fa4_wave_split(False)
        one = fa4_attention(q, k, v)
    finally:
        set_fa4_wave_split(True)
    split = fa4_attention(q, k, v)
    ref = torch.nn.functional.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    assert rel(split, one) < 5e-3 and rel(split, ref) < 1e-2


@pytest.mark.parametrize("name, available, how", [("fa4", fa4_available, "pip install flash-attn-4"),
                                                 ("fa3", fa3_available, "build_fa3.sh")])
def test_flash_backend_without_its_package_says_how_to_get_it_and_changes_nothing(name, available, how):
    if available():
        pytest.skip(f"the package of {name} is installed here")
    with pytest.raises(FlashI2VError, match=how):
        set_attention_backend(name)
    assert get_attention_backend() == "auto"


@pytest.mark.skipif(not (torch.cuda.is_available() and fa3_available()), reason="needs a GPU with flash_attn_3")
@torch.no_grad()
def test_fa3_backend_runs_flash_attention_3_on_long_keys_and_sdpa_otherwise():
    from flashi2v.model.attention import fa3_attention

    q, k, v = torch.randn(3, 1, 20280, 12, 128, device="cuda", dtype=torch.bfloat16).unbind(0)
    ref = torch.nn.functional.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    with attention_backend("fa3"):
        out = attention(q, k, v)
        text = attention(q[:, :64], k[:, :512], v[:, :512])  # the text cross-attention's shape: SDPA
    with attention_backend("cudnn"):
        sdpa = attention(q[:, :64], k[:, :512], v[:, :512])
    assert torch.equal(out, fa3_attention(q, k, v)) and rel(out, ref) < 1e-2
    assert torch.equal(text, sdpa)


def _offload_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def test_text_encoder_offload_same_embeddings_and_video(make_tiny_pipeline):
    """On the CPU the streaming hooks run but copy nothing; on a GPU each layer's weights travel."""
    pipe = make_tiny_pipeline().to(_offload_device())
    prompts = ["a cat runs on the grass", "a red car"]
    resident = pipe.encode_prompt(prompts)
    settings = dict(num_frames=5, height=32, width=32, steps=2, seed=0, progress=False, output_type="latent")
    image = torch.rand(3, 32, 32)
    before = pipe(image, "a dog runs", **settings).latents
    assert not torch.allclose(pipe(image, "a red car", **settings).latents, before)  # the prompt matters
    pipe.enable_text_encoder_offload()
    assert pipe.text_encoder_offloaded
    assert all(p.device.type == "cpu" for p in pipe.text_encoder.model.parameters())
    torch.testing.assert_close(pipe.encode_prompt(prompts), resident, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pipe(image, "a dog runs", **settings).latents, before, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="streaming to a GPU needs a GPU")
def test_stream_from_cpu_holds_one_layer_on_the_gpu_at_a_time():
    layers = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    x = torch.randn(3, 4)
    ref = layers(x)
    stream_from_cpu(layers, "cuda")
    seen = []
    for layer in (layers[0], layers[2]):  # registered after streaming's own hooks: runs once the weights arrived
        layer.register_forward_pre_hook(lambda mod, _: seen.append([p.device.type for p in layers.parameters()]))
    out = layers(x)
    assert out.device.type == "cpu" and rel(out, ref) < 1e-5
    assert all(p.device.type == "cpu" for p in layers.parameters())
    assert seen == [["cuda", "cuda", "cpu", "cpu"], ["cpu", "cpu", "cuda", "cuda"]]


@torch.no_grad()
def test_offload_to_cpu_and_back_keeps_views_values_and_compiled_graph():
    from flashi2v.offload import load_to_device, offload_to_cpu

    fast = apply_fast_path(randomized_tiny(seed=5), qkv=True)  # fused QKV: q/k/v are views of one buffer
    x, t, c, s = inputs(seed=6)
    ref = fast(x, t, c, s)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    before = {k: v.clone() for k, v in fast.state_dict().items()}
    ptrs = [p.data_ptr() for p in fast.parameters()]
    params = list(fast.parameters())
    for move in (lambda: offload_to_cpu(fast, force=True), lambda: load_to_device(fast, "cpu", force=True)):
        move()  # force: really copies on the CPU, as to and from the GPU
        assert list(fast.parameters()) == params  # same Parameter objects, new storage
        assert all(p.data_ptr() != q for p, q in zip(fast.parameters(), ptrs))
        attn = fast.blocks[0].self_attn
        assert attn.q.weight.untyped_storage().data_ptr() == attn.qkv_weight.untyped_storage().data_ptr()
        assert all(torch.equal(fast.state_dict()[k], v) for k, v in before.items())
        assert torch.equal(fast(x, t, c, s), ref)
        ptrs = [p.data_ptr() for p in fast.parameters()]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # no recompile


def test_transformer_offload_same_video_and_not_with_cuda_graphs(make_tiny_pipeline):
    """On a GPU the weights leave for the decode and come back for the next call; on the CPU it is a no-op."""
    from flashi2v.fast_path.compile import apply_cuda_graphs

    device = _offload_device()
    pipe = make_tiny_pipeline().to(device)
    settings = dict(num_frames=5, height=32, width=32, steps=2, seed=0, progress=False)
    image = torch.rand(3, 32, 32)
    ref = pipe(image, "a dog runs", **settings)
    pipe.enable_transformer_offload()
    assert pipe.transformer_offload
    for _ in range(2):  # the second call brings the weights back before denoising
        out = pipe(image, "a dog runs", **settings)
        assert (out.frames.int() - ref.frames.int()).abs().max() <= (1 if device == "cuda" else 0)
        assert pipe.device.type == device
        assert all(p.device.type == "cpu" for p in pipe.transformer.parameters())
    pipe.enable_transformer_offload(False)
    assert all(p.device.type == device for p in pipe.transformer.parameters())
    apply_cuda_graphs(pipe.transformer)
    with pytest.raises(FlashI2VError, match="CUDA graphs"):
        pipe.enable_transformer_offload()


@torch.no_grad()
def test_bf16_vae_decode_close_to_float32_and_weights_untouched(make_tiny_pipeline):
    pipe = make_tiny_pipeline()
    vae = pipe.vae
    z = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    ref = vae.decode(z)
    sd = {k: v.clone() for k, v in vae.state_dict().items()}
    pipe.enable_bf16_vae_decode()
    assert vae.decode_dtype == torch.bfloat16
    out = vae.decode(z)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert rel(out, ref) < 5e-2  # bf16 activations (measured 2.3e-2 on this random tiny VAE)
    assert vae._decoder_fused  # through the leaner forwards of fuse_wan_decoder
    vae.fuse_decoder = False
    unfused = vae.decode(z)  # diffusers' own forwards in bf16
    assert not vae._decoder_fused and rel(unfused, ref) < 5e-2 and rel(out, unfused) < 5e-2
    assert all(v.dtype == torch.float32 and torch.equal(vae.state_dict()[k], v) for k, v in sd.items())
    vae.fuse_decoder = True
    vae.decode(z)
    pipe.enable_bf16_vae_decode(False)
    assert torch.equal(vae.decode(z), ref)  # float32 through the fused modules: exactly diffusers' decode
