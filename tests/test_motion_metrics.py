"""Motion and picture metrics on real photos: known shifts, rendered camera motions, colour drift, PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flashi2v.captions import motion_speed
from flashi2v.data.synthetic.render import render_camera_clip, render_window
from flashi2v.photos import bundled_photo_files, load_photo
from flashi2v.errors import FlashI2VError
from flashi2v.eval import (
    LABELS,
    classify_motion,
    colour_drift,
    end_to_end_motion,
    global_rotation,
    global_scale,
    global_translation,
    motion_magnitude,
    psnr,
    warp_by_motion,
)

SIZE, FRAMES = 96, 7


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    files = bundled_photo_files()
    if not {"chelsea", "astronaut", "coffee"} <= set(files):
        pytest.skip("needs the photos of PyPI scikit-image")
    return {name: load_photo(files[name]) for name in ("chelsea", "astronaut", "coffee")}


def clip(photo: np.ndarray, motion: str, pace: str = "normal", seed: int = 0) -> np.ndarray:
    return render_camera_clip(
        photo, motion, motion_speed(motion, pace), FRAMES, SIZE, SIZE, np.random.default_rng(seed)
    )


@pytest.mark.parametrize("dy, dx", [(0, 3), (5, -2), (-7, 11), (0, 0), (16, -20)])
def test_translation_recovers_integer_shifts_of_crops(photos, dy, dx):
    photo = photos["astronaut"]
    a = photo[100:228, 150:278]
    b = photo[100 - dy : 228 - dy, 150 - dx : 278 - dx]  # content moved by (dy, dx)
    assert np.allclose(global_translation(a, b), (dy, dx), atol=0.5)


def test_translation_of_rolled_frames_and_torch_input(photos):
    a = photos["coffee"][50:178, 200:328]
    b = np.roll(a, (-4, 6), axis=(0, 1))
    assert np.allclose(global_translation(torch.from_numpy(a), torch.from_numpy(b)), (-4, 6), atol=0.5)


@pytest.mark.parametrize("shift", [0.25, 0.5, 1.5])
def test_translation_is_sub_pixel(photos, shift):
    photo = photos["chelsea"]
    a = render_window(photo, (220.0, 150.0, 128.0, 0.0), 128, 128)
    b = render_window(photo, (220.0 - shift, 150.0, 128.0, 0.0), 128, 128)  # window left: content right
    dy, dx = global_translation(a, b)
    assert abs(dx - shift) < 0.15 and abs(dy) < 0.15


def test_scale_and_rotation_of_rendered_windows(photos):
    photo = photos["astronaut"]
    a = render_window(photo, (256.0, 256.0, 300.0, 0.0), SIZE, SIZE)
    zoomed = render_window(photo, (256.0, 256.0, 300.0 / 1.03, 0.0), SIZE, SIZE)  # content grows 3%
    turned = render_window(photo, (256.0, 256.0, 300.0, math.radians(1.5)), SIZE, SIZE)
    assert global_scale(a, zoomed) == pytest.approx(1.03, abs=0.004)
    assert global_scale(zoomed, a) == pytest.approx(1 / 1.03, abs=0.004)
    assert global_scale(a, a) == pytest.approx(1.0, abs=0.002)
    assert global_rotation(a, turned) == pytest.approx(1.5, abs=0.15)  # camera rolls clockwise: content turns ccw


@pytest.mark.parametrize("motion", [m for m in LABELS])
def test_classify_motion_labels_rendered_clips(photos, motion):
    for name in ("chelsea", "coffee"):
        label, magnitude = classify_motion(clip(photos[name], motion))
        assert label == motion, name
        if motion.startswith(("pan", "tilt")):
            assert magnitude == pytest.approx(motion_speed(motion, "normal") * SIZE, rel=0.2)
        elif motion.startswith("zoom"):
            assert magnitude == pytest.approx(motion_speed(motion, "normal"), rel=0.2)
        else:
            assert magnitude < 0.05


@pytest.mark.parametrize("motion", ["roll_cw", "roll_ccw"])
def test_classify_motion_labels_rolls_when_asked(photos, motion):
    frames = clip(photos["chelsea"], motion, "fast")
    label, magnitude = classify_motion(frames, with_roll=True)
    assert label == motion and magnitude == pytest.approx(motion_speed(motion, "fast"), abs=0.2)


def test_slow_pan_is_not_static(photos):
    assert classify_motion(clip(photos["astronaut"], "pan_right", "slow"))[0] == "pan_right"


def test_motion_magnitude_orders_static_below_pans(photos):
    still = motion_magnitude(clip(photos["coffee"], "static"))
    pan = motion_magnitude(clip(photos["coffee"], "pan_left"))
    zoom = motion_magnitude(clip(photos["coffee"], "zoom_in"))
    assert still < 0.05 and pan == pytest.approx(motion_speed("pan_left", "normal") * SIZE, rel=0.2)
    assert zoom > 0.5
    assert motion_magnitude(clip(photos["coffee"], "pan_left")[:1]) == 0.0


def test_colour_drift_of_a_brightened_last_frame(photos):
    frames = np.repeat(photos["chelsea"][None, :128, :128] // 2, 5, axis=0)  # at most 127: no clipping below
    assert colour_drift(frames) == pytest.approx(0.0, abs=0.01)
    frames[-1, ..., 0] += 51  # red channel up by 20 % of the range
    assert colour_drift(frames, aligned=False) == pytest.approx(20.0, abs=1e-9)
    assert colour_drift(frames) == pytest.approx(20.0, abs=0.2)  # the alignment finds (almost) no motion
    frames[-1, ..., 2] -= frames[-1, ..., 2] // 2
    expected = np.abs(frames[-1, ..., 2].mean() - frames[0, ..., 2].mean()) / 255 * 100
    assert colour_drift(frames, aligned=False) == pytest.approx(max(20.0, expected))


def test_colour_drift_compares_the_content_both_frames_show(photos):
    """A tilt that reveals other content changes the frame's mean colour, not the scene's colour."""
    frames = clip(photos["astronaut"], "tilt_down")
    assert colour_drift(frames, aligned=False) > 2.0  # the whole-frame mean moves with the content
    assert colour_drift(frames) < 1.0
    brighter = frames.copy()
    brighter[-1] = np.clip(brighter[-1].astype(int) + 26, 0, 255).astype(np.uint8)  # +10 % of the range
    assert 8.0 < colour_drift(brighter) < 11.0


def codec_round_trip(frames: np.ndarray) -> np.ndarray:
    """The clip as the built-in model's codec reproduces it: blurred in space and time (the first edition's 4 x 4 x 4
    blocks, or the learned autoencoder's reconstruction)."""
    from flashi2v.builtin import builtin_path
    from flashi2v.data.synthetic.camera_clips import clip_video
    from flashi2v.encoders import load_vae
    from flashi2v.video import to_uint8

    codec = load_vae(builtin_path() / "vae")
    with torch.no_grad():
        decoded = codec.decode(codec.encode(clip_video(frames)[None]))[0]
    return to_uint8(decoded).permute(1, 2, 3, 0).numpy()


