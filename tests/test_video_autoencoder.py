"""The built-in model's learned codec (CausalVideoAutoencoder) and its trainer (`flashi2v train` with autoencoder:)."""

import json
import shutil

import pytest
import torch

from flashi2v.cli import main
from flashi2v.encoders import CausalVideoAutoencoder, load_vae
from flashi2v.errors import FlashI2VError
from flashi2v.train.autoencoder import autoencoder_config_from_mapping, train_autoencoder
from flashi2v.train.config import read_config_mapping

TINY = dict(channels=8, features=16, trunk=16, encoder_widths=(8, 8, 16), renderer_widths=(8, 8))


def tiny_autoencoder(seed: int = 0) -> CausalVideoAutoencoder:
    torch.manual_seed(seed)
    model = CausalVideoAutoencoder(**TINY).eval()
    for m in model.modules():  # every weight random at PyTorch's default scale (ResBlocks start near the identity)
        if isinstance(m, torch.nn.Conv2d):
            m.reset_parameters()
    return model


def video(frames: int = 9, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(2, 3, frames, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_shapes_follow_the_wan_layout():
    model = tiny_autoencoder()
    with torch.no_grad():
        z = model.encode(video(9, 32))
        assert z.shape == (2, 8, 3, 4, 4)  # 4k + 1 frames -> k + 1 latent frames, 8x smaller
        assert model.decode(z).shape == (2, 3, 9, 32, 32)
        assert model.encode(video(1, 40)).shape == (2, 8, 1, 5, 5)  # an image on its own: latent frame 0


def test_encoder_and_decoder_are_causal():
    """Latent frame t sees frames 0..4t only; decoded frames up to 4t see latent frames 0..t only."""
    model = tiny_autoencoder()
    x = video(13)
    later = x.clone()
    later[:, :, 9:] = -later[:, :, 9:]  # change the last group (frames 9-12)
    with torch.no_grad():
        z, z_later = model.encode(x), model.encode(later)
        assert torch.equal(z[:, :, :3], z_later[:, :, :3])
        assert (z[:, :, 3] - z_later[:, :, 3]).abs().max() > 1e-3
        changed = z.clone()
        changed[:, :, 3] += 1.0
        y, y_changed = model.decode(z), model.decode(changed)
        assert torch.equal(y[:, :, :9], y_changed[:, :, :9])
        assert (y[:, :, 9:] - y_changed[:, :, 9:]).abs().max() > 1e-3


def test_group_decoding_reads_latent_frame_zero():
    """Each group is decoded from latent frames 0, t-1 and t: frame 0's latent reaches every decoded frame."""
    model = tiny_autoencoder()
    with torch.no_grad():
        z = model.encode(video(9))
        changed = z.clone()
        changed[:, :, 0] += 1.0
        diff = (model.decode(z) - model.decode(changed)).abs().amax(dim=(0, 1, 3, 4))
    assert (diff > 1e-3).all()


def test_statistics_normalise_the_latents():
    model = tiny_autoencoder()
    clips = [video(9, 32, seed=s) for s in range(4)]
    model.fit_statistics(clips)
    with torch.no_grad():
        z = torch.cat([model.encode(c) for c in clips])
        back = model.decode(z)
        raw = model.decode_raw(model.encode_raw(clips[0])).clamp(-1, 1)
    for part in (z[:, :, :1], z[:, :, 1:]):  # frame 0 and the groups have their own statistics
        flat = part.transpose(0, 1).reshape(8, -1)
        assert flat.mean(1).abs().max() < 1e-4
        assert (flat.std(1) - 1).abs().max() < 1e-2
    torch.testing.assert_close(back[:2], raw, rtol=0, atol=1e-2)  # normalising is undone by decode (to rounding)


def test_save_and_load_round_trip(tmp_path):
    model = tiny_autoencoder()
    model.fit_statistics([video()])
    model.save_pretrained(tmp_path / "vae")
    loaded = load_vae(tmp_path / "vae")
    assert isinstance(loaded, CausalVideoAutoencoder)
    x = video()
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.encode(x)), model.decode(model.encode(x)))
    model.save_pretrained(tmp_path / "half", dtype=torch.float16)  # the shipped form: weights float16, statistics not
    half = load_vae(tmp_path / "half")
    assert torch.equal(half.std0, model.std0)
    with torch.no_grad():
        assert (half.decode(half.encode(x)) - model.decode(model.encode(x))).abs().max() < 0.05


