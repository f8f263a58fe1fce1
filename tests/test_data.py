"""Data side of training: clip index, probing/filtering, decoding at the training fps, dataset skips, sampler."""

from __future__ import annotations

import gc
import json
import logging
import shutil
from itertools import islice

import pytest
import torch
from torch.utils.data import DataLoader

from flashi2v.data import (
    ClipError,
    ClipRecord,
    DataConfig,
    FilterConfig,
    ResumableSampler,
    SkipLog,
    VideoClipDataset,
    collate_clips,
    decode_clip,
    filter_clips,
    frames_needed,
    load_clip_index,
    probe_video,
    save_clip_index,
    source_indices,
)
from flashi2v.errors import FlashI2VError
from helpers_media import (
    make_corrupt_video,
    make_counter_video,
    make_short_video,
    read_counter,
    sample_video,
    sample_video_paths,
)

SMALL = dict(num_frames=9, fps=16, height=64, width=64)


def counters(video: torch.Tensor) -> list[int]:
    """Source frame numbers encoded in a decoded 3 x F x H x W clip in [-1, 1]."""
    pixels = (video + 1) * 127.5
    return [read_counter(pixels[:, f].numpy()) for f in range(video.shape[1])]


# ---- index ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_index_round_trip(tmp_path, suffix):
    (tmp_path / "clips").mkdir()
    records = [
        ClipRecord(str(tmp_path / "clips" / "a.mp4"), "a cat", 480, 832, 25.0, 120, (10, 100), {"aesthetic": 5.5}),
        ClipRecord(str(tmp_path / "clips" / "b.mp4"), "a dog"),
        ClipRecord("/elsewhere/c.mp4", "a bird", fps=30000 / 1001),
    ]
    index = tmp_path / f"index{suffix}"
    save_clip_index(records, index)
    loaded = load_clip_index(index)
    assert loaded == records
    assert loaded[0].extra == {"aesthetic": 5.5}
    raw = (
        json.loads(index.read_text())
        if suffix == ".json"
        else [json.loads(line) for line in index.read_text().splitlines()]
    )
    assert raw[0]["path"] == "clips/a.mp4" and raw[0]["resolution"] == {"height": 480, "width": 832}
    assert raw[0]["cut"] == [10, 100] and "resolution" not in raw[1]
    assert raw[2]["path"] == "/elsewhere/c.mp4"


def test_index_relative_paths_and_caption_lists(tmp_path):
    (tmp_path / "meta").mkdir()
    rows = [{"path": "../videos/x.mp4", "cap": ["first caption", "second"], "num_frames": 60, "fps": 24}]
    (tmp_path / "meta" / "index.json").write_text(json.dumps(rows))
    (record,) = load_clip_index(tmp_path / "meta" / "index.json")
    assert record.path == str(tmp_path / "videos" / "x.mp4")
    assert record.cap == "first caption" and record.num_frames == 60 and record.fps == 24.0


def test_index_from_folder(tmp_path):
    real = sample_video("carphone_distorted.mp4")
    (tmp_path / "sub").mkdir()
    for name in ("b.mp4", "a.mp4", "sub/c.mp4"):
        shutil.copy(real, tmp_path / name)
        (tmp_path / name).with_suffix(".txt").write_text(f"caption of {name}\n")
    records = load_clip_index(tmp_path)
    assert [r.path for r in records] == [str(tmp_path / n) for n in ("a.mp4", "b.mp4", "sub/c.mp4")]
    assert records[0].cap == "caption of a.mp4" and records[0].height is None
    save_clip_index(records, tmp_path / "index.jsonl")
    assert load_clip_index(tmp_path / "index.jsonl") == records
    (tmp_path / "a.txt").unlink()
    with pytest.raises(FlashI2VError, match="a.txt"):
        load_clip_index(tmp_path)


