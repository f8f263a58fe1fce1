"""Resolution and length buckets (flashi2v.data.buckets, data.buckets): assignment, one shape per batch, resume."""

import json
import re
from collections import Counter

import pytest

from flashi2v.cli import main
from flashi2v.data import ClipRecord
from flashi2v.data.buckets import ASPECT, NO_SIZE, TOO_SHORT, TOO_SMALL, BucketBatchSampler, assign_buckets
from flashi2v.errors import FlashI2VError
from flashi2v.train import load_config, train
from flashi2v.train.parallel import DistInfo
from flashi2v.train.trainer import build, train_step

from helpers_media import sample_video_paths

BUCKETS = [(49, 480, 832), (49, 832, 480), (81, 480, 480), (17, 480, 832)]


def clip(h, w, frames, fps=16.0):
    return ClipRecord(path=f"/clips/{h}x{w}x{frames}.mp4", cap="", height=h, width=w, fps=fps, num_frames=frames)


def test_each_clip_gets_the_longest_then_largest_bucket_it_fills():
    records = [clip(720, 1280, 200), clip(720, 1280, 30), clip(1280, 720, 60), clip(1080, 1080, 100),
               clip(1080, 1080, 60), clip(480, 832, 40, fps=32.0), clip(400, 700, 100), clip(480, 1600, 100),
               clip(10, 10, 5), ClipRecord(path="/clips/unprobed.mp4", cap="")]
    assigned, unassigned = assign_buckets(records, BUCKETS, fps=16.0, tolerance=0.15)
    assert assigned[:5] == [0, 3, 1, 2, None]  # 1080x1080 x 60 frames: too short for 81, square fits no 49 bucket
    assert assigned[5] == 3  # 40 frames at 32 fps span 1.25 s: enough for 17 frames at 16 fps, not for 49
    assert assigned[6:] == [None, None, None, None]
    assert unassigned == {NO_SIZE: 1, TOO_SHORT: 1, ASPECT: 2, TOO_SMALL: 1}
    # a looser tolerance lets a squarish clip crop to the landscape bucket (its aspect error 1.56 < 1.8; portrait: 1.92)
    assigned, _ = assign_buckets([clip(1080, 1200, 60)], BUCKETS, fps=16.0, tolerance=0.8)
    assert assigned == [0]


def test_batches_never_mix_buckets_and_the_stream_resumes_exactly():
    bucket_of = [0] * 7 + [1] * 5 + [2] * 4 + [3]  # uneven buckets; bucket 3 can never fill a batch of 2
    sampler = BucketBatchSampler(bucket_of, batch_size=2, seed=5)
    stream = iter(sampler)
    batches = [next(stream) for _ in range(3 * len(sampler))]  # three epochs
    assert all(len(b) == 2 and len({bucket_of[i] for i in b}) == 1 for b in batches)
    assert {bucket_of[b[0]] for b in batches} == {0, 1, 2}
    assert len({tuple(b) for b in batches}) > len(sampler)  # epochs differ in order and pairing
    # resume after 5 batches (a DataLoader may have pulled more: the count of consumed clips decides)
    state = sampler.state_dict(consumed=10)
    again = BucketBatchSampler(bucket_of, batch_size=2, seed=5)
    again.load_state_dict(json.loads(json.dumps(state)))
    resumed = iter(again)
    assert [next(resumed) for _ in range(len(batches) - 5)] == batches[5:]
    with pytest.raises(FlashI2VError, match="buckets="):
        BucketBatchSampler([0] * 6 + [1] * 6 + [2] * 4 + [3], batch_size=2, seed=5).load_state_dict(state)
    # ranks share each epoch's batches without overlap
    ranks = [BucketBatchSampler(bucket_of, 2, rank=r, world_size=2, seed=5).epoch_batches(0) for r in range(2)]
    flat = [i for r in ranks for b in r for i in b]
    assert len(flat) == len(set(flat)) and len(ranks[0]) == len(ranks[1])
    with pytest.raises(FlashI2VError, match="no bucket holds enough clips"):
        BucketBatchSampler([0, 1, 2], batch_size=2)


