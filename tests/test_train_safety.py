"""Training runs are safe to resume and hard to lose: no code runs from a checkpoint, damaged or half-written
checkpoints are passed over, an existing run is not replaced by accident, and bad configs get one clear line."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from flashi2v.cli import main
from flashi2v.errors import FlashI2VError
from flashi2v.train import load_config, train
from flashi2v.train.checkpoint import DamagedCheckpoint, check_checkpoint, find_resumable

ASSETS = Path(__file__).parent.parent / "assets" / "examples"


def overrides(root: Path, out: Path, *extra: str) -> list[str]:
    """Camera-motion clips rendered from one photo: cheap, deterministic data for 32x32 x 5-frame steps."""
    return [f"data.photos={root / 'photos'}", "data.synthetic_clips=8", "data.num_frames=5", "data.height=32",
            "data.width=32", "recipe.batch_size=2", "recipe.steps=4", "output.checkpoint_every=1", "output.keep=4",
            f"output.dir={out}", *extra]


def config(root: Path, out: Path, *extra: str):
    return load_config("tiny", overrides(root, out, *extra))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A 4-step run with a checkpoint at every step: (data root, run folder, its losses)."""
    root = tmp_path_factory.mktemp("safety")
    (root / "photos").mkdir()
    shutil.copy(ASSETS / "astronaut.jpg", root / "photos" / "a.jpg")
    result = train(config(root, root / "run"), device="cpu", progress=False)
    return root, root / "run", result.losses


def copy_run(run: Path, dest: Path, steps=(1, 2, 3, 4)) -> Path:
    for step in steps:
        name = f"step-{step:08d}"
        shutil.copytree(run / "checkpoints" / name, dest / "checkpoints" / name)
    return dest


