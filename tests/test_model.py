"""FlashI2VTransformer: parity with diffusers' WanTransformer3DModel, key layout, FlashI2V branches."""

import pytest
import torch
from diffusers import WanTransformer3DModel
from helpers_layouts import randomized_tiny
from wan_keys import original_keys_1_3b, to_diffusers

from flashi2v import FlashI2VError, FlashI2VTransformer, preset
from flashi2v.model.attention import rope_split


def diffusers_twin(model):
    c = model.config
    ref = WanTransformer3DModel(
        patch_size=c.patch_size, num_attention_heads=c.num_heads, attention_head_dim=c.head_dim, in_channels=c.in_dim,
        out_channels=c.out_dim, text_dim=c.text_dim, freq_dim=c.freq_dim, ffn_dim=c.ffn_dim, num_layers=c.num_layers,
        cross_attn_norm=c.cross_attn_norm, eps=c.eps,
    )
    ref.load_state_dict(to_diffusers(model.state_dict()), strict=True)
    return ref.eval()


def inputs(seed=1, b=2, t=3, h=8, w=12, text_len=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 16, t, h, w, generator=g)
    sigma = torch.rand(b, generator=g)
    context = torch.randn(b, text_len, 32, generator=g)
    return x, 1000 * sigma, context, torch.randn(b, 16, t, h, w, generator=g).abs()


@torch.no_grad()
def test_matches_diffusers_wan_at_zero_init():
    model = randomized_tiny(t2v=True)
    ref = diffusers_twin(model)
    x, t, context, s_high = inputs()
    ours = model(x, t, context, s_high)
    theirs = ref(x, t, context, return_dict=False)[0]
    assert ours.dtype == torch.float32 and ours.shape == x.shape
    rel = (ours - theirs).norm() / theirs.norm()
    assert rel < 1e-5, rel


@torch.no_grad()
def test_flashi2v_branches_change_output_once_nonzero():
    model = randomized_tiny()
    ref = diffusers_twin(model)
    x, t, context, s_high = inputs()
    theirs = ref(x, t, context, return_dict=False)[0]
    with_fourier = model(x, t, context, s_high)
    assert (with_fourier - theirs).norm() / theirs.norm() > 1e-2
    s = torch.randn(2, 16, 1, 8, 12)
    assert model.learnable_proj(s, 3).abs().mean() > 1e-3


@torch.no_grad()
@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 2, 2)])
def test_patch_embeddings_run_as_matmuls_compute_the_convs(patch):
    model = randomized_tiny(patch_size=patch)
    x, _, _, s_high = inputs(t=4)
    convs = (model.patch_embedding(x) + model.fourier_embedding(s_high)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.embed_patches(x, s_high), convs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.embed_patches(x), model.patch_embedding(x).flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_state_dict_uses_wan_original_layout():
    full = original_keys_1_3b()
    with torch.device("meta"):
        model = FlashI2VTransformer.from_config("flashi2v-1.3b")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == full
    assert sum(v.numel() for v in model.state_dict().values()) == 1421475984


def test_3x3x3_projection_shapes_and_frames_differ():
    model = randomized_tiny(proj_kernel="3x3x3")
    assert model.learnable_proj.proj[0].weight.shape == (64, 16, 3, 3, 3)
    phi = model.learnable_proj(torch.randn(1, 16, 1, 8, 8), 7)
    assert phi.shape == (1, 16, 7, 8, 8) and phi.dtype == torch.float32
    # Two stacked 3-frame convs: frames 0, 1 (and 5, 6) reach the zero temporal padding, 2..4 do not.
    assert not torch.allclose(phi[:, :, 0], phi[:, :, 3], atol=1e-3)
    assert not torch.allclose(phi[:, :, 6], phi[:, :, 3], atol=1e-3)
    torch.testing.assert_close(phi[:, :, 2], phi[:, :, 4])


def test_1x3x3_projection_is_broadcast_over_frames():
    model = randomized_tiny()
    phi = model.learnable_proj(torch.randn(1, 16, 1, 8, 8), 4)
    assert phi.shape == (1, 16, 4, 8, 8)
    assert torch.equal(phi[:, :, 0], phi[:, :, 3])


def test_fresh_model_is_exactly_t2v():
    model = FlashI2VTransformer.from_config("tiny")
    assert model.learnable_proj(torch.randn(1, 16, 1, 8, 8), 3).abs().max() == 0
    x, t, context, s_high = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, context, s_high), model(x, t, context, None), rtol=0, atol=0)


def test_rope_split_matches_wan():
    assert rope_split(128) == (44, 42, 42)


def test_bf16_forward_close_to_fp32():
    model = randomized_tiny()
    x, t, context, s_high = inputs()
    with torch.no_grad():
        ref = model(x, t, context, s_high)
        out = model.to(torch.bfloat16)(x, t, context, s_high)
    assert out.dtype == torch.float32
    assert (out - ref).norm() / ref.norm() < 0.05


def test_save_and_load_roundtrip(tmp_path):
    model = randomized_tiny(proj_kernel="3x3x3")
    model.save_pretrained(tmp_path / "t")
    loaded = FlashI2VTransformer.from_pretrained(tmp_path / "t")
    assert loaded.config == model.config
    x, t, context, s_high = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, context, s_high), model(x, t, context, s_high), rtol=0, atol=0)
    half = FlashI2VTransformer.from_pretrained(tmp_path / "t", dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16


def test_loading_mismatched_weights_is_a_clear_error(tmp_path):
    randomized_tiny(t2v=True).save_pretrained(tmp_path / "t")
    cfg = (tmp_path / "t" / "config.json")
    cfg.write_text(cfg.read_text().replace('"num_layers": 2', '"num_layers": 3'))
    with pytest.raises(FlashI2VError, match="missing keys"):
        FlashI2VTransformer.from_pretrained(tmp_path / "t")
    with pytest.raises(FlashI2VError, match="no config.json"):
        FlashI2VTransformer.from_pretrained(tmp_path / "nowhere")


def test_bad_config_is_a_clear_error():
    with pytest.raises(FlashI2VError, match="proj_kernel"):
        preset("tiny", proj_kernel="5x5x5")
    with pytest.raises(FlashI2VError, match="divisible"):
        preset("tiny", num_heads=3)
