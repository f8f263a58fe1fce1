"""FlashI2VPipeline and `flashi2v generate` end to end on tiny random components."""

import pytest
import torch

from flashi2v import FlashI2VError, FlashI2VPipeline
from flashi2v.cli import main
from flashi2v.model.attention import fa3_available, fa4_available
from flashi2v.random_components import random_tiny_pipeline
from flashi2v.video import read_video_frames

EXAMPLE = "assets/examples/astronaut.jpg"
SMALL = dict(num_frames=9, height=64, width=96, steps=3)


@pytest.fixture(scope="module")
def pipe():
    return random_tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def test_generates_uint8_frames_of_requested_shape(pipe):
    out = pipe(EXAMPLE, "the camera pans left", seed=0, progress=False, **SMALL)
    assert out.frames.shape == (9, 64, 96, 3) and out.frames.dtype == torch.uint8
    assert out.latents.shape == (1, 16, 3, 8, 12)


def test_same_seed_same_video_and_cfg_modes_agree(pipe):
    a = pipe(EXAMPLE, "a dog runs", seed=7, progress=False, **SMALL)
    b = pipe(EXAMPLE, "a dog runs", seed=7, progress=False, batch_cfg=False, **SMALL)
    c = pipe(EXAMPLE, "a dog runs", seed=8, progress=False, **SMALL)
    torch.testing.assert_close(a.latents, b.latents, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a.latents, c.latents)


def test_batch_of_prompts(pipe):
    out = pipe(EXAMPLE, ["a cat", "a car drives"], seed=0, progress=False, **SMALL)
    assert out.frames.shape == (2, 9, 64, 96, 3)


def test_save_and_load_pipeline(pipe, saved):
    loaded = FlashI2VPipeline.from_pretrained(saved)
    a = pipe(EXAMPLE, "a bird flies", seed=3, progress=False, output_type="latent", **SMALL)
    b = loaded(EXAMPLE, "a bird flies", seed=3, progress=False, output_type="latent", **SMALL)
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)
    assert loaded.defaults == pipe.defaults


def test_given_text_encoder_keeps_the_folders_settings(pipe, tmp_path):
    """A folder loaded with another text encoder (as the GPU tuning step does) still samples with its own
    pipeline.json: a model trained on signed Fourier features must not be measured with the modulus."""
    signed = FlashI2VPipeline(pipe.transformer, pipe.vae, pipe.text_encoder, signed_fourier=True,
                              defaults={**pipe.defaults, "steps": 2})
    signed.save_pretrained(tmp_path)
    loaded = FlashI2VPipeline.from_pretrained(tmp_path, text_encoder=pipe.text_encoder)
    assert loaded.signed_fourier and loaded.text_encoder is pipe.text_encoder and loaded.defaults == signed.defaults
    a = signed(EXAMPLE, "a bird flies", seed=3, progress=False, output_type="latent", **SMALL)
    b = loaded(EXAMPLE, "a bird flies", seed=3, progress=False, output_type="latent", **SMALL)
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_frames=10), "4k\\+1"),
    (dict(height=65), "multiple of 16"),
    (dict(steps=0), "steps"),
    (dict(guidance=-1.0), "guidance"),
    (dict(cutoff=1.5), "cutoff"),
])
def test_bad_settings_are_clear_errors(pipe, kwargs, match):
    with pytest.raises(FlashI2VError, match=match):
        pipe(EXAMPLE, "x", progress=False, **{**SMALL, **kwargs})


def test_cli_generate_writes_mp4(saved, tmp_path, capsys):
    out = tmp_path / "v.mp4"
    rc = main(["generate", "--image", EXAMPLE, "--prompt", "zoom in slowly", "--model", str(saved), "--out", str(out),
               "--num-frames", "13", "--height", "48", "--width", "80", "--steps", "2", "--seed", "1", "--device", "cpu"])
    assert rc == 0 and out.is_file()
    frames, fps = read_video_frames(out)
    assert frames.shape == (13, 48, 80, 3) and fps == pytest.approx(16)
    assert str(out) in capsys.readouterr().out


