"""GenerationSettings: resolved against the model's own defaults, checked against its real factors; the
Python API raises FlashI2VError where the CLI prints one line; choice lists have one home."""

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from flashi2v import FlashI2VError, FlashI2VPipeline, FlashI2VWarning, GenerationSettings
from flashi2v.builtin import BUILTIN_DIR, DEFAULTS, builtin_factors
from flashi2v.device import resolve_device
from flashi2v.settings import (ATTENTION_BACKEND_NAMES, GUIDANCE_MODES, REFERENCE, SOLVER_NAMES, LatentFactors,
                               check_fits, check_seed, estimate_bytes, far_from_trained)

EXAMPLE = "assets/examples/astronaut.jpg"
WAN = LatentFactors(temporal=4, spatial=8, patch=(1, 2, 2))
BUILTIN = LatentFactors(temporal=4, spatial=4, patch=(1, 2, 2))
TINY = dict(num_frames=1, steps=1, output_type="latent", progress=False, seed=0)  # one step, one frame


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


@pytest.fixture(scope="module")
def builtin():
    return FlashI2VPipeline.from_pretrained("builtin")


def test_resolved_takes_given_then_model_defaults_then_reference():
    s = GenerationSettings(height=136).resolved({"width": 96, "guidance": 1.25, "negative_prompt": ""})
    assert (s.height, s.width, s.guidance) == (136, 96, 1.25)
    assert (s.num_frames, s.steps, s.shift, s.solver) == (REFERENCE.num_frames, REFERENCE.steps, REFERENCE.shift, "euler")
    assert GenerationSettings(steps=3).given() == {"steps": 3}


def test_sizes_are_checked_against_the_models_own_factors():
    GenerationSettings(height=136, width=136).check(BUILTIN)  # 136 = 17 x (4 x 2)
    with pytest.raises(FlashI2VError, match="multiple of 16 .*try 128 or 144"):
        GenerationSettings(height=136, width=128).check(WAN)
    with pytest.raises(FlashI2VError, match="width 100 must be a multiple of 8"):
        GenerationSettings(height=136, width=100).check(BUILTIN)
    with pytest.raises(FlashI2VError, match="of the form 4k\\+1 .* use e.g. 17"):
        GenerationSettings(num_frames=18).check(BUILTIN)
    with pytest.raises(FlashI2VError, match="temporal patch size 2"):
        GenerationSettings(num_frames=9).check(LatentFactors(4, 8, (2, 2, 2)))  # 3 latent frames
    GenerationSettings(num_frames=5).check(LatentFactors(4, 8, (2, 2, 2)))  # 2 latent frames
    GenerationSettings(num_frames=5).check()  # without factors: no size rule assumed


@pytest.mark.parametrize("bad,match", [
    (dict(guidance=math.nan), "guidance nan must be a finite number"),
    (dict(shift=math.inf), "shift inf must be a finite number"),
    (dict(cutoff=-math.inf), "cutoff -inf must be a finite number"),
    (dict(cutoff=1.0), "0 <= cutoff < 1"),
    (dict(shift=0.0), "0 < shift"),
    (dict(shift=1e6), "0 < shift"),
    (dict(guidance=-0.5), "guidance -0.5 is out of range"),
    (dict(steps=-3), "steps -3 is out of range"),
    (dict(steps=2.0), "steps 2.0 must be a whole number"),
    (dict(height=True), "must be a whole number"),
    (dict(height=-16), "height -16 must be positive"),
    (dict(num_frames=0), "num_frames 0 must be at least 1"),
    (dict(solver="rk4"), "solver 'rk4' is not one of euler, heun, dpmpp_2m"),
    (dict(guidance_mode="apg"), "guidance_mode 'apg'"),
])
def test_bad_settings_are_one_line_errors(bad, match):
    with pytest.raises(FlashI2VError, match=match) as info:
        GenerationSettings(**bad).check(BUILTIN)
    assert "\n" not in str(info.value)


def test_seed_range():
    check_seed(0), check_seed(2**63 - 1), check_seed(None)
    for bad in (-1, 2**63, 1.5, True):
        with pytest.raises(FlashI2VError, match="seed"):
            check_seed(bad)


def test_memory_estimate_grows_with_the_video_and_refuses_what_cannot_fit():
    s = GenerationSettings(num_frames=17, height=128, width=128).resolved({"guidance": 1.25})
    small = estimate_bytes(s, BUILTIN, batch=1, channels=16, ffn_dim=1280, dtype_bytes=4)
    # video: 17 x 128 x 128 x 3 x (4 + 1) bytes; FFN: 2 branches x (5 x 16 x 16) tokens x 1280 x 4 bytes
    assert small == 4 * 16 * 5 * 32 * 32 * 4 + 2 * 1280 * 1280 * 4 + 17 * 128 * 128 * 3 * 5
    big = estimate_bytes(GenerationSettings(100001, 128, 128).resolved(s.given()), BUILTIN, 1, 16, 1280, 4)
    assert big > 2**36  # > 64 GiB
    check_fits(small, 2**30, s, "the test")
    with pytest.raises(FlashI2VError, match="need at least .* GiB .* more than the 1.0 GiB of the test"):
        check_fits(big, 2**30, s, "the test")