def test_index_errors_are_one_line_user_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"path": "x.mp4"}]))
    with pytest.raises(FlashI2VError, match="cap"):
        load_clip_index(bad)
    bad.write_text(json.dumps({"path": "x.mp4"}))
    with pytest.raises(FlashI2VError, match="list"):
        load_clip_index(bad)
    with pytest.raises(FlashI2VError, match="does not exist"):
        load_clip_index(tmp_path / "nope.jsonl")
    with pytest.raises(FlashI2VError, match="cut"):
        bad.write_text(json.dumps([{"path": "x.mp4", "cap": "", "cut": [5, 5]}]))
        load_clip_index(bad)


# ---- probing and filtering -------------------------------------------------------------------------------


def test_probe_real_videos():
    info = {p.name: probe_video(p) for p in sample_video_paths()}
    assert (info["bikes.mp4"].height, info["bikes.mp4"].width, info["bikes.mp4"].num_frames) == (272, 640, 250)
    assert info["bikes.mp4"].fps == 25
    assert info["carphone_pristine.mp4"].fps == pytest.approx(30000 / 1001)
    assert info["bigbuckbunny.mp4"].num_frames == 132


def test_probe_estimates_frames_when_stream_has_no_count(tmp_path):
    path = make_counter_video(tmp_path, frames=30, suffix=".mkv")  # Matroska stores no frame count
    assert probe_video(path).num_frames == 30


def test_filter_counts_per_reason(tmp_path):
    videos = {p.name: p for p in sample_video_paths()}
    records = [ClipRecord(str(p), p.stem) for p in videos.values()]
    records += [
        ClipRecord(str(make_corrupt_video(tmp_path)), "corrupt"),
        ClipRecord(str(make_short_video(tmp_path, frames=5)), "short"),
        ClipRecord(str(tmp_path / "missing.mp4"), "missing"),
        ClipRecord(str(videos["bigbuckbunny.mp4"]), "late cut", cut=(100, 132)),  # 32 < 76 frames needed
        ClipRecord(str(videos["bigbuckbunny.mp4"]), "early cut", cut=(20, 96)),  # exactly 76
    ]
    config = FilterConfig(min_pixels=200 * 200, min_aspect=0.5, max_aspect=2.0, num_frames=49, fps=16)
    kept, counts = filter_clips(records, config, workers=2, progress=False)
    assert counts == {"missing": 1, "unreadable": 1, "too_small": 2, "aspect": 1, "too_short": 2}
    assert [r.cap for r in kept] == ["bigbuckbunny", "early cut"]
    assert (kept[0].height, kept[0].width, kept[0].fps, kept[0].num_frames) == (720, 1280, 25.0, 132)
    assert frames_needed(49, 25, 16) == 76


def test_filter_trusts_index_metadata(tmp_path):
    path = make_short_video(tmp_path, frames=5)
    claims_long = ClipRecord(str(path), "x", 240, 320, 25.0, 500)
    kept, counts = filter_clips([claims_long], FilterConfig(num_frames=9, fps=16), progress=False)
    assert kept == [claims_long] and sum(counts.values()) == 0


# ---- decoding ---------------------------------------------------------------------------------------------


def test_decode_clip_shape_and_range():
    video = decode_clip(ClipRecord(str(sample_video("bikes.mp4")), "bikes"), **SMALL)
    assert video.shape == (3, 9, 64, 64) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1 and video.std() > 0.1


def test_decode_samples_at_training_fps(tmp_path):
    record = ClipRecord(str(make_counter_video(tmp_path, frames=40, fps=25)), "counter")
    got = counters(decode_clip(record, **SMALL))
    assert got == source_indices(9, 25, 16) == [0, 2, 3, 5, 6, 8, 9, 11, 13]
    assert got[-1] - got[0] + 1 == pytest.approx(9 * 25 / 16, abs=1)  # ~14 source frames for 9 at 16 fps


