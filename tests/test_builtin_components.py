"""The built-in model's components: space-to-depth codec, packaged MiniLM encoder, precomputed table."""

import pytest
import torch

from pathlib import Path

from flashi2v import FlashI2VError, FlashI2VPipeline, FlashI2VTransformer
from flashi2v.builtin import TEXT_SOURCE, write_components
from flashi2v.encoders import PrecomputedTextEncoder, SentenceTextEncoder, SpaceToDepthCodec, load_text_encoder, load_vae


EXAMPLE = str(Path(__file__).parents[1] / "assets" / "examples" / "astronaut.jpg")


def test_codec_is_exactly_invertible_and_wan_shaped():
    codec = SpaceToDepthCodec()
    pixels = torch.rand(2, 3, 17, 32, 48) * 2 - 1
    latents = codec.encode(pixels)
    assert latents.shape == (2, 192, 5, 8, 12) and codec.latent_channels == 192
    torch.testing.assert_close(codec.decode(latents), pixels, rtol=0, atol=1e-6)
    image = codec.encode(pixels[:, :, :1])  # the condition image is a 1-frame video
    torch.testing.assert_close(image, latents[:, :, :1])
    with pytest.raises(FlashI2VError, match="4k\\+1"):
        codec.encode(pixels[:, :, :4])


def test_codec_save_load(tmp_path):
    SpaceToDepthCodec(spatial=2, temporal=4, scale=0.25).save_pretrained(tmp_path / "vae")
    codec = load_vae(tmp_path / "vae")
    assert isinstance(codec, SpaceToDepthCodec) and codec.spatial == 2 and codec.scale == 0.25


@pytest.fixture(scope="module")
def minilm():
    try:
        return SentenceTextEncoder.from_source(TEXT_SOURCE)
    except FlashI2VError as err:
        pytest.skip(str(err))


def test_sentence_encoder_zeroes_padding_and_table_matches(minilm, tmp_path):
    prompts = ["the camera pans left", "a slow zoom in toward the centre of the photo"]
    emb = minilm.encode(prompts, max_length=32)
    assert emb.shape == (2, 32, 384)
    lengths = (emb.abs().sum(-1) > 0).sum(-1)
    assert lengths[0] < lengths[1] < 32
    assert emb[0, lengths[0]:].abs().max() == 0
    table = PrecomputedTextEncoder.build(minilm, prompts, 32)
    table.save_pretrained(tmp_path / "te")
    loaded = load_text_encoder(tmp_path / "te", tmp_path / "tok")
    torch.testing.assert_close(loaded.encode(prompts, 32), emb, rtol=0, atol=0)
    with pytest.raises(FlashI2VError, match="not in the precomputed"):
        loaded.encode(["something else"])


def test_pipeline_with_builtin_components_roundtrip(minilm, tmp_path):
    torch.manual_seed(0)
    transformer = FlashI2VTransformer.from_config("builtin", num_layers=1)
    folder = tmp_path / "model"
    transformer.save_pretrained(folder / "transformer")
    write_components(folder)
    pipe = FlashI2VPipeline.from_pretrained(folder)
    assert isinstance(pipe.vae, SpaceToDepthCodec) and isinstance(pipe.text_encoder, SentenceTextEncoder)
    out = pipe(EXAMPLE, "the camera pans left", num_frames=5, height=32, width=32, steps=2,
               seed=0, progress=False)
    assert out.frames.shape == (5, 32, 32, 3)