class PlantedPayload:
    """Unpickling this creates the marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class PlantedExec:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


# ---- 1. no code runs from a checkpoint --------------------------------------------------------------------

@pytest.mark.parametrize("payload", [PlantedPayload, PlantedExec])
def test_planted_metadata_payload_is_refused_without_running(straight, tmp_path, payload, capsys):
    root, run, _ = straight
    cut = copy_run(run, tmp_path / "cut", steps=(2,))
    marker = tmp_path / "marker"
    (cut / "checkpoints" / "step-00000002" / ".metadata").write_bytes(pickle.dumps(payload(marker)))
    with pytest.raises(FlashI2VError, match=r"step-00000002/\.metadata' is not plain checkpoint metadata") as err:
        train(config(root, cut), resume=True, device="cpu", progress=False)
    assert "\n" not in str(err.value)
    assert not marker.exists()
    rc = main(["train", "tiny", *overrides(root, cut), "--device", "cpu", "--resume"])  # the CLI: one line, exit 2
    stderr = capsys.readouterr().err.strip()
    assert rc == 2 and stderr.startswith("flashi2v: error: ") and ".metadata" in stderr and len(stderr.splitlines()) == 1
    assert not marker.exists()


def test_planted_rng_payload_is_refused_without_running(straight, tmp_path):
    _, run, _ = straight
    cut = copy_run(run, tmp_path / "cut", steps=(2,))
    marker = tmp_path / "marker"
    torch.save({"cpu": PlantedPayload(marker)}, cut / "checkpoints" / "step-00000002" / "rng-0.pt")
    with pytest.raises(FlashI2VError, match="rng-0.pt' is not a plain RNG state"):
        check_checkpoint(cut / "checkpoints" / "step-00000002")
    assert not marker.exists()


def test_planted_payload_in_a_checkpoint_value_is_refused(tmp_path):
    """DCP stores non-tensor values (optimizer hyper-parameters) as pickles; they load with weights_only."""
    import torch.distributed.checkpoint as dcp

    from flashi2v.train.checkpoint import _load_dcp

    marker = tmp_path / "marker"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.ones(3), "lr": PlantedPayload(marker)}, checkpoint_id=str(tmp_path / "ck"))
        state = {"w": torch.zeros(3), "lr": 0.1}
        with pytest.raises(FlashI2VError, match="'lr' is not plain data"):
            _load_dcp(state, tmp_path / "ck")
    assert not marker.exists()
    with warnings.catch_warnings():  # plain values still load
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.ones(3), "lr": 0.5}, checkpoint_id=str(tmp_path / "ok"))
        _load_dcp(state, tmp_path / "ok")
    assert state["lr"] == 0.5 and torch.equal(state["w"], torch.ones(3))


# ---- 2. damaged checkpoints are passed over ---------------------------------------------------------------

def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated data": lambda f: truncate(f / "__0_0.distcp"),
    "missing data": lambda f: (f / "__0_0.distcp").unlink(),
    "bad json": lambda f: (f / "train_state.json").write_text('{"step": 4, "sched'),
    "json without state": lambda f: (f / "train_state.json").write_text('{"step": 4}'),
    "missing train_state": lambda f: (f / "train_state.json").unlink(),
    "garbage metadata": lambda f: (f / ".metadata").write_bytes(b"\x80\x04garbage"),
    "truncated metadata": lambda f: truncate(f / ".metadata"),
    "missing metadata": lambda f: (f / ".metadata").unlink(),
    "truncated rng": lambda f: truncate(f / "rng-0.pt"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_checkpoint_is_named_and_passed_over(straight, tmp_path, damage, caplog):
    _, run, _ = straight
    cut = copy_run(run, tmp_path / "cut", steps=(3, 4))
    DAMAGE[damage](cut / "checkpoints" / "step-00000004")
    with pytest.raises(DamagedCheckpoint):
        check_checkpoint(cut / "checkpoints" / "step-00000004")
    with caplog.at_level(logging.WARNING, logger="flashi2v.train"):
        folder, state = find_resumable(cut / "checkpoints")
    assert folder.name == "step-00000003" and state["step"] == 3
    damaged = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(damaged) == 1 and "step-00000004" in damaged[0]
    assert any("resuming from step-00000003" in r.getMessage() for r in caplog.records)


def test_resume_continues_exactly_from_the_newest_complete_checkpoint(straight, tmp_path):
    root, run, losses = straight
    cut = copy_run(run, tmp_path / "cut", steps=(2, 3))
    DAMAGE["truncated data"](cut / "checkpoints" / "step-00000003")
    resumed = train(config(root, cut), resume=True, device="cpu", progress=False)
    assert resumed.losses == losses[2:]  # bit-exact continuation from step 2
    assert check_checkpoint(cut / "checkpoints" / "step-00000003")[0]["step"] == 3  # rewritten complete


def test_no_complete_checkpoint_is_one_error(straight, tmp_path):
    _, run, _ = straight
    cut = copy_run(run, tmp_path / "cut", steps=(4,))
    DAMAGE["bad json"](cut / "checkpoints" / "step-00000004")
    with pytest.raises(FlashI2VError, match=r"no complete checkpoint under .*damaged: step-00000004"):
        find_resumable(cut / "checkpoints")
    with pytest.raises(FlashI2VError, match="cannot resume from .*step-00000004.*not valid JSON"):
        train(config(straight[0], cut), resume=str(cut / "checkpoints" / "step-00000004"), device="cpu", progress=False)


CRASH = """
import os, sys
import flashi2v.train.checkpoint as ck
from flashi2v.train import load_config, train

real_save = ck.dcp.save
def crash_while_saving(state, checkpoint_id):
    real_save(state, checkpoint_id=checkpoint_id)
    if checkpoint_id.endswith("step-00000004.tmp"):
        os._exit(9)  # killed with the model written, the RNG and train_state not yet