def test_decode_from_cut_start_and_explicit_start(tmp_path):
    path = make_counter_video(tmp_path, frames=45, fps=25, gop=8)  # key frames every 8: the start seeks
    got = counters(decode_clip(ClipRecord(str(path), "c", cut=(23, 45)), **SMALL))
    assert got == source_indices(9, 25, 16, start=23)
    assert counters(decode_clip(ClipRecord(str(path), "c"), **SMALL, start=17)) == source_indices(9, 25, 16, start=17)


def test_decode_ntsc_source(tmp_path):
    video = decode_clip(
        ClipRecord(str(sample_video("carphone_pristine.mp4")), "phone"), num_frames=49, fps=16, height=32, width=32
    )
    assert video.shape == (3, 49, 32, 32)  # needs 91 of its 120 frames at 29.97 fps


@pytest.mark.parametrize("suffix", [".mkv", ".h264"])  # Matroska seeks by cues; raw H.264 has no timestamps
def test_decode_start_in_other_containers(tmp_path, suffix):
    path = make_counter_video(tmp_path, frames=45, fps=25, gop=8, suffix=suffix)
    assert counters(decode_clip(ClipRecord(str(path), "c"), **SMALL)) == source_indices(9, 25, 16)
    assert counters(decode_clip(ClipRecord(str(path), "c"), **SMALL, start=23)) == source_indices(9, 25, 16, start=23)


def test_decode_stops_at_the_last_needed_frame(tmp_path):
    path = make_corrupt_video(tmp_path, kind="tail")  # reports 60 frames, about the first half decodes
    assert probe_video(path).num_frames == 60
    assert decode_clip(ClipRecord(str(path), "tail"), **SMALL).shape == (3, 9, 64, 64)  # never reads the cut part
    with pytest.raises(ClipError) as info:
        decode_clip(ClipRecord(str(path), "tail"), num_frames=49, fps=25, height=64, width=64)
    assert info.value.reason in ("corrupt", "too_short")  # a packet cut mid-way, or a cut between packets


@pytest.mark.parametrize("cut", [None, (20, 33)])
def test_decode_too_short_raises_clip_error(tmp_path, cut):
    path = make_counter_video(tmp_path, frames=13 if cut is None else 40)  # 14 frames needed
    with pytest.raises(ClipError) as info:
        decode_clip(ClipRecord(str(path), "c", cut=cut), **SMALL)
    assert info.value.reason == "too_short"


# ---- dataset ---------------------------------------------------------------------------------------------


def test_dataset_skips_bad_clips_and_reports_them(tmp_path, caplog):
    good = ClipRecord(str(sample_video("bikes.mp4")), "bikes")
    corrupt = ClipRecord(str(make_corrupt_video(tmp_path)), "corrupt")
    short = ClipRecord(str(make_short_video(tmp_path, frames=5, height=64, width=64)), "short")
    counter = ClipRecord(str(make_counter_video(tmp_path)), "counter")
    dataset = VideoClipDataset([good, corrupt, short, counter], DataConfig(**SMALL))
    with caplog.at_level(logging.WARNING, logger="flashi2v.data.dataset"):
        sample = dataset[1]
        again = dataset[2]
    assert sample["index"] == again["index"] == 3 and sample["caption"] == "counter"
    assert sample["video"].shape == (3, 9, 64, 64) and sample["image"].shape == (3, 64, 64)
    assert torch.equal(sample["image"], sample["video"][:, 0])
    assert sample["skipped"] == [(corrupt.path, "unreadable"), (short.path, "too_short")] and again["skipped"] == []
    assert dataset.skipped.counts["unreadable"] == 1 and dataset.skipped.counts["too_short"] == 1
    assert dataset.skipped.paths == {corrupt.path, short.path}
    assert len(caplog.records) == 2  # each bad path logged once
    assert dataset[0]["index"] == 0 and dataset[3]["index"] == 3


