"""Memory configurations and --memory-budget (flashi2v.memory) on the fully random tiny pipeline (CPU)."""

import numpy as np
import pytest
import torch
from PIL import Image

from flashi2v import FlashI2VError
from flashi2v.cli import main
from flashi2v.memory import BUDGET_SHARE, MEMORY_CONFIGS, apply_memory_config, estimate_peak, pick_memory_config
from flashi2v.settings import GenerationSettings

SMALL = dict(num_frames=5, height=32, width=32, steps=2)


def settings(pipe):
    return pipe.resolve_settings(GenerationSettings(**SMALL))


def by_name(name):
    return next(c for c in MEMORY_CONFIGS if c.name == name)


def block_bytes(block):
    return sum(p.numel() * p.element_size() for p in block.parameters())


def test_estimates_follow_what_each_configuration_keeps(tiny_pipeline):
    s = settings(tiny_pipeline)
    est = {c.name: estimate_peak(tiny_pipeline, s, c) for c in MEMORY_CONFIGS}
    text = sum(p.numel() * p.element_size() for p in tiny_pipeline.text_encoder.model.parameters())
    # the resident text encoder is held through every stage; streamed, only its largest layer while it encodes
    assert est["resident"]["denoising"] - est["text-encoder-streamed"]["denoising"] == text
    # the transformer offload frees the whole transformer for the decode, and nothing else
    whole = sum(p.numel() * p.element_size() for p in tiny_pipeline.transformer.parameters())
    assert est["text-encoder-streamed"]["decode"] - est["offload-for-decode"]["decode"] == whole
    # block swapping: all blocks out, two slots in, while denoising
    blocks = [block_bytes(b) for b in tiny_pipeline.transformer.blocks]
    saved = sum(blocks) - min(2, len(blocks)) * max(blocks)
    assert est["offload-for-decode"]["denoising"] - est["block-swap"]["denoising"] == saved
    for e in est.values():
        assert e["peak"] == max(v for k, v in e.items() if k != "peak")


def test_budget_picks_the_fastest_configuration_that_fits(tiny_pipeline):
    s = settings(tiny_pipeline)
    peaks = [estimate_peak(tiny_pipeline, s, c)["peak"] for c in MEMORY_CONFIGS]
    for i, config in enumerate(MEMORY_CONFIGS):
        budget = peaks[i] / BUDGET_SHARE
        picked, estimate = pick_memory_config(tiny_pipeline, s, budget)
        j = MEMORY_CONFIGS.index(picked)
        assert j <= i and estimate["peak"] <= BUDGET_SHARE * budget
        assert all(p > BUDGET_SHARE * budget for p in peaks[:j])  # every faster one needs more
    with pytest.raises(FlashI2VError, match="no memory configuration fits .* the leanest"):
        pick_memory_config(tiny_pipeline, s, min(peaks) / BUDGET_SHARE * 0.9)


def test_applied_configurations_give_the_same_latents(make_tiny_pipeline, example_image):
    pipe = make_tiny_pipeline()
    kwargs = dict(**SMALL, seed=4, progress=False, output_type="latent")
    plain = pipe(example_image, "a dog runs", **kwargs).latents
    for name in ("block-swap", "offload-for-decode", "block-swap+tiled-decode"):
        apply_memory_config(pipe, by_name(name))
        assert (pipe.transformer.block_swap is not None) == (by_name(name).block_swap is not None)
        assert torch.equal(pipe(example_image, "a dog runs", **kwargs).latents, plain)


def test_cli_memory_budget_says_what_it_picked_and_keeps_the_video(tiny_pipeline, tmp_path, example_image, capsys):
    folder = tmp_path / "model"
    tiny_pipeline.save_pretrained(folder)
    base = ["generate", "--model", str(folder), "--image", example_image, "--prompt", "a dog", "--seed", "2",
            "--num-frames", "5", "--height", "32", "--width", "32", "--steps", "2", "--device", "cpu", "--strip"]
    assert main(base + ["--out", str(tmp_path / "plain.mp4")]) == 0
    s = settings(tiny_pipeline)
    budget = min(estimate_peak(tiny_pipeline, s, c)["peak"] for c in MEMORY_CONFIGS) / BUDGET_SHARE / 1e9 * 1.0001
    expected, _ = pick_memory_config(tiny_pipeline, s, budget * 1e9)
    assert expected.name != "resident"  # the budget is tight enough to make the choice matter
    assert main(base + ["--out", str(tmp_path / "lean.mp4"), "--memory-budget", f"{budget:.9f}"]) == 0
    assert f"using '{expected.name}'" in capsys.readouterr().err
    strips = [np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("plain", "lean")]
    assert np.array_equal(*strips)
    assert main(base + ["--out", str(tmp_path / "none.mp4"), "--memory-budget", f"{budget / 2:.9f}"]) == 2
    assert "no memory configuration fits" in capsys.readouterr().err
    assert not (tmp_path / "none.mp4").exists()
