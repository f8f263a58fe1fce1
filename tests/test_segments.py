"""Longer videos by chaining segments (flashi2v.segments) on the fully random tiny pipeline."""

import numpy as np
import pytest
import torch
from PIL import Image

from flashi2v import FlashI2VError
from flashi2v.cli import main
from flashi2v.segments import (aligned_colour_stats, colour_stats, frame_sharpness, join_segments, match_colour,
                               match_sharpness)
from flashi2v.video import read_video_frames, save_png_strip

SMALL = dict(num_frames=5, height=32, width=32, steps=2)


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    return tiny_pipeline


def test_segments_join_without_repeating_the_shared_frame(pipe, example_image):
    frames = SMALL["num_frames"]
    out = pipe.generate_segments(example_image, "a dog runs", 3, seed=3, progress=False, **SMALL)
    assert out.frames.shape == (3 * (frames - 1) + 1, 32, 32, 3)
    for k in range(2):
        last = out.segments[k].frames[-1]
        # segment k+1 is conditioned on segment k's last frame, and that frame opens segment k+1 in the video
        assert torch.equal(out.conditions[k + 1], last)
        start = (k + 1) * (frames - 1)
        assert torch.equal(out.frames[start], last)
        assert torch.equal(out.frames[start + 1:start + frames], out.segments[k + 1].frames[1:])
    # a different condition gives a different segment: the chain really feeds the last frame forward
    assert not torch.equal(out.segments[1].frames, out.segments[0].frames)
    # the stage times are the segments' own, summed, plus the colour grading between them
    assert list(out.timings) == ["encode", "denoise", "decode", "grade"] and out.timings["grade"] > 0
    for stage in ("encode", "denoise", "decode"):
        assert out.timings[stage] == pytest.approx(sum(s.timings[stage] for s in out.segments))


def test_first_segment_is_the_single_generation_with_that_seed(pipe, example_image):
    single = pipe(example_image, "a dog runs", seed=5, progress=False, **SMALL)
    chained = pipe.generate_segments(example_image, "a dog runs", 2, seed=5, progress=False, colour_match=0.0, **SMALL)
    assert torch.equal(chained.segments[0].frames, single.frames)
    # the default colour matching grades the segment: frame 0 as generated, the last frame moved
    graded = pipe.generate_segments(example_image, "a dog runs", 2, seed=5, progress=False, **SMALL)
    assert torch.equal(graded.segments[0].frames[0], single.frames[0])
    assert not torch.equal(graded.segments[0].frames[-1], single.frames[-1])
    again = pipe.generate_segments(example_image, "a dog runs", 2, seed=5, progress=False, **SMALL)
    assert torch.equal(again.frames, graded.frames)


def test_per_segment_prompts_and_cutoff_decay_reach_each_segment(pipe, example_image, monkeypatch):
    calls = []
    original = type(pipe).__call__

    def spy(self, image, prompt, **kwargs):
        calls.append((prompt, kwargs["cutoff"]))
        return original(self, image, prompt, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", spy)
    pipe.generate_segments(example_image, ["one", "two", "three"], 3, seed=0, progress=False, cutoff=0.4,
                           cutoff_decay=0.5, **SMALL)
    assert calls == [("one", 0.4), ("two", 0.2), ("three", 0.1)]


def test_colour_match_moves_the_last_frame_to_the_reference_and_keeps_frame_0():
    g = torch.Generator().manual_seed(0)
    clip = (torch.rand(5, 16, 16, 3, generator=g) * 100 + 100).round().to(torch.uint8)  # bright, low contrast
    reference = (torch.tensor([60.0, 80.0, 100.0], dtype=torch.float64), torch.tensor([30.0, 20.0, 40.0], dtype=torch.float64))
    graded = match_colour(clip, reference, 1.0)
    assert torch.equal(graded[0], clip[0])
    mean, std = colour_stats(graded[-1])
    assert torch.allclose(mean, reference[0], atol=1.0) and torch.allclose(std, reference[1], atol=1.0)
    half = colour_stats(match_colour(clip, reference, 0.5)[-1])[0]
    assert torch.allclose(half, (colour_stats(clip[-1])[0] + reference[0]) / 2, atol=1.0)
    assert torch.equal(match_colour(clip, reference, 0.0), clip)


def test_aligned_colour_match_undoes_a_cast_on_panned_content():
    """A pan with a growing red cast: matching the content shared with the start frame removes the cast (the
    pan itself must not read as a colour change)."""
    g = torch.Generator().manual_seed(2)
    scene = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 64, 96, generator=g), 5, 1, 2)[0].permute(1, 2, 0) * 150
    scene = scene + torch.linspace(0, 100, 96).view(1, -1, 1)  # brighter to the right: the pan brightens the frame
    frames = torch.stack([scene[8:56, 2 * t:2 * t + 64] for t in range(5)])  # the camera pans right
    cast = torch.tensor([12.0, 0.0, -6.0]) * torch.linspace(0, 1, 5).view(-1, 1, 1, 1)
    clip = (frames + cast).round().clamp(0, 255).to(torch.uint8)
    start = frames[0].round().to(torch.uint8)
    target, source = aligned_colour_stats(clip, start)
    assert abs(float(source[0][0] - target[0][0]) - 12.0) < 1.5  # the cast, measured on the shared content
    assert abs(float(colour_stats(clip[-1])[0][0] - colour_stats(start)[0][0]) - 12.0) > 4  # not on whole frames
    graded = match_colour(clip, target, 1.0, source)
    shift = (graded[-1].double() - frames[-1].double()).reshape(-1, 3).mean(0)
    assert shift.abs().max() < 1.0
    assert torch.equal(graded[0], clip[0])