@pytest.fixture(scope="module")
def mixed_clips(tmp_path_factory):
    """Real clips of three aspect ratios (16:9 720p, 2.35:1, 11:9 QCIF), unprobed: training probes them."""
    root = tmp_path_factory.mktemp("buckets")
    paths = {p.name: p for p in sample_video_paths()}
    names = ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"]
    (root / "clips.json").write_text(json.dumps([{"path": str(paths[n]), "cap": n} for n in names]))
    return root / "clips.json"


WIDE_AND_SQUARE = ["data.buckets=[[5,32,64],[9,32,32]]", "data.bucket_aspect_tolerance=0.5"]


def test_bucketed_training_gives_one_shape_per_batch_and_resumes(mixed_clips, tmp_path):
    settings = [f"data.index={mixed_clips}", "recipe.batch_size=2", "data.num_workers=0", *WIDE_AND_SQUARE]
    run = build(load_config("tiny", [*settings, f"output.dir={tmp_path / 'peek'}"]), DistInfo())
    shapes = Counter()
    for batch, _ in zip(run.loader, range(2)):  # one epoch: a batch of each bucket
        shapes[tuple(batch["video"].shape[2:])] += 1
        assert {c.split("_")[0] for c in batch["caption"]} in ({"bigbuckbunny.mp4", "bikes.mp4"}, {"carphone"})
    assert set(shapes) == {(5, 32, 64), (9, 32, 32)}
    loss, _ = train_step(run)
    assert loss == loss  # one step on a bucket's latent shape and shift runs
    steps = ["output.checkpoint_every=1"]
    full = train(load_config("tiny", [*settings, f"output.dir={tmp_path / 'full'}", "recipe.steps=2", *steps]),
                 device="cpu", progress=False)
    train(load_config("tiny", [*settings, f"output.dir={tmp_path / 'split'}", "recipe.steps=1", *steps]), device="cpu",
          progress=False)
    resumed = train(load_config("tiny", [*settings, f"output.dir={tmp_path / 'split'}", "recipe.steps=2", *steps]),
                    resume=True, device="cpu", progress=False)
    assert resumed.losses == full.losses[1:]


def test_clips_that_fit_no_bucket_are_counted(mixed_clips, tmp_path, capsys, caplog):
    rc = main(["data", "filter", str(mixed_clips), "--out", str(tmp_path / "kept.json"), "--min-pixels", "0",
               "--num-frames", "5", "--buckets", "[[5,32,64],[9,64,64]]", "--bucket-aspect-tolerance", "0.2"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = {tuple(map(int, m.groups()[:3])): int(m.group(4))
            for m in re.finditer(r"bucket +(\d+) x +(\d+) x (\d+) +(\d+) clips", out)}
    assert rows == {(5, 32, 64): 2, (9, 64, 64): 0}  # the two wide clips; the square bucket is empty
    assert "aspect ratio fits no bucket: 2" in out  # the 11:9 clips: 22 % off the square bucket
    # training leaves them out, says how many, and trains on the rest
    with caplog.at_level("WARNING"):
        result = train(load_config("tiny", [f"data.index={mixed_clips}", f"output.dir={tmp_path / 'run'}",
                                            "data.buckets=[[5,32,64],[9,64,64]]", "data.bucket_aspect_tolerance=0.2",
                                            "recipe.steps=1", "recipe.batch_size=2", "data.num_workers=0"]),
                       device="cpu", progress=False)
    assert len(result.losses) == 1
    assert "2 of 4 clips fit no bucket" in caplog.text


@pytest.mark.parametrize("value, message", [
    ("[[48,480,832]]", "not of the form 4k\\+1"),
    ("[[49,480,830]]", "multiples of 16"),
    ("[[49,480]]", "not \\[frames, height, width\\]"),
    ("[]", "give a list"),
    ("[[49,480,832],[49,480,832]]", "twice"),
])
def test_bad_bucket_lists_are_refused(value, message):
    with pytest.raises(FlashI2VError, match=message):
        load_config("tiny", ["data.index=x.json", f"data.buckets={value}"])


def test_a_bucket_list_that_fits_no_clip_stops_with_the_counts(mixed_clips, tmp_path):
    with pytest.raises(FlashI2VError, match="no clip of data.index fits a bucket.*aspect ratio fits no bucket: 4"):
        build(load_config("tiny", [f"data.index={mixed_clips}", f"output.dir={tmp_path}", "data.num_workers=0",
                                   "data.buckets=[[5,32,128]]"]), DistInfo())