ck.dcp.save = crash_while_saving
train(load_config("tiny", sys.argv[1:]), device="cpu", progress=False)
"""


def test_a_crash_while_saving_leaves_the_previous_checkpoint_to_resume(straight, tmp_path):
    root, _, losses = straight
    extra = ("output.checkpoint_every=2", "output.keep=1")  # keep=1: the old one must survive until the new is done
    out = tmp_path / "crashed"
    proc = subprocess.run([sys.executable, "-c", CRASH, *overrides(root, out, *extra)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000004.tmp"]
    resumed = train(config(root, out, *extra), resume=True, device="cpu", progress=False)
    assert resumed.losses == losses[2:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000004"]  # tmp cleaned, 2 pruned


# ---- 3. an existing run is not replaced by accident -------------------------------------------------------

def test_training_into_an_existing_run_needs_resume_or_overwrite(straight, tmp_path, capsys):
    root, run, _ = straight
    cut = copy_run(run, tmp_path / "cut", steps=(3, 4))
    (cut / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in cut.rglob("*") if p.is_file()}
    with pytest.raises(FlashI2VError, match=r"already holds a run \(checkpoints up to step 4\): pass --resume to "
                                            r"continue it, or --overwrite to start over"):
        train(config(root, cut), device="cpu", progress=False)
    rc = main(["train", "tiny", *overrides(root, cut), "--device", "cpu"])
    assert rc == 2 and "already holds a run" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in cut.rglob("*") if p.is_file()} == before  # nothing touched
    with pytest.raises(FlashI2VError, match="exclude each other"):
        train(config(root, cut), resume=True, overwrite=True, device="cpu", progress=False)
    rc = main(["train", "tiny", *overrides(root, cut, "recipe.steps=1"), "--device", "cpu", "--overwrite"])
    assert rc == 0
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["step-00000001"]
    assert (cut / "notes.txt").read_text() == "mine"  # only the run's own outputs were replaced


def test_an_empty_or_missing_output_folder_is_fine(tmp_path):
    from flashi2v.train.parallel import DistInfo
    from flashi2v.train.trainer import claim_output_dir, existing_run

    (tmp_path / "empty").mkdir()
    assert existing_run(tmp_path / "empty") is None and existing_run(tmp_path / "missing") is None
    claim_output_dir(tmp_path / "empty", DistInfo(), None, False)
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "metrics.jsonl").write_text("{}\n")  # a run killed before its first checkpoint
    with pytest.raises(FlashI2VError, match="no checkpoint yet"):
        claim_output_dir(tmp_path / "started", DistInfo(), None, False)


# ---- 4. configs -------------------------------------------------------------------------------------------

BAD_OVERRIDES = {
    "optim.lr=abc": "optim.lr: 'abc' is not a number",
    "optim.lr=-1e-4": "optim.lr must be > 0",
    "optim.lr=.nan": "optim.lr must be a finite number",
    "optim.eps=.inf": "optim.eps must be a finite number",
    "recipe.steps=0": "recipe.steps must be >= 1",
    "recipe.batch_size=-1": "recipe.batch_size must be >= 1",
    "recipe.steps=2.5": "recipe.steps must be a whole number",
    "data.height=0": "data.height must be >= 16",
    "output.checkpoint_every=0": "output.checkpoint_every must be >= 1",
    "recipe.compile=maybe": "recipe.compile: 'maybe' is not true/false",
    "optim.betas=0.9": "optim.betas must be a list of 2 numbers",
    "optim.betas=[0.9,1.0]": "optim.betas must both be in",
    "recipe.caption_dropout=1.5": "recipe.caption_dropout must be in",
    "recipe.precision=fp16": "recipe.precision 'fp16': use one of bf16, fp32",
    "model.preset=[1]": "model.preset: \\[1\\] is not a string",
    "recipe.stpes=3": "unknown config key\\(s\\) \\['recipe.stpes'\\]",
    "recpie.steps=3": "unknown config key\\(s\\) \\['recpie'\\]",
    "recipe.steps.x=3": "the key must be section.key",
    "optim.lr=[": "the value is not valid YAML",
    "model.preset=nope": "model.preset 'nope': use one of builtin, ",
    'output.dir=""': "output.dir is empty",
}


@pytest.mark.parametrize("override", sorted(BAD_OVERRIDES))
def test_bad_overrides_get_one_line_naming_the_key(override):
    with pytest.raises(FlashI2VError, match=BAD_OVERRIDES[override]) as err:
        load_config("tiny", ["data.index=x", override])
    assert "\n" not in str(err.value)


def test_numbers_yaml_reads_as_strings_are_accepted():
    c = load_config("tiny", ["data.index=x", "optim.lr=1e-5", "recipe.shift=3", "recipe.time_limit_min=2"])
    assert c.optim.lr == 1e-5 and isinstance(c.optim.lr, float) and c.recipe.shift == 3.0
    assert load_config("tiny", ["data.index=x", "recipe.shift=dynamic"]).recipe.shift == "dynamic"


BAD_FILES = {
    "model: {preset: tiny\n": "is not valid YAML \\(line 2",
    "- model\n- data\n": "must be a mapping of sections",
    "model: [tiny]\n": "config section 'model' must be a mapping",
    "model:\n  preset: tiny\n  layers: 3\n": "unknown config key\\(s\\) \\['model.layers'\\]",
    "optim:\n  lr: fast\n": "optim.lr: 'fast' is not a number",
}


@pytest.mark.parametrize("text", sorted(BAD_FILES))
def test_bad_config_files_get_one_line(tmp_path, text, capsys):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(FlashI2VError, match=BAD_FILES[text]):
        load_config(tmp_path / "c.yaml", ["data.index=x"])
    assert main(["train", str(tmp_path / "c.yaml"), "data.index=x"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_resume_with_other_model_settings_is_refused(straight, tmp_path):
    root, run, _ = straight
    cut = copy_run(run, tmp_path / "cut", steps=(4,))
    with pytest.raises(FlashI2VError, match="other model settings \\(model.proj_kernel='1x3x3' there, '3x3x3' here"):
        train(config(root, cut, "model.proj_kernel=3x3x3"), resume=True, device="cpu", progress=False)
    with pytest.raises(FlashI2VError, match="model.signed_fourier=False there, True here"):
        train(config(root, cut, "model.signed_fourier=true"), resume=True, device="cpu", progress=False)
    state_file = cut / "checkpoints" / "step-00000004" / "train_state.json"  # a checkpoint that does not say
    state_file.write_text(json.dumps({k: v for k, v in json.loads(state_file.read_text()).items() if k != "model"}))
    with pytest.raises(FlashI2VError, match="holds a different model \\(.*learnable_proj"):
        train(config(root, cut, "model.proj_kernel=3x3x3"), resume=True, device="cpu", progress=False)


def test_pruning_keeps_the_new_checkpoint_when_a_damaged_newer_one_exists(tmp_path):
    """keep=1 after resuming past a damaged step-3: saving step 2 prunes step 1, not step 2."""
    from flashi2v.train.checkpoint import save_checkpoint
    from flashi2v.train.parallel import DistInfo

    model, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    root = tmp_path / "checkpoints"
    state = {"scheduler": {"last_epoch": 0, "base_lrs": [1e-3]},
             "sampler": {"epoch": 0, "offset": 0, "seed": 0, "dataset_len": 4, "world_size": 1, "shuffle": True}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_checkpoint(root, 1, DistInfo(), model=model, ema=ema, optimizer=optimizer, keep=1,
                        train_state={"step": 1, **state})
        (root / "step-00000003").mkdir()
        (root / "step-00000003" / "train_state.json").write_text(json.dumps({"step": 3, **state}))  # data lost
        save_checkpoint(root, 2, DistInfo(), model=model, ema=ema, optimizer=optimizer, keep=1,
                        train_state={"step": 2, **state})
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002", "step-00000003"]
    assert check_checkpoint(root / "step-00000002")[0]["step"] == 2