@pytest.mark.parametrize("motion, truth", [
    ("pan_left", (0.0, 45.06, 0.0, 0.0)),      # 2.816 px per frame x 16: content moves right
    ("tilt_down", (-45.06, 0.0, 0.0, 0.0)),
    ("zoom_in", (0.0, 0.0, 0.56, 0.0)),       # log scale 0.035 per frame x 16
    ("roll_cw", (0.0, 0.0, 0.0, 32.0)),       # 2 degrees per frame x 16
])
def test_end_to_end_motion_of_codec_blurred_clips(photos, motion, truth):
    """The colour-drift alignment must find the true camera path even on the blurred frames a model makes."""
    frames = render_camera_clip(photos["coffee"], motion, motion_speed(motion, "fast"), 17, 128, 128,
                                np.random.default_rng(3))
    found = end_to_end_motion(codec_round_trip(frames))
    assert np.allclose(found[:2], truth[:2], atol=1.0)
    assert found[2] == pytest.approx(truth[2], abs=0.01)
    assert found[3] == pytest.approx(truth[3], abs=1.0)


def test_colour_drift_of_faithful_clips_after_the_codec_is_small(photos):
    """Charging a faithful clip with drift would make the metric measure its own alignment error."""
    for motion in ("pan_right", "tilt_up", "zoom_out", "zoom_in"):
        frames = render_camera_clip(photos["astronaut"], motion, motion_speed(motion, "fast"), 17, 128, 128,
                                    np.random.default_rng(1))
        assert colour_drift(codec_round_trip(frames)) < 0.4, motion  # the old pair-sum alignment: 0.64 on pan_right


