"""The encoder adapters load the real library classes from disk and reproduce Wan2.1's numerics."""

from __future__ import annotations

import pytest
import torch
from helpers_encoders import TINY_TEXT_DIM, TINY_Z_DIM, make_tiny_text_encoder_and_tokenizer, make_tiny_vae

from flashi2v.encoders import UMT5TextEncoder, WanVAE
from flashi2v.errors import FlashI2VError


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan") / "vae"
    make_tiny_vae().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vae(vae_folder):
    return WanVAE.from_pretrained(vae_folder)


@pytest.fixture(scope="module")
def text_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan_text")
    model, tokenizer = make_tiny_text_encoder_and_tokenizer(root)
    model.save_pretrained(root / "text_encoder")
    tokenizer.save_pretrained(root / "tokenizer")
    return root / "text_encoder", root / "tokenizer"


@pytest.fixture(scope="module")
def text_encoder(text_folders):
    return UMT5TextEncoder.from_pretrained(*text_folders)


def _video(frames=5, h=32, w=32, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, h, w, generator=g) * 2 - 1


def test_vae_loads_float32_with_wan_factors(vae, vae_folder):
    raw = make_tiny_vae()
    assert isinstance(vae, torch.nn.Module)
    assert all(p.dtype == torch.float32 for p in vae.parameters())
    assert not any(p.requires_grad for p in vae.parameters())
    for name, tensor in raw.state_dict().items():
        torch.testing.assert_close(vae.vae.state_dict()[name], tensor)
    assert (vae.latent_channels, vae.spatial_factor, vae.temporal_factor) == (TINY_Z_DIM, 8, 4)


def test_vae_encode_decode_shapes(vae):
    pixels = _video(frames=5, h=32, w=32, batch=2)
    latents = vae.encode(pixels)
    assert latents.shape == (2, TINY_Z_DIM, 2, 4, 4) and latents.dtype == torch.float32
    out = vae.decode(latents)
    assert out.shape == pixels.shape and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1


def test_vae_single_frame_is_one_latent_frame(vae):
    assert vae.encode(_video(frames=1, h=16, w=24)).shape == (1, TINY_Z_DIM, 1, 2, 3)


def test_vae_normalisation_uses_config_stats(vae):
    raw = make_tiny_vae()
    mean = torch.tensor(raw.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(raw.config.latents_std).view(1, -1, 1, 1, 1)
    assert not torch.allclose(std, torch.ones_like(std))
    pixels = _video()
    with torch.no_grad():
        mode = raw.encode(pixels).latent_dist.mode()
        expected_pixels = raw.decode(mode).sample.clamp(-1, 1)
    latents = vae.encode(pixels)
    torch.testing.assert_close(latents, (mode - mean) / std, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vae.decode(latents), expected_pixels, rtol=1e-4, atol=1e-4)


def test_vae_save_and_tiling(vae, tmp_path):
    vae.save_pretrained(tmp_path / "vae")
    again = WanVAE.from_pretrained(tmp_path / "vae", tiling=True)
    assert again.vae.use_tiling and not vae.vae.use_tiling
    pixels = _video(frames=1, h=16, w=16)
    torch.testing.assert_close(again.encode(pixels), vae.encode(pixels))


def test_vae_rejects_bad_shapes(vae):
    with pytest.raises(FlashI2VError, match="1 \\+ 4"):
        vae.encode(_video(frames=4))
    with pytest.raises(FlashI2VError, match="divisible by 8"):
        vae.encode(_video(h=30))
    with pytest.raises(FlashI2VError, match="latents"):
        vae.decode(torch.zeros(1, 3, 1, 2, 2))


def test_vae_missing_folder_errors(tmp_path, vae_folder):
    with pytest.raises(FlashI2VError, match="does not exist"):
        WanVAE.from_pretrained(tmp_path / "nope")
    with pytest.raises(FlashI2VError, match="did you mean .*vae"):
        WanVAE.from_pretrained(vae_folder.parent)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(FlashI2VError, match="no weights"):
        WanVAE.from_pretrained(tmp_path / "empty")


def test_text_encoder_roundtrip(text_encoder, tmp_path):
    assert text_encoder.dim == TINY_TEXT_DIM
    text_encoder.save_pretrained(tmp_path / "te", tmp_path / "tok")
    again = UMT5TextEncoder.from_pretrained(tmp_path / "te", tmp_path / "tok")
    prompts = ["a cat runs on the grass"]
    torch.testing.assert_close(again.encode(prompts, max_length=16), text_encoder.encode(prompts, max_length=16))


def test_text_embeddings_zero_beyond_real_length(text_encoder):
    prompts = ["a cat", "a red car drives in the city at night"]
    emb = text_encoder.encode(prompts, max_length=16)
    assert emb.shape == (2, 16, TINY_TEXT_DIM) and emb.dtype == torch.float32
    lengths = [len(text_encoder.tokenizer(p).input_ids) for p in prompts]
    assert lengths[0] < lengths[1] < 16
    for row, n in zip(emb, lengths):
        assert (row[n:] == 0).all()
        assert (row[:n].abs().sum(dim=-1) > 0).all()


def test_text_embeddings_match_masked_encoder(text_encoder):
    """Real positions equal the library encoder run on the unpadded prompt alone."""
    prompts = ["a dog", "the blue bird flies in the sky"]
    emb = text_encoder.encode(prompts, max_length=20)
    for prompt, row in zip(prompts, emb):
        ids = text_encoder.tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            alone = text_encoder.model(input_ids=ids).last_hidden_state[0]
        torch.testing.assert_close(row[: ids.shape[1]], alone, rtol=1e-4, atol=1e-5)


def test_text_truncates_long_prompt(text_encoder):
    emb = text_encoder.encode(" ".join(["cat"] * 40), max_length=8)
    assert emb.shape == (1, 8, TINY_TEXT_DIM)
    assert (emb[0].abs().sum(dim=-1) > 0).all()


def test_text_encoder_missing_folder_errors(tmp_path, text_folders):
    with pytest.raises(FlashI2VError, match="text_encoder"):
        UMT5TextEncoder.from_pretrained(tmp_path / "nope", text_folders[1])
    with pytest.raises(FlashI2VError, match="tokenizer"):
        UMT5TextEncoder.from_pretrained(text_folders[0], tmp_path / "nope")


def test_vae_stays_float32_under_autocast(vae):
    pixels = _video(frames=1, h=16, w=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        latents = vae.encode(pixels)
    torch.testing.assert_close(latents, vae.encode(pixels))
