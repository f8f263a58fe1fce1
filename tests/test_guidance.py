"""Guidance modes of the sampler: plain CFG and mean-free CFG, on the built-in model's real velocities.

(The tiny random model's output head starts at zero, so its two CFG branches would agree exactly.)"""

import pytest
import torch

from flashi2v import FlashI2VError, FlashI2VPipeline, fourier
from flashi2v.builtin import builtin_available
from flashi2v.paradigms import Condition
from flashi2v.sampling import cfg, conditioned_velocity, mean_free_cfg

SMALL = dict(num_frames=5, steps=2)  # at the model's 128 x 128
BATCH_TOL = dict(rtol=1e-4, atol=3e-4)  # one batch of both branches vs one branch at a time

pytestmark = pytest.mark.skipif(not builtin_available(), reason="this install has no built-in model")


@pytest.fixture(scope="module")
def pipe():
    return FlashI2VPipeline.from_pretrained("builtin")


@pytest.fixture(scope="module")
def branches(pipe, example_image):
    """The built-in DiT's velocity with either CFG mode, its contexts, a noisy state z and sigma."""
    with torch.no_grad():
        s = pipe.encode_image([example_image], 128, 128)
        phi_s, s_high = pipe.transformer.learnable_proj(s, 2), fourier.fourier_features(s, 0.1, 2)
        context, negative = pipe.encode_prompt(["the camera pans left", ""]).split([1, 1])
    z = torch.randn((1, pipe.transformer.config.in_dim, 2, *s.shape[-2:]), generator=torch.Generator().manual_seed(0))

    def velocity(guidance, mode="cfg", ctx=context):
        v = conditioned_velocity(pipe.transformer, Condition(phi_s, s_high), ctx, negative, guidance, guidance_mode=mode)
        return lambda z, sigma: torch.no_grad()(v)(z, sigma)

    return velocity, context, negative, z, torch.tensor(0.7)


def spatial_mean(v):
    return v.mean(dim=(-2, -1), keepdim=True)


def test_mean_free_keeps_the_conditional_mean_and_guides_the_rest(branches):
    velocity, context, negative, z, sigma = branches
    v_cond = velocity(1.0)(z, sigma)
    v_uncond = velocity(1.0, ctx=negative)(z, sigma)
    plain, free = velocity(4.0)(z, sigma), velocity(4.0, "mean_free")(z, sigma)
    torch.testing.assert_close(plain, cfg(v_cond, v_uncond, 4.0), **BATCH_TOL)
    torch.testing.assert_close(free, mean_free_cfg(v_cond, v_uncond, 4.0), **BATCH_TOL)
    # per channel and latent frame, the mean follows the conditional branch; plain CFG moves it
    torch.testing.assert_close(spatial_mean(free), spatial_mean(v_cond), **BATCH_TOL)
    assert (spatial_mean(plain) - spatial_mean(v_cond)).abs().max() > 1e-3
    # the spatial structure is guided exactly as by plain CFG
    torch.testing.assert_close(free - spatial_mean(free), plain - spatial_mean(plain), **BATCH_TOL)


def test_mean_free_removes_a_pure_colour_offset_and_is_neutral_otherwise(branches):
    velocity, _, _, z, sigma = branches
    v_cond = velocity(1.0)(z, sigma)
    offset = torch.randn(1, v_cond.shape[1], v_cond.shape[2], 1, 1)  # one constant per channel and frame
    torch.testing.assert_close(mean_free_cfg(v_cond, v_cond - offset, 5.0), v_cond)  # CFG would add 4 x offset
    torch.testing.assert_close(cfg(v_cond, v_cond - offset, 5.0), v_cond + 4.0 * offset.expand_as(v_cond))
    centred = v_cond - spatial_mean(v_cond)  # an update with zero spatial mean: same as plain CFG
    torch.testing.assert_close(mean_free_cfg(v_cond, v_cond - centred, 3.0), cfg(v_cond, v_cond - centred, 3.0))


def test_pipeline_guidance_mode(pipe, example_image):
    kw = dict(seed=3, progress=False, output_type="latent", **SMALL)
    plain = pipe(example_image, "the camera pans left", guidance=4.0, guidance_mode="cfg", **kw).latents
    free = pipe(example_image, "the camera pans left", guidance=4.0, guidance_mode="mean_free", **kw).latents
    assert not torch.allclose(plain, free)
    # with guidance 1 there is no update to change: both modes give the same video
    torch.testing.assert_close(pipe(example_image, "a dog", guidance=1.0, guidance_mode="mean_free", **kw).latents,
                               pipe(example_image, "a dog", guidance=1.0, guidance_mode="cfg", **kw).latents)
    saved = pipe.defaults.get("guidance_mode")
    try:  # unset, the mode comes from the model folder's pipeline.json (the built-in one: mean_free), else cfg
        for default, expected in (("mean_free", free), ("cfg", plain), (None, plain)):
            pipe.defaults.pop("guidance_mode", None)
            if default is not None:
                pipe.defaults["guidance_mode"] = default
            torch.testing.assert_close(pipe(example_image, "the camera pans left", guidance=4.0, **kw).latents, expected)
    finally:
        pipe.defaults["guidance_mode"] = saved
        if saved is None:
            del pipe.defaults["guidance_mode"]
    with pytest.raises(FlashI2VError, match="guidance_mode"):
        pipe(example_image, "a dog", guidance_mode="apg", **kw)