def test_far_from_trained_is_a_warning_beyond_twice_the_frames_or_area():
    trained = dict(num_frames=17, height=128, width=128)
    assert far_from_trained(GenerationSettings(33, 136, 136).resolved(), trained) is None
    assert "2.2x the frames" in far_from_trained(GenerationSettings(37, 128, 128).resolved(), trained)
    assert "4.0x the area" in far_from_trained(GenerationSettings(17, 256, 256).resolved(), trained)
    assert far_from_trained(GenerationSettings(37, 128, 128).resolved(), {}) is None  # no trained size: no warning


def test_builtin_136_works_through_the_api_and_100_names_its_factor(builtin):
    factors = builtin.latent_factors
    assert factors == builtin_factors()  # read from the config files without loading the model
    # either edition: pixels per token 8 in space (a 4x codec with 2 x 2 patches, or an 8x one with 1 x 1), 4 in time
    assert factors.spatial * factors.patch[1] == 8 and factors.temporal == 4
    out = builtin(EXAMPLE, "the camera pans left", height=136, width=136, **TINY)
    assert out.latents.shape == (1, builtin.vae.latent_channels, 1, 136 // factors.spatial, 136 // factors.spatial)
    with pytest.raises(FlashI2VError, match="height 100 must be a multiple of 8"):
        builtin(EXAMPLE, "x", height=100, **TINY)


def test_builtin_far_from_its_training_size_warns(builtin):
    with pytest.warns(FlashI2VWarning, match="17 frames of 128x128"):
        builtin(EXAMPLE, "x", height=32, width=32, **{**TINY, "num_frames": 37})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlashI2VWarning)
        builtin(EXAMPLE, "x", height=32, width=32, **TINY)


def test_api_refuses_absurd_sizes_and_seeds_before_allocating(builtin):
    with pytest.raises(FlashI2VError, match="GiB"):
        builtin(EXAMPLE, "x", height=100_000, width=100_000, **TINY)
    with pytest.raises(FlashI2VError, match="seed"):
        builtin(EXAMPLE, "x", height=32, width=32, **{**TINY, "seed": 2**64})


def test_unavailable_device_is_a_flashi2v_error():
    with pytest.raises(FlashI2VError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    assert resolve_device("auto") in ("cpu", "cuda") and resolve_device(torch.device("cpu")) == "cpu"
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(FlashI2VError, match="not available"):
        FlashI2VPipeline.from_pretrained("builtin", device="cuda")


def test_choice_lists_have_one_home():
    from flashi2v.model.attention import ATTENTION_BACKENDS
    from flashi2v.sampling import GUIDANCE, SOLVERS

    assert tuple(SOLVERS) == SOLVER_NAMES and tuple(GUIDANCE) == GUIDANCE_MODES
    assert sorted(ATTENTION_BACKENDS) == sorted(ATTENTION_BACKEND_NAMES)


def test_builtin_defaults_are_the_shipped_ones():
    assert json.loads((BUILTIN_DIR / "pipeline.json").read_text())["defaults"] == DEFAULTS


def test_parser_and_argument_errors_do_not_import_torch(tmp_path):
    """`flashi2v --help`, `generate --help` and flag errors stay instant: nothing imports torch."""
    code = (
        "import sys, contextlib, io\n"
        "import flashi2v.cli as cli\n"
        "cli.build_parser()\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for argv in (['--help'], ['generate', '--help']):\n"
        "        try: cli.main(argv)\n"
        "        except SystemExit: pass\n"
        "with contextlib.redirect_stderr(io.StringIO()):\n"
        "    assert cli.main(['generate', '--image', 'x.png', '--prompt', 'p', '--shift', 'inf']) == 2\n"
        "    assert cli.main(['generate', '--image', 'x.png', '--prompt', 'p', '--height', '100']) == 2\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    src = Path(__file__).parents[1] / "src"
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"


def test_public_names_resolve():
    import flashi2v

    assert all(getattr(flashi2v, name) is not None for name in flashi2v.__all__)
    with pytest.raises(AttributeError):
        flashi2v.no_such_name


def test_broken_pipeline_json_is_one_line(tmp_path):
    from flashi2v.random_components import random_tiny_pipeline

    random_tiny_pipeline(seed=0).save_pretrained(tmp_path)
    (tmp_path / "pipeline.json").write_text('{"defaults": {"steps": 2,')
    with pytest.raises(FlashI2VError, match="pipeline.json' is not valid JSON"):
        FlashI2VPipeline.from_pretrained(tmp_path)
    for text, problem in [('{"defaults": {"steps": "ten"}}', "steps 'ten' must be a whole number"),
                          ('{"defaults": {"steps": 0}}', "steps 0 is out of range"),
                          ('{"defaults": {"stepz": 4}}', "unknown default"),
                          ('{"signed_fourier": "yes"}', "signed_fourier"),
                          ('{"defaults": [1]}', "must be a JSON object")]:
        (tmp_path / "pipeline.json").write_text(text)
        with pytest.raises(FlashI2VError, match=problem):
            FlashI2VPipeline.from_pretrained(tmp_path)
