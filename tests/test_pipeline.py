"""FlashI2VPipeline and `flashi2v generate` end to end on a tiny pipeline whose every weight is random."""

import json
import re
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

from flashi2v import FlashI2VError, FlashI2VPipeline, flow, fourier
from flashi2v.cli import main
from flashi2v.model.attention import fa3_available, fa4_available
from flashi2v.paradigms import Condition
from flashi2v.sampling import conditioned_velocity
from flashi2v.video import read_video_frames, to_uint8

SMALL = dict(num_frames=9, height=64, width=96, steps=3)


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    return tiny_pipeline


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    pipe.save_pretrained(folder)
    return folder


def latents(pipe, image, prompt="a dog runs", seed=7, **kwargs):
    return pipe(image, prompt, seed=seed, progress=False, output_type="latent", **{**SMALL, **kwargs}).latents


def test_random_pipeline_has_a_velocity_and_leaves_the_noise(pipe, example_image):
    """The fixture every generation test relies on: a zero velocity would make the latents the noise."""
    out = latents(pipe, example_image)
    eps = pipe.prepare_noise(out.shape, 7, None)
    assert (out - eps).norm() > 0.5 * eps.norm()
    with torch.no_grad():
        s = pipe.encode_image([example_image], 64, 96)
        phi_s = pipe.transformer.learnable_proj(s, 3)
        v = conditioned_velocity(pipe.transformer, Condition(phi_s, fourier.fourier_features(s, 0.1, 3)),
                                 pipe.encode_prompt(["a dog runs"]))(eps, torch.tensor(1.0))
    assert phi_s.abs().mean() > 1e-2 and v.abs().mean() > 0.1  # the latent shift and the velocity are non-zero


def test_latents_are_the_euler_integral_of_the_shifted_flow(pipe, example_image):
    """METHOD.md 3, written out here: z = eps; z += v (sigma_next - sigma), v = v_u + g (v_c - v_u) of
    DiT(z - phi(s)); the result is returned without adding phi(s) back."""
    guidance, cutoff = 4.0, 0.3
    out = latents(pipe, example_image, "a cat", seed=5, guidance=guidance, cutoff=cutoff, negative_prompt="blurry")
    with torch.no_grad():
        s = pipe.encode_image([example_image], 64, 96)
        phi_s, s_high = pipe.transformer.learnable_proj(s, 3), fourier.fourier_features(s, cutoff, 3)
        cond, uncond = pipe.encode_prompt(["a cat"]), pipe.encode_prompt(["blurry"])
        z = pipe.prepare_noise(out.shape, 5, None)
        sigmas = flow.sigma_schedule(SMALL["steps"], pipe.defaults.get("shift", 7.0))
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            t = (1000 * sigma).view(1)
            v_c = pipe.transformer(z - phi_s, t, cond, s_high)
            v_u = pipe.transformer(z - phi_s, t, uncond, s_high)
            z = z + (v_u + guidance * (v_c - v_u)) * (sigma_next - sigma)
    torch.testing.assert_close(out, z, rtol=1e-4, atol=1e-4)


def test_frames_are_the_vae_decode_of_the_latents(pipe, example_image):
    out = pipe(example_image, "the camera pans left", seed=0, progress=False, **SMALL)
    assert out.frames.shape == (9, 64, 96, 3) and out.frames.dtype == torch.uint8
    assert out.latents.shape == (1, 16, 3, 8, 12)
    with torch.no_grad():
        decoded = to_uint8(pipe.vae.decode(out.latents).permute(0, 2, 3, 4, 1))[0]
    assert torch.equal(out.frames, decoded)


def test_timings_cover_the_pipeline_stages_back_to_back(pipe, example_image):
    """result.timings: each stage measured (a missing lap drops its key or folds it into the next stage), and the
    stages tile the call: their sum is at most the call's wall time and most of it."""
    started = time.perf_counter()
    out = pipe(example_image, "a dog runs", seed=0, progress=False, **SMALL)
    wall = time.perf_counter() - started
    assert list(out.timings) == ["encode", "denoise", "decode"]
    assert all(t > 0 for t in out.timings.values()), out.timings
    assert 0.5 * wall < sum(out.timings.values()) <= wall
    latent = pipe(example_image, "a dog runs", seed=0, progress=False, output_type="latent", **SMALL)
    assert list(latent.timings) == ["encode", "denoise"] and all(t > 0 for t in latent.timings.values())