def test_warp_by_motion_moves_content(photos):
    image = photos["chelsea"][:64, :64].astype(np.float64)
    moved, valid = warp_by_motion(image, (3, -5, 0.0, 0.0))  # content 3 px down, 5 px left
    assert np.allclose(moved[3:, :-5][valid[3:, :-5]], image[:-3, 5:][valid[3:, :-5]], atol=1e-3)
    assert not valid[:3].any() and not valid[:, -5:].any() and valid[3:, :-5].all()
    same, everywhere = warp_by_motion(image[..., 0], (0, 0, 0.0, 0.0))
    assert np.allclose(same, image[..., 0], atol=1e-3) and everywhere.all()


def test_psnr(photos):
    image = photos["astronaut"]
    assert psnr(image, image) == math.inf
    noise = np.random.default_rng(0).normal(0, 5, image.shape)
    noisy = np.clip(image + noise, 0, 255).round().astype(np.uint8)
    assert 34.0 < psnr(image, noisy) < 35.0  # 20 log10(255 / 5) = 34.2 dB, a little more where 0/255 clip
    assert psnr(torch.from_numpy(image), torch.from_numpy(noisy)) == psnr(image, noisy)


def test_metrics_reject_wrong_inputs(photos):
    frames = clip(photos["chelsea"], "static")
    with pytest.raises(FlashI2VError, match="uint8"):
        classify_motion(frames.astype(np.float32))
    with pytest.raises(FlashI2VError, match="T x H x W x 3"):
        colour_drift(frames[0])
    with pytest.raises(FlashI2VError, match="shape"):
        psnr(frames[0], frames[0, :10])
    with pytest.raises(FlashI2VError, match="shape"):
        global_translation(frames[0], frames[0, :10])


def test_quality_report_bars_and_table():
    from flashi2v.eval.quality import QualityReport

    summary = {"psnr_frame0": 30.7, "direction_accuracy": 18 / 18, "correct": 18, "directional": 18,
               "colour_drift_max": 5.3, "still_motion": 0.08, "pan_motion": 1.09, "rho_low": 0.05, "rho_high": 0.6,
               "psnr_rho_low": 29.07, "psnr_rho_high": 29.09}
    report = QualityReport(summary=summary)
    assert report.bars() == {"psnr_frame0": True, "direction_accuracy": True, "colour_drift": False,
                             "still_vs_pan": True, "cutoff_knob": False}
    table = report.table()
    assert "| 100 % (18/18) | >= 95 %: met |" in table and "| 5.30 | <= 3: not met |" in table
    report.summary = {**summary, "psnr_frame0": 29.7, "direction_accuracy": 17 / 18}  # 94 %: under the bar
    assert not report.bars()["psnr_frame0"] and not report.bars()["direction_accuracy"]
    for mean, lowest, met in ((29.0, 25.0, True), (29.0, 23.5, False), (27.5, 25.0, False)):
        report.summary = {**summary, "aligned_psnr_mean": mean, "aligned_psnr_min": lowest}
        assert report.bars()["aligned_psnr"] is met
    report.summary = {**summary, "still_motion": 0.6}  # more than half the pans' motion: not "clearly lower"
    assert not report.bars()["still_vs_pan"]
    for low, high, works in ((29.09, 29.07, False), (29.30, 29.10, True)):  # a noise-sized gain is not a working knob
        report.summary = {**summary, "psnr_rho_low": low, "psnr_rho_high": high}
        assert report.bars()["cutoff_knob"] is works


def _row(motion, cutoff, knob, psnr_db, drift=1.0, correct=True):
    return {"photo": "a.png", "motion": motion, "cutoff": cutoff, "knob": knob, "predicted": motion,
            "correct": correct, "psnr_frame0": psnr_db, "colour_drift": drift, "motion_magnitude": 1.0}


def test_summary_keeps_knob_videos_apart_when_the_default_cutoff_is_a_knob_value():
    from flashi2v.eval.quality import DIRECTIONAL, summarise

    main = [_row(m, 0.6, False, 30.0, drift=2.0 if m == "zoom_out" else 1.0) for m in DIRECTIONAL]
    main.append({**_row("static", 0.6, False, 30.0), "motion_magnitude": 0.1})
    rows = main + [_row("pan_left", 0.05, True, 31.0), _row("pan_left", 0.6, True, 29.0)]  # default cutoff = rho_high
    s = summarise(rows, ["a.png"], 0.05, 0.6)
    assert s["directional"] == len(DIRECTIONAL) and s["colour_drift_max"] == 2.0
    assert s["psnr_frame0"] == 30.0  # the knob videos do not count as the model's own videos
    assert (s["psnr_rho_low"], s["psnr_rho_high"]) == (31.0, 29.0)  # nor do the default videos count for the knob
    assert math.isclose(s["still_motion"], 0.1)