def test_damaged_folders_fail_with_one_line(tmp_path):
    model = tiny_autoencoder()
    model.save_pretrained(tmp_path / "vae")
    cfg = json.loads((tmp_path / "vae" / "config.json").read_text())
    (tmp_path / "vae" / "config.json").write_text(json.dumps({**cfg, "trunk": 32}))
    with pytest.raises(FlashI2VError, match="does not match its config.json"):
        load_vae(tmp_path / "vae")
    (tmp_path / "vae" / "config.json").write_text(json.dumps({**cfg, "spatial": 4}))
    with pytest.raises(FlashI2VError, match="not a video autoencoder config"):
        load_vae(tmp_path / "vae")
    with pytest.raises(FlashI2VError, match="4k\\+1 frames"):
        model.encode(video(6))


# ---- training ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos(tmp_path_factory, example_image):
    folder = tmp_path_factory.mktemp("photos")
    from PIL import Image

    image = Image.open(example_image).convert("RGB")
    for i, box in enumerate([(0, 0, 256, 256), (200, 100, 456, 356), (100, 200, 356, 456)]):
        image.crop(box).save(folder / f"p{i}.png")
    return folder


def config(photos, out, *extra):
    values = read_config_mapping("builtin-autoencoder", [
        f"data.photos={photos}", "data.num_frames=5", "data.height=32", "data.width=32", "data.num_workers=0",
        "data.synthetic_clips=64", "recipe.batch_size=4", "recipe.precision=fp32", "recipe.statistics_clips=8",
        "optim.warmup_steps=0", "optim.decay=constant", f"output.dir={out}", "output.log_every=1",
        *[f"autoencoder.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()], *extra])
    return autoencoder_config_from_mapping(values)


def final_weights(run) -> dict:
    return CausalVideoAutoencoder.from_pretrained(run / "autoencoder").state_dict()


def test_training_lowers_the_reconstruction_error(photos, tmp_path):
    # from scratch (no linear path): the convolutions alone must learn the codec
    result = train_autoencoder(config(photos, tmp_path / "run", "recipe.steps=40", "optim.lr=3e-3",
                                      "autoencoder.linear_path=false", "autoencoder.linear_encoder=false"),
                             device="cpu", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(r["psnr"] for r in rows[:5]) / 5, sum(r["psnr"] for r in rows[-5:]) / 5
    assert last > first + 2.0, (first, last)
    assert result.final_step == 40
    exported = CausalVideoAutoencoder.from_pretrained(tmp_path / "run" / "autoencoder")
    assert exported.std0.ne(1.0).all()  # latent statistics were measured for the export


def test_resume_reproduces_uninterrupted_run(photos, tmp_path):
    train_autoencoder(config(photos, tmp_path / "full", "recipe.steps=4", "output.checkpoint_every=2"), device="cpu",
                      progress=False)
    train_autoencoder(config(photos, tmp_path / "split", "recipe.steps=2", "output.checkpoint_every=2"), device="cpu",
                      progress=False)
    shutil.rmtree(tmp_path / "split" / "autoencoder")
    train_autoencoder(config(photos, tmp_path / "split", "recipe.steps=4", "output.checkpoint_every=2"), resume=True,
                      device="cpu", progress=False)
    full, split = final_weights(tmp_path / "full"), final_weights(tmp_path / "split")
    for k in full:
        torch.testing.assert_close(split[k], full[k], rtol=0, atol=1e-6, msg=k)


def test_cli_trains_from_an_autoencoder_config_and_refuses_a_second_run(photos, tmp_path, capsys):
    args = ["train", "builtin-autoencoder", f"data.photos={photos}", "data.num_frames=5", "data.height=32",
            "data.width=32", "data.num_workers=0", "recipe.batch_size=2", "recipe.steps=1", "recipe.precision=fp32",
            "recipe.statistics_clips=2", f"output.dir={tmp_path / 'run'}",
            *[f"autoencoder.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()]]
    assert main(args) == 0
    assert (tmp_path / "run" / "autoencoder" / "config.json").is_file()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*args, "autoencoder.encoder_widths=[8,8]", "--overwrite"]) == 2
    assert "autoencoder.encoder_widths" in capsys.readouterr().err


def test_a_pipeline_trains_and_generates_on_the_autoencoders_latents(photos, tmp_path):
    """The autoencoder behind the VAE interface: the DiT trainer encodes clips with it, the pipeline decodes with it."""
    from flashi2v.pipeline import FlashI2VPipeline
    from flashi2v.random_components import TINY_Z_DIM, random_tiny_pipeline
    from flashi2v.train import load_config, train

    folder = tmp_path / "pipe"
    random_tiny_pipeline(seed=0).save_pretrained(folder)
    shutil.rmtree(folder / "vae")
    codec = CausalVideoAutoencoder(**{**TINY, "channels": TINY_Z_DIM})
    codec.fit_statistics([video(9, 32)])
    codec.save_pretrained(folder / "vae")
    cfg = load_config("tiny", [f"model.components={folder}", f"data.photos={photos}", "data.num_frames=5",
                               "data.height=32", "data.width=32", "data.num_workers=0", "recipe.batch_size=2",
                               "recipe.steps=2", "recipe.precision=fp32", f"output.dir={tmp_path / 'run'}",
                               "output.tensorboard=false"])
    result = train(cfg, device="cpu", progress=False)
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    pipe = FlashI2VPipeline.from_pretrained(folder)
    assert isinstance(pipe.vae, CausalVideoAutoencoder)
    image = (video(1, 32)[0, :, 0].permute(1, 2, 0) * 127.5 + 127.5).byte().numpy()
    a = pipe(image, "the camera pans left", num_frames=5, height=32, width=32, steps=2, seed=0, progress=False)
    b = pipe(image, "the camera pans left", num_frames=5, height=32, width=32, steps=2, seed=0, progress=False)
    assert a.frames.shape == (5, 32, 32, 3)
    assert (a.frames == b.frames).all()


def test_two_processes_match_one(photos, tmp_path):
    """Same global batch (4): 1 process x 4 vs torchrun 2 processes (gloo, DistributedDataParallel) x 2, no latent
    noise (each process draws its own): the same losses and the same exported weights."""
    import os
    import socket
    import subprocess
    import sys

    common = ["recipe.steps=3", "output.checkpoint_every=3", "recipe.latent_noise=0"]
    train_autoencoder(config(photos, tmp_path / "one", *common), device="cpu", progress=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    args = ["train", "builtin-autoencoder", f"data.photos={photos}", "data.num_frames=5", "data.height=32",
            "data.width=32", "data.num_workers=0", "data.synthetic_clips=64", "recipe.batch_size=2",
            "recipe.precision=fp32", "recipe.statistics_clips=8", "optim.warmup_steps=0", "optim.decay=constant",
            f"output.dir={tmp_path / 'two'}", *common,
            *[f"autoencoder.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()], "--device", "cpu"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                           "-m", "flashi2v.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("one", "two")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for k in one:
        if not k.startswith(("mean", "std")):  # the statistics come from each run's own export clips
            torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-5, msg=k)


def test_the_fitted_linear_path_is_the_principal_component_projection():
    """Before training (the convolutions add zero), frame 0 comes back as its 8 x 8 blocks projected on their
    leading principal components around the per-channel mean; a wrong weight layout or bias breaks this."""
    model = CausalVideoAutoencoder(**TINY)  # fresh: the convolutions' last layers start at zero
    x = video(9, 32, seed=3)
    model.fit_linear(x)
    with torch.no_grad():
        back = model.decode_raw(model.encode_raw(x))
    first = x[:, :, 0].double()
    centre = first.mean(dim=(0, 2, 3)).view(1, 3, 1, 1)
    blocks = torch.nn.functional.unfold(first - centre, 8, stride=8).transpose(1, 2).reshape(-1, 192)
    basis = torch.linalg.svd(blocks, full_matrices=False)[2][:8]
    projected = (blocks @ basis.T @ basis).reshape(2, -1, 192).transpose(1, 2)
    expected = torch.nn.functional.fold(projected, (32, 32), 8, stride=8) + centre
    torch.testing.assert_close(back[:, :, 0].double(), expected, rtol=0, atol=1e-4)
    assert (back[:, :, 1:] - x[:, :, 1:]).square().mean() < x[:, :, 1:].var()  # the groups' path is fitted too


def test_a_linear_encoder_keeps_its_latent_space_while_the_decoder_trains(photos, tmp_path):
    """autoencoder.linear_encoder: the encoder (the fitted linear path alone) and its latent statistics are fixed
    before the first step, so the latents a DiT trained on meanwhile are the exported model's; the decoder learns."""
    cfg = config(photos, tmp_path / "run", "recipe.steps=6", "optim.lr=3e-3", "autoencoder.linear_encoder=true",
                 "recipe.linear_fit_clips=16")
    train_autoencoder(cfg, device="cpu", progress=False)
    first = CausalVideoAutoencoder.from_pretrained(tmp_path / "run" / "autoencoder")
    assert first.linear_encoder and not hasattr(first, "frame_encoder")
    assert first.std0.ne(1.0).all() and first.std.ne(1.0).all()  # statistics fitted with the linear path
    x = video(5, 32, seed=4)
    z = first.encode(x)
    # continue from it: the encoder and statistics stay as they were, the decoder moves
    train_autoencoder(config(photos, tmp_path / "more", "recipe.steps=6", "optim.lr=3e-3",
                             "autoencoder.linear_encoder=true", f"autoencoder.init={tmp_path / 'run' / 'autoencoder'}"),
                      device="cpu", progress=False)
    second = CausalVideoAutoencoder.from_pretrained(tmp_path / "more" / "autoencoder")
    torch.testing.assert_close(second.encode(x), z, rtol=0, atol=0)
    before, after = first.state_dict(), second.state_dict()
    assert not torch.equal(before["decode_group.0.weight"], after["decode_group.0.weight"])


def test_pixel_scales_of_a_linear_encoder_are_its_channels_spread():
    """With the fitted (orthonormal) linear path, one unit of normalised channel c moves std_c of pixel length: the
    weights a DiT's loss uses (recipe.channel_loss_power). A convolutional encoder has none, and says so."""
    model = CausalVideoAutoencoder(**TINY, linear_encoder=True)
    x = video(9, 32, seed=5)
    model.fit_linear(x).fit_statistics([x])
    scales = model.pixel_scales(3)
    assert scales.shape == (8, 3)
    torch.testing.assert_close(scales[:, 0], model.std0, rtol=1e-4, atol=0)
    torch.testing.assert_close(scales[:, 2], model.std, rtol=1e-4, atol=0)
    # measured: decoding a unit step in channel 0 of latent frame 0 moves the frame by that much (linear decoder)
    with torch.no_grad():
        z = model.encode(x)
        step = torch.zeros_like(z)
        step[:, 0, 0] = 1.0
        moved = (model.decode_raw(model.denormalise(z + step)) - model.decode_raw(model.denormalise(z)))[:, :, 0]
    torch.testing.assert_close(moved[0, :, :8, :8].norm(), model.std0[0], rtol=1e-3, atol=0)
    with pytest.raises(FlashI2VError, match="channel_loss_power"):
        tiny_autoencoder().pixel_scales(3)
    with pytest.raises(ValueError, match="linear_path"):
        CausalVideoAutoencoder(**TINY, linear_path=False, linear_encoder=True)


def test_the_dit_trainer_weights_its_loss_by_a_linear_encoders_channels(photos, tmp_path):
    """recipe.channel_loss_power with a linear-encoder autoencoder as the VAE: the trainer reads pixel_scales, so the
    same steps give another loss than unweighted (and a convolutional encoder is refused in one line)."""
    from flashi2v.random_components import TINY_Z_DIM, random_tiny_pipeline
    from flashi2v.train import load_config, train

    folder = tmp_path / "pipe"
    random_tiny_pipeline(seed=0).save_pretrained(folder)
    shutil.rmtree(folder / "vae")
    codec = CausalVideoAutoencoder(**{**TINY, "channels": TINY_Z_DIM}, linear_encoder=True)
    clips = video(9, 32)
    codec.fit_linear(clips).fit_statistics([clips])
    codec.save_pretrained(folder / "vae")

    def losses(power, run):
        cfg = load_config("tiny", [f"model.components={folder}", f"data.photos={photos}", "data.num_frames=5",
                                   "data.height=32", "data.width=32", "data.num_workers=0", "recipe.batch_size=2",
                                   "recipe.steps=2", "recipe.precision=fp32", f"output.dir={tmp_path / run}",
                                   "output.tensorboard=false", f"recipe.channel_loss_power={power}"])
        return train(cfg, device="cpu", progress=False).losses

    plain, weighted = losses(0, "plain"), losses(1, "weighted")
    assert all(torch.isfinite(torch.tensor(weighted)))
    assert abs(weighted[0] - plain[0]) > 1e-4 * abs(plain[0])
    shutil.rmtree(folder / "vae")
    CausalVideoAutoencoder(**{**TINY, "channels": TINY_Z_DIM}).save_pretrained(folder / "vae")  # no pixel scales
    with pytest.raises(FlashI2VError, match="channel_loss_power"):
        losses(1, "conv")
