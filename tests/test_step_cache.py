"""Step caching (flashi2v.step_cache): off by default, exact at threshold 0, skips and resets as specified."""

import pytest
import torch

from flashi2v import FlashI2VError
from flashi2v.cli import main
from flashi2v.step_cache import FirstBlockCache, apply_step_cache, remove_step_cache
from flashi2v.random_components import random_tiny_pipeline

SMALL = dict(num_frames=5, height=32, width=48, steps=6, output_type="latent", progress=False)


@pytest.fixture(scope="module")
def pipe(make_tiny_pipeline):
    """Fully random tiny pipeline (Wan's init zeroes the head: the velocity would not depend on the blocks,
    and skipping them would change nothing)."""
    return make_tiny_pipeline(seed=0)


@pytest.fixture(autouse=True)
def _no_cache(pipe):
    yield
    pipe.disable_step_cache()


@pytest.fixture(scope="module")
def run(example_image):
    def generate(pipe, seed=0, prompt="the camera pans left", **kwargs):
        return pipe(example_image, prompt, seed=seed, **{**SMALL, **kwargs}).latents
    return generate


def test_off_by_default(run, pipe):
    assert random_tiny_pipeline(seed=1).transformer.step_cache is None
    run(pipe)
    assert pipe.transformer.step_cache is None


@pytest.mark.parametrize("batch_cfg", [True, False])
def test_threshold_zero_is_bit_identical(run, pipe, batch_cfg):
    plain = run(pipe, batch_cfg=batch_cfg)
    cache = apply_step_cache(pipe.transformer, 0.0)
    cached = run(pipe, batch_cfg=batch_cfg)
    torch.testing.assert_close(cached, plain, rtol=0, atol=0)
    assert (cache.computed, cache.skipped) == (6, 0) and cache.decisions == [False] * 6


@pytest.mark.parametrize("batch_cfg", [True, False])
def test_large_threshold_skips_but_never_first_or_last_step(run, pipe, batch_cfg):
    plain = run(pipe, batch_cfg=batch_cfg)
    pipe.enable_step_cache(100.0)
    cached = run(pipe, batch_cfg=batch_cfg)
    stats = pipe.transformer.step_cache.stats()
    # one decision per step for the whole CFG batch (or for both unbatched CFG forwards of a step)
    assert stats["decisions"] == [False, True, True, True, True, False]
    assert (stats["computed"], stats["skipped"], stats["steps"]) == (2, 4, 6)
    assert torch.isfinite(cached).all() and not torch.allclose(cached, plain, atol=1e-3)


def test_batched_and_unbatched_cfg_agree_with_cache(run, pipe):
    pipe.enable_step_cache(100.0)
    batched = run(pipe, batch_cfg=True)
    unbatched = run(pipe, batch_cfg=False)
    torch.testing.assert_close(batched, unbatched, rtol=1e-4, atol=1e-4)


def test_warmup_and_final_steps(run, pipe):
    pipe.enable_step_cache(100.0, warmup_steps=2, final_steps=2)
    run(pipe)
    assert pipe.transformer.step_cache.decisions == [False, False, True, True, False, False]


def test_state_resets_between_calls(run, pipe):
    pipe.enable_step_cache(0.3)
    first = run(pipe)
    stats = pipe.transformer.step_cache.stats()
    run(pipe, seed=5, prompt="a dog runs on the grass", steps=9)  # different state in between
    again = run(pipe)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert pipe.transformer.step_cache.stats() == stats


def test_per_call_threshold_is_temporary(run, pipe):
    a = run(pipe, step_cache=100.0)
    assert pipe.transformer.step_cache is None
    pipe.enable_step_cache(100.0)
    torch.testing.assert_close(run(pipe), a, rtol=0, atol=0)
    installed = pipe.transformer.step_cache
    run(pipe, step_cache=0.0)
    assert pipe.transformer.step_cache is installed


def test_new_generation_detected_without_reset(pipe):
    """Used directly on the transformer (no pipeline reset): a timestep that does not decrease starts over."""
    model = pipe.transformer
    cache = apply_step_cache(model, 100.0)
    g = torch.Generator().manual_seed(0)
    x, ctx, feats = torch.randn(1, 16, 2, 4, 6, generator=g), torch.randn(1, 7, 32, generator=g), None
    with torch.no_grad():
        outs = [model(x, torch.tensor([t]), ctx, feats) for t in (1000.0, 900.0, 800.0)]
        assert cache.decisions == [False, True, True]
        again = model(x, torch.tensor([1000.0]), ctx, feats)  # a new generation: computed in full
    assert cache.decisions == [False] and cache.computed == 1
    torch.testing.assert_close(again, outs[0], rtol=0, atol=0)
    remove_step_cache(model)
    assert model.step_cache is None


def test_training_forward_ignores_cache(pipe):
    model = pipe.transformer
    cache = apply_step_cache(model, 100.0)
    x = torch.randn(1, 16, 2, 4, 6)
    ctx = torch.randn(1, 7, 32)
    for t in (1000.0, 900.0):
        model(x, torch.tensor([t]), ctx).sum()  # grad enabled: every block runs, nothing recorded
    assert cache.decisions == [] and cache.computed == 0


def test_bad_threshold_is_a_clear_error(pipe, capsys, example_image):
    with pytest.raises(FlashI2VError, match=">= 0"):
        FirstBlockCache(-0.1)
    assert main(["generate", "--image", example_image, "--prompt", "x", "--step-cache", "-1", "--device", "cpu"]) == 2
    assert "--step-cache -1.0 must be >= 0" in capsys.readouterr().err


def test_cli_step_cache_flag(pipe, tmp_path, example_image):
    """--step-cache reaches the pipeline: the CLI's video (PNG strip: lossless) is the library's with that
    threshold, which skips steps and so differs from the uncached one."""
    import numpy as np
    from PIL import Image

    folder, out = tmp_path / "model", tmp_path / "v.mp4"
    pipe.save_pretrained(folder)
    rc = main(["generate", "--image", example_image, "--prompt", "zoom in slowly", "--model", str(folder), "--out",
               str(out), "--num-frames", "5", "--height", "32", "--width", "48", "--steps", "4", "--seed", "1",
               "--device", "cpu", "--step-cache", "100", "--strip"])
    assert rc == 0
    strip = np.asarray(Image.open(out.with_suffix(".png")))
    settings = dict(num_frames=5, height=32, width=48, steps=4, seed=1, progress=False)
    cached, plain = (np.concatenate(list(pipe(example_image, "zoom in slowly", step_cache=t, **settings).frames.numpy()),
                                    axis=1) for t in (100.0, None))
    assert np.array_equal(strip, cached) and not np.array_equal(strip, plain)