def test_seeds_pool_every_camera_motion_video_for_the_drift_bar():
    """Two seeds: one meets the bar, the other has one video over it and a wrong motion; the still and
    knob videos (drifting 9 %) must not count."""
    from flashi2v.eval.quality import DIRECTIONAL, QualityReport, seeds_table, summarise, summarise_seeds

    reports = {}
    for seed, bad in ((3, None), (7, "tilt_up")):
        rows = [_row(m, 0.1, False, 30.0 + seed, drift=3.5 if m == bad else 1.0, correct=m != bad) for m in DIRECTIONAL]
        rows += [{**_row("static", 0.1, False, 30.0 + seed, drift=9.0), "motion_magnitude": 0.1},
                 _row("pan_left", 0.05, True, 31.0, drift=9.0), _row("pan_left", 0.6, True, 30.9, drift=9.0)]
        reports[seed] = QualityReport(rows, summarise(rows, ["a.png"], 0.05, 0.6))
    pooled = summarise_seeds(reports)
    n = len(DIRECTIONAL)
    assert pooled["videos"] == 2 * n and pooled["within_bar"] == 2 * n - 1
    assert pooled["colour_drift_max"] == 3.5 and math.isclose(pooled["colour_drift_mean"], (2 * n - 1 + 3.5) / (2 * n))
    assert pooled["seeds_bar_met"] == [3]
    assert math.isclose(pooled["direction_accuracy"], (2 * n - 1) / (2 * n))
    assert pooled["per_seed"][7]["within_bar"] == n - 1 and math.isclose(pooled["psnr_frame0"], 35.0)
    assert math.isclose(pooled["knob_gain_db"], 0.1)
    assert math.isclose(pooled["still_motion"], 0.1) and math.isclose(pooled["pan_motion"], 1.0)
    table = seeds_table(pooled)
    assert "| 7 | 3.50 /" in table and f"{2 * n - 1}/{2 * n} (bar met at seeds: 3)" in table


def test_aligned_psnr_keeps_a_clean_pan_and_catches_blocky_later_frames():
    """A pan over a still picture scores far higher than the same pan whose later frames are 4 x 4 blocks."""
    from flashi2v.eval.motion import aligned_psnr

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:160]
    picture = (127 + 60 * np.sin(xx / 7.0) * np.cos(yy / 5.0) + rng.normal(0, 8, (96, 160)))[..., None].repeat(3, 2)
    picture = np.clip(picture, 0, 255).astype(np.uint8)
    clean = np.stack([picture[:, 20 - 2 * t:84 - 2 * t + 20][:, :64] for t in range(9)])  # content moves right 2 px/frame
    blocky = clean.copy()
    small = clean[1:, ::4, ::4].astype(np.float64)
    blocky[1:] = small.repeat(4, axis=1).repeat(4, axis=2).astype(np.uint8)
    assert aligned_psnr(clean) > 35
    assert aligned_psnr(blocky) < aligned_psnr(clean) - 10


def test_aligned_psnr_is_pooled_over_the_translation_videos_of_every_seed():
    """Mean and lowest over the pan / tilt / still videos; the knob videos do not count."""
    from flashi2v.eval.quality import DIRECTIONAL, QualityReport, seeds_table, summarise, summarise_seeds

    reports = {}
    for seed, low in ((0, 22.0), (1, 26.0)):
        rows = [{**_row(m, 0.1, False, 30.0), **({"aligned_psnr": low if m == "pan_left" else 28.0}
                                                  if m in ("pan_left", "pan_right", "tilt_up", "tilt_down") else {})}
                for m in DIRECTIONAL]
        rows += [{**_row("static", 0.1, False, 30.0), "motion_magnitude": 0.1, "aligned_psnr": 30.0},
                 {**_row("pan_left", 0.05, True, 31.0), "aligned_psnr": 5.0}, _row("pan_left", 0.6, True, 30.9)]
        reports[seed] = QualityReport(rows, summarise(rows, ["a.png"], 0.05, 0.6))
    assert math.isclose(reports[0].summary["aligned_psnr_mean"], (22 + 3 * 28 + 30) / 5)
    assert reports[0].summary["aligned_psnr_min"] == 22.0
    pooled = summarise_seeds(reports)
    assert math.isclose(pooled["aligned_psnr_mean"], ((22 + 26) / 2 + 3 * 28 + 30) / 5) and pooled["aligned_psnr_min"] == 22
    assert "lowest video 22.00 dB" in seeds_table(pooled) and "| all |" in seeds_table(pooled)