def test_sharpen_restores_the_reference_sharpness_and_never_blurs():
    g = torch.Generator().manual_seed(1)
    sharp = (torch.rand(1, 32, 32, 3, generator=g) * 255).round().to(torch.uint8)
    blurred = torch.nn.functional.avg_pool2d(sharp.permute(0, 3, 1, 2).float(), 3, 1, 1).permute(0, 2, 3, 1)
    clip = torch.cat([sharp, blurred.round().to(torch.uint8).expand(3, -1, -1, -1)])
    target = frame_sharpness(clip[0]) * 0.6
    before = frame_sharpness(clip[-1])
    assert before < target
    graded = match_sharpness(clip, target, 1.0)
    assert torch.equal(graded[0], clip[0])
    after = frame_sharpness(graded[-1])
    assert abs(after - target) < abs(before - target) / 3
    assert before < frame_sharpness(graded[1]) < after  # ramped in
    assert torch.equal(match_sharpness(clip, before / 2, 1.0), clip)  # sharper than asked: left alone


def test_join_segments_counts():
    clips = [torch.full((5, 2, 2, 3), k, dtype=torch.uint8) for k in range(4)]
    joined = join_segments(clips)
    assert joined.shape[0] == 4 * 4 + 1
    assert joined[:, 0, 0, 0].tolist() == [0] * 5 + [1] * 4 + [2] * 4 + [3] * 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(segments=0), "segments 0 is out of range"),
    (dict(segments=2, prompt=["a"]), "1 segment prompts for 2 segments"),
    (dict(segments=2, colour_match=1.5), "colour_match 1.5 is out of range"),
    (dict(segments=2, cutoff_decay=0.0), "cutoff_decay 0.0 is out of range"),
    (dict(segments=2, sharpen=-0.1), "sharpen -0.1 is out of range"),
    (dict(segments=2, colour_reference="mean"), "colour_reference 'mean' is not one of aligned, image"),
])
def test_bad_segment_options_are_one_line_errors(pipe, example_image, kwargs, match):
    kwargs = {"prompt": "a dog", **kwargs}
    with pytest.raises(FlashI2VError, match=match):
        pipe.generate_segments(example_image, progress=False, **SMALL, **kwargs)


def test_cli_segments_with_segment_prompts(pipe, tmp_path, example_image):
    folder = tmp_path / "model"
    pipe.save_pretrained(folder)
    prompts = tmp_path / "segments.txt"
    prompts.write_text("the camera pans left\nthe camera pans right\n")
    out = tmp_path / "long.mp4"
    assert 0 == main(["generate", "--model", str(folder), "--image", example_image, "--segment-prompts", str(prompts),
                      "--out", str(out), "--seed", "1", "--num-frames", "5", "--height", "32", "--width", "32",
                      "--steps", "2", "--device", "cpu", "--strip"])
    frames, _ = read_video_frames(out)
    assert frames.shape[0] == 2 * 4 + 1
    expected = pipe.generate_segments(example_image, ["the camera pans left", "the camera pans right"], 2, seed=1,
                                      progress=False, **SMALL)
    # the strip is lossless (the mp4 is not): the library's video, frame for frame
    reference = save_png_strip(expected.frames, tmp_path / "reference.png")
    assert np.array_equal(np.asarray(Image.open(out.with_suffix(".png"))), np.asarray(Image.open(reference)))


def test_cli_segment_prompts_must_match_segments(pipe, tmp_path, example_image, capsys):
    prompts = tmp_path / "segments.txt"
    prompts.write_text("one\ntwo\nthree\n")
    code = main(["generate", "--image", example_image, "--segment-prompts", str(prompts), "--segments", "2",
                 "--out", str(tmp_path / "x.mp4")])
    assert code == 2
    assert "3 segment prompts for 2 segments" in capsys.readouterr().err