def test_same_seed_same_video_and_cfg_modes_agree(pipe, example_image):
    a = latents(pipe, example_image)
    b = latents(pipe, example_image, batch_cfg=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert torch.equal(latents(pipe, example_image), a)
    assert not torch.allclose(a, latents(pipe, example_image, seed=8))
    assert not torch.allclose(a, latents(pipe, example_image, "a cat"), rtol=1e-4, atol=1e-4)  # the prompt matters


def test_batch_of_prompts_is_each_prompt_on_its_own_noise(pipe, example_image, monkeypatch):
    prompts = ["a cat", "a car drives"]
    batch = pipe(example_image, prompts, seed=0, progress=False, output_type="latent", **SMALL).latents
    assert batch.shape == (2, 16, 3, 8, 12)
    eps = pipe.prepare_noise(batch.shape, 0, None)
    for i, prompt in enumerate(prompts):  # sample i alone, started from the batch's noise of sample i
        monkeypatch.setattr(pipe, "prepare_noise", lambda shape, seed, generator, i=i: eps[i:i + 1])
        torch.testing.assert_close(batch[i:i + 1], latents(pipe, example_image, prompt), rtol=1e-4, atol=1e-4)


def test_save_and_load_pipeline(pipe, saved, example_image):
    loaded = FlashI2VPipeline.from_pretrained(saved)
    a = latents(pipe, example_image, "a bird flies", seed=3)
    torch.testing.assert_close(latents(loaded, example_image, "a bird flies", seed=3), a, rtol=0, atol=0)
    assert loaded.defaults == pipe.defaults


def test_given_text_encoder_keeps_the_folders_settings(pipe, tmp_path, example_image):
    """A folder loaded with another text encoder (as the GPU tuning step does) still samples with its own
    pipeline.json: a model trained on signed Fourier features must not be measured with the modulus."""
    signed = FlashI2VPipeline(pipe.transformer, pipe.vae, pipe.text_encoder, signed_fourier=True,
                              defaults={**pipe.defaults, "steps": 2})
    signed.save_pretrained(tmp_path)
    loaded = FlashI2VPipeline.from_pretrained(tmp_path, text_encoder=pipe.text_encoder)
    assert loaded.signed_fourier and loaded.text_encoder is pipe.text_encoder and loaded.defaults == signed.defaults
    a = latents(signed, example_image, "a bird flies", seed=3)
    torch.testing.assert_close(latents(loaded, example_image, "a bird flies", seed=3), a, rtol=0, atol=0)
    # and the setting matters: the modulus gives another video
    assert not torch.allclose(latents(pipe, example_image, "a bird flies", seed=3), a, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_frames=10), "4k\\+1"),
    (dict(height=65), "multiple of 16"),
    (dict(steps=0), "steps"),
    (dict(guidance=-1.0), "guidance"),
    (dict(cutoff=1.5), "cutoff"),
])
def test_bad_settings_are_clear_errors(pipe, kwargs, match, example_image):
    with pytest.raises(FlashI2VError, match=match):
        pipe(example_image, "x", progress=False, **{**SMALL, **kwargs})


def test_cli_generate_writes_mp4(saved, tmp_path, capsys, example_image):
    out = tmp_path / "v.mp4"
    rc = main(["generate", "--image", example_image, "--prompt", "zoom in slowly", "--model", str(saved), "--out",
               str(out), "--num-frames", "13", "--height", "48", "--width", "80", "--steps", "2", "--seed", "1",
               "--device", "cpu"])
    assert rc == 0 and out.is_file()
    frames, fps = read_video_frames(out)
    assert frames.shape == (13, 48, 80, 3) and fps == pytest.approx(16)
    captured = capsys.readouterr()
    assert str(out) in captured.out
    times = stage_times(captured.err)
    assert len(times) == 1 and list(times[0]) == ["load", "encode", "denoise", "decode", "write", "total"]
    *stages, total = times[0].values()
    assert all(t > 0 for t in stages)
    assert sum(stages) == pytest.approx(total, abs=0.05 * len(stages))  # each printed rounded (to 0.1 s from 1 s)


