"""The shipped built-in model: loads with no download, is deterministic, keeps the photo and follows a pan.

Loose versions of the quality bars that ``flashi2v eval motion`` measures in full (docs/builtin.md); the
example photo (scikit-image's astronaut) is one of the held-out photos the model never saw in training.
"""

import numpy as np
import pytest

from flashi2v import FlashI2VPipeline
from flashi2v.builtin import builtin_available
from flashi2v.cli import main
from flashi2v.eval.motion import aligned_psnr, classify_motion, psnr
from flashi2v.video import image_to_tensor, read_video_frames, to_uint8

pytestmark = pytest.mark.skipif(not builtin_available(), reason="this install has no built-in model")


@pytest.fixture(scope="module")
def pipe():
    return FlashI2VPipeline.from_pretrained("builtin")


def test_builtin_is_deterministic_keeps_the_photo_and_pans(pipe, example_image):
    a = pipe(example_image, "the camera pans left", seed=0, progress=False).frames.numpy()
    b = pipe(example_image, "the camera pans left", seed=0, progress=False).frames.numpy()
    assert a.shape == (17, 128, 128, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    photo = to_uint8(image_to_tensor(example_image, 128, 128).permute(1, 2, 0)).numpy()
    assert psnr(a[0], photo) > 26.0  # the shipped model: 28.0; the full evaluation's bar is 30 dB on average over held-out photos
    assert classify_motion(a)[0] == "pan_left"  # content moves right
    # later frames keep the photo: frame 0 moved by the pan matches them (the shipped model: 24.7 dB, the first
    # edition's block codec 22.1; a frame-0 copy would score 100, later frames of noise 7.7). 24 dB is the bar for
    # every video of the full evaluation
    assert aligned_psnr(a) > 24.0


def test_builtin_detail_knob_lower_cutoff_keeps_more_of_the_photo(pipe, example_image):
    """The cutoff rho is the user's detail knob: at a lower cutoff the signed Fourier features carry more of the
    photo, and frame 0 comes out closer to it (docs/builtin.md: +2.2 dB on the held-out photos; here 27.9 against 25.1)."""
    photo = to_uint8(image_to_tensor(example_image, 128, 128).permute(1, 2, 0)).numpy()
    low, high = (psnr(pipe(example_image, "the camera pans left", seed=0, cutoff=rho, progress=False).frames.numpy()[0], photo)
                 for rho in (0.05, 0.6))
    assert low > high + 1.0


def test_cli_uses_the_builtin_model_by_default(tmp_path, capsys, example_image):
    out = tmp_path / "demo.mp4"
    assert main(["generate", "--image", example_image, "--prompt", "the camera tilts up", "--out", str(out), "--seed", "1",
                 "--strip"]) == 0
    assert "built-in model" in capsys.readouterr().err
    frames, fps = read_video_frames(out)
    assert frames.shape[:3] == (17, 128, 128) and fps == 16 and out.with_suffix(".png").is_file()