def test_skips_reach_the_main_process_through_workers(tmp_path):
    good = ClipRecord(str(make_counter_video(tmp_path)), "counter")
    corrupt = ClipRecord(str(make_corrupt_video(tmp_path, kind="random")), "corrupt")
    dataset = VideoClipDataset([corrupt, good, corrupt, good], DataConfig(**SMALL))
    gc.collect()  # free other tests' PyAV objects before the fork; a threaded codec freed in a child can hang
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_clips, timeout=60)
    totals, indices = SkipLog(), []
    for batch in loader:  # worker 0 makes batch [0, 1], worker 1 makes [2, 3]
        assert batch["video"].shape == (2, 3, 9, 64, 64)
        indices.append(batch["index"].tolist())
        totals.update(batch["skipped"])
    assert indices == [[1, 1], [3, 3]]
    assert dataset.skipped.counts["unreadable"] == 0  # the main process's copy never decoded anything
    assert totals.counts["unreadable"] == 1 and totals.paths == {corrupt.path}


def test_dataset_with_only_bad_clips_is_a_user_error(tmp_path):
    dataset = VideoClipDataset([ClipRecord(str(make_corrupt_video(tmp_path)), "x")], DataConfig(**SMALL))
    with pytest.raises(FlashI2VError, match="filter_clips"):
        dataset[0]


# ---- sampler ---------------------------------------------------------------------------------------------


def test_sampler_resume_reproduces_the_stream():
    full = list(islice(iter(ResumableSampler(10, seed=3)), 57))  # more than five epochs
    for stop in (0, 4, 10, 23, 50):
        first = ResumableSampler(10, seed=3)
        head = list(islice(iter(first), stop))
        resumed = ResumableSampler(10, seed=3)
        resumed.load_state_dict(first.state_dict())
        assert head + list(islice(iter(resumed), 57 - stop)) == full


def test_sampler_resume_with_prefetch_uses_consumed_count():
    full = list(islice(iter(ResumableSampler(7, seed=1)), 30))
    sampler = ResumableSampler(7, seed=1)
    stream = iter(sampler)
    used = [next(stream) for _ in range(12)]
    prefetched = [next(stream) for _ in range(5)]  # a DataLoader pulled these but training never saw them
    assert prefetched == full[12:17]
    state = sampler.state_dict(consumed=len(used))
    resumed = ResumableSampler(7, seed=1)
    resumed.load_state_dict(state)
    assert used + list(islice(iter(resumed), 18)) == full


def test_sampler_ranks_are_disjoint_and_deterministic():
    n, world = 11, 3
    streams = [list(islice(iter(ResumableSampler(n, rank, world, seed=5)), 9)) for rank in range(world)]
    for epoch in range(3):  # each rank gets 11 // 3 = 3 per epoch
        shards = [set(s[epoch * 3 : epoch * 3 + 3]) for s in streams]
        assert sum(len(s) for s in shards) == 9 and len(set.union(*shards)) == 9
    assert streams[0][:3] != streams[0][3:6]  # a new order each epoch
    assert streams[0] == list(islice(iter(ResumableSampler(n, 0, world, seed=5)), 9))
    assert streams[0] != list(islice(iter(ResumableSampler(n, 0, world, seed=6)), 9))
    assert list(islice(iter(ResumableSampler(4, shuffle=False)), 6)) == [0, 1, 2, 3, 0, 1]


def test_sampler_feeds_a_dataloader_and_checks_state():
    sampler = ResumableSampler(6, seed=0)
    loader = DataLoader(list(range(100, 106)), batch_size=4, sampler=sampler)
    batches = list(islice(iter(loader), 3))
    assert sorted(torch.cat(batches[:1] + [batches[1][:2]]).tolist()) == list(range(100, 106))
    with pytest.raises(FlashI2VError, match="seed"):
        ResumableSampler(6, seed=1).load_state_dict(sampler.state_dict())
    with pytest.raises(FlashI2VError, match="rank"):
        ResumableSampler(6, rank=2, world_size=2)