def stage_times(stderr: str) -> list[dict[str, float]]:
    """The `times:` lines of `flashi2v generate`, as {stage: seconds} with the total last."""
    lines = [line for line in stderr.splitlines() if line.startswith("times: ")]
    return [{m[0]: float(m[1]) for m in re.findall(r"(\w+) (\S+) s\b", line)} for line in lines]


def test_cli_batch_mode_numbers_outputs(saved, tmp_path, example_image, capsys):
    (tmp_path / "prompts.txt").write_text("a cat\na dog runs\n")
    rc = main(["generate", "--image", example_image, "--prompts-file", str(tmp_path / "prompts.txt"), "--model",
               str(saved), "--out", str(tmp_path / "v.mp4"), "--steps", "1", "--num-frames", "5", "--height", "32",
               "--width", "32"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.glob("v_*.mp4")) == ["v_000.mp4", "v_001.mp4"]
    first, second = stage_times(capsys.readouterr().err)  # one line per video; the model loads once
    assert list(first) == ["load", "encode", "denoise", "decode", "write", "total"]
    assert list(second) == ["encode", "denoise", "decode", "write", "total"]


@pytest.mark.parametrize("extra,match", [
    (["--image", "missing.png"], "missing.png"),
    (["--image", "NOT_AN_IMAGE"], "not an image"),
    (["--image", "EXAMPLE", "--num-frames", "48"], "4k\\+1"),
    (["--image", "EXAMPLE", "--height", "100"], "multiple of 8 for this model"),  # the built-in model: 4 x 2
    (["--image", "EXAMPLE", "--model", "no/such/folder"], "does not exist"),
    (["--image", "EXAMPLE", "--device", "cuda:7"], "not available"),
    (["--image", "EXAMPLE", "--cutoff", "2"], "cutoff"),
    (["--image", "EXAMPLE", "--attention", "fa4"], "pip install flash-attn-4"),
    (["--image", "EXAMPLE", "--attention", "fa3"], "build_fa3.sh"),
])
def test_cli_bad_input_is_one_line_error(extra, match, capsys, tmp_path, example_image, monkeypatch):
    if "--device" in extra and torch.cuda.device_count() > 7:
        pytest.skip("machine has 8 GPUs")
    if ("fa4" in extra and fa4_available()) or ("fa3" in extra and fa3_available()):
        pytest.skip("that attention package is installed here")
    monkeypatch.chdir(tmp_path)  # "missing.png" and "no/such/folder" are relative paths that do not exist
    (tmp_path / "notes.png").write_text("a text file with an image's suffix")
    extra = [{"EXAMPLE": example_image, "NOT_AN_IMAGE": "notes.png"}.get(a, a) for a in extra]
    rc = main(["generate", "--prompt", "x", "--out", str(tmp_path / "o.mp4"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and err.startswith("flashi2v: error:") and "Traceback" not in err
    assert re.search(match, err), err
    assert not (tmp_path / "o.mp4").exists()


def test_cli_model_folder_missing_component(saved, tmp_path, capsys, example_image):
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    shutil.rmtree(broken / "vae")
    rc = main(["generate", "--image", example_image, "--prompt", "x", "--model", str(broken), "--out",
               str(tmp_path / "o.mp4")])
    assert rc == 2 and "vae/" in capsys.readouterr().err


# One CLI run per generation flag: the PNG strip it writes (lossless, all 5 frames) must be the library's video
# with that setting, and differ from the video without it, so a flag that is parsed but not passed on fails.
CLI_BASE = dict(num_frames=5, height=32, width=32, steps=2, seed=3)
FLAG_CASES = [
    (["--guidance", "2.5"], dict(guidance=2.5)),
    (["--guidance-mode", "mean_free"], dict(guidance_mode="mean_free")),
    (["--solver", "heun"], dict(solver="heun")),
    (["--shift", "2"], dict(shift=2.0)),
    (["--cutoff", "0.9"], dict(cutoff=0.9)),
    (["--negative-prompt", "a red car"], dict(negative_prompt="a red car")),
    (["--seed", "4"], dict(seed=4)),
    (["--steps", "3"], dict(steps=3)),
]


def _cli_strip(model, image, out, flags):
    base = ["--num-frames", "5", "--height", "32", "--width", "32", "--steps", "2", "--seed", "3"]
    rc = main(["generate", "--image", image, "--prompt", "a dog runs", "--model", str(model), "--out", str(out),
               "--device", "cpu", "--strip", *base, *flags])
    assert rc == 0
    return np.asarray(Image.open(out.with_suffix(".png")))


def _library_strip(pipe, image, **kwargs):
    frames = pipe(image, "a dog runs", progress=False, **{**CLI_BASE, **kwargs}).frames.numpy()
    return np.concatenate(list(frames), axis=1)


@pytest.mark.parametrize("flags,kwargs", FLAG_CASES, ids=[f[0][0] for f in FLAG_CASES])
def test_cli_generation_flags_reach_the_pipeline(flags, kwargs, pipe, saved, tmp_path, example_image):
    strip = _cli_strip(saved, example_image, tmp_path / "v.mp4", flags)
    assert np.array_equal(strip, _library_strip(pipe, example_image, **kwargs))
    assert not np.array_equal(strip, _library_strip(pipe, example_image))


def test_cli_images_file_pairs_each_image_with_its_prompt(pipe, saved, tmp_path, example_image):
    flipped = tmp_path / "flipped.png"
    Image.open(example_image).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    (tmp_path / "images.txt").write_text(f"{example_image}\n{flipped}\n")
    (tmp_path / "prompts.txt").write_text("a dog runs\na dog runs\n")
    rc = main(["generate", "--images-file", str(tmp_path / "images.txt"), "--prompts-file",
               str(tmp_path / "prompts.txt"), "--model", str(saved), "--out", str(tmp_path / "v.mp4"), "--device",
               "cpu", "--strip", "--num-frames", "5", "--height", "32", "--width", "32", "--steps", "2", "--seed", "3"])
    assert rc == 0
    strips = [np.asarray(Image.open(tmp_path / f"v_{i:03d}.png")) for i in range(2)]
    assert np.array_equal(strips[0], _library_strip(pipe, example_image))
    assert np.array_equal(strips[1], _library_strip(pipe, str(flipped), seed=4))  # batch mode: seed + index


def test_cli_eval_motion_pools_several_seeds(pipe, tmp_path, capsys, example_image):
    """`flashi2v eval motion --seed 0 1` writes each seed's report and one pooled over both seeds' videos."""
    folder, photos, out = tmp_path / "model", tmp_path / "photos", tmp_path / "eval"
    small = FlashI2VPipeline(pipe.transformer, pipe.vae, pipe.text_encoder, defaults={**SMALL, "steps": 2})
    small.save_pretrained(folder)
    photos.mkdir()
    shutil.copy(example_image, photos / "astronaut.jpg")
    rc = main(["eval", "motion", "--model", str(folder), "--photos", str(photos), "--seed", "0", "1",
               "--out", str(out), "--device", "cpu"])
    assert rc == 0
    pooled = json.loads((out / "seeds.json").read_text())
    per_seed = [json.loads((out / f"seed{s}" / "quality.json").read_text()) for s in (0, 1)]
    assert pooled["seeds"] == [0, 1] and pooled["videos"] == 12  # 6 camera motions x 2 seeds
    assert pooled["colour_drift_max"] == max(q["summary"]["colour_drift_max"] for q in per_seed)
    assert per_seed[0]["rows"] != per_seed[1]["rows"]  # the seeds really differ
    assert "| all |" in capsys.readouterr().out