def test_cli_batch_mode_numbers_outputs(saved, tmp_path):
    (tmp_path / "prompts.txt").write_text("a cat\na dog runs\n")
    rc = main(["generate", "--image", EXAMPLE, "--prompts-file", str(tmp_path / "prompts.txt"), "--model", str(saved),
               "--out", str(tmp_path / "v.mp4"), "--steps", "1", "--num-frames", "5", "--height", "32", "--width", "32"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.glob("v_*.mp4")) == ["v_000.mp4", "v_001.mp4"]


@pytest.mark.parametrize("extra,match", [
    (["--image", "missing.png"], "missing.png"),
    (["--image", "pyproject.toml"], "not an image"),
    (["--image", EXAMPLE, "--num-frames", "48"], "4k\\+1"),
    (["--image", EXAMPLE, "--height", "100"], "multiple of 8 for this model"),  # the built-in model: 4 x 2
    (["--image", EXAMPLE, "--model", "no/such/folder"], "does not exist"),
    (["--image", EXAMPLE, "--device", "cuda:7"], "not available"),
    (["--image", EXAMPLE, "--cutoff", "2"], "cutoff"),
    (["--image", EXAMPLE, "--attention", "fa4"], "pip install flash-attn-4"),
    (["--image", EXAMPLE, "--attention", "fa3"], "build_fa3.sh"),
])
def test_cli_bad_input_is_one_line_error(extra, match, capsys, tmp_path):
    if "--device" in extra and torch.cuda.device_count() > 7:
        pytest.skip("machine has 8 GPUs")
    if ("fa4" in extra and fa4_available()) or ("fa3" in extra and fa3_available()):
        pytest.skip("that attention package is installed here")
    rc = main(["generate", "--prompt", "x", "--out", str(tmp_path / "o.mp4"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and err.startswith("flashi2v: error:") and "Traceback" not in err
    assert __import__("re").search(match, err), err


def test_cli_model_folder_missing_component(saved, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    shutil.rmtree(broken / "vae")
    rc = main(["generate", "--image", EXAMPLE, "--prompt", "x", "--model", str(broken), "--out", str(tmp_path / "o.mp4")])
    assert rc == 2 and "vae/" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for flag in ("--image", "--prompt", "--model", "--out", "--num-frames", "--cutoff", "--device", "--dtype",
                 "--images-file", "--prompts-file", "--guidance", "--steps", "--shift", "--seed"):
        assert flag in text


def test_cli_eval_motion_pools_several_seeds(pipe, tmp_path, capsys):
    """`flashi2v eval motion --seed 0 1` writes each seed's report and one pooled over both seeds' videos."""
    import json
    import shutil

    folder, photos, out = tmp_path / "model", tmp_path / "photos", tmp_path / "eval"
    small = FlashI2VPipeline(pipe.transformer, pipe.vae, pipe.text_encoder, defaults={**SMALL, "steps": 2})
    small.save_pretrained(folder)
    photos.mkdir()
    shutil.copy(EXAMPLE, photos / "astronaut.jpg")
    rc = main(["eval", "motion", "--model", str(folder), "--photos", str(photos), "--seed", "0", "1",
               "--out", str(out), "--device", "cpu"])
    assert rc == 0
    pooled = json.loads((out / "seeds.json").read_text())
    per_seed = [json.loads((out / f"seed{s}" / "quality.json").read_text()) for s in (0, 1)]
    assert pooled["seeds"] == [0, 1] and pooled["videos"] == 12  # 6 camera motions x 2 seeds
    assert pooled["colour_drift_max"] == max(q["summary"]["colour_drift_max"] for q in per_seed)
    assert per_seed[0]["rows"] != per_seed[1]["rows"]  # the seeds really differ
    assert "| all |" in capsys.readouterr().out
