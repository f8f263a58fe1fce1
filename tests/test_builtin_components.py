"""The built-in model's components: block-PCA codec, packaged MiniLM encoder, precomputed table."""

from pathlib import Path

import pytest
import torch
from helpers_tiny import randomize_zero_parameters

from flashi2v import FlashI2VError, FlashI2VPipeline, FlashI2VTransformer, flow
from flashi2v.builtin import TEXT_SOURCE, write_components
from flashi2v.encoders import BlockPCACodec, PrecomputedTextEncoder, SentenceTextEncoder, load_text_encoder, load_vae
from flashi2v.video import to_uint8


def smooth_video(frames=17, h=32, w=48, seed=0):
    """Low-frequency colour fields drifting over time: video-like statistics a PCA codec can fit."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(6, 3, 4, h // 8 + 2, w // 8 + 2, generator=g) * 2 - 1
    video = torch.nn.functional.interpolate(coarse, size=(frames, h + 16, w + 16), mode="trilinear")
    return torch.stack([video[i, :, :, i:i + h, 2 * i:2 * i + w] for i in range(6)])


def test_codec_is_wan_shaped_and_reconstructs_after_fit():
    videos = smooth_video()
    codec = BlockPCACodec(channels=16)
    with pytest.raises(FlashI2VError, match="4k\\+1"):
        codec.encode(videos[:, :, :4])
    codec.fit(videos[:4])
    latents = codec.encode(videos[4:])
    assert latents.shape == (2, 16, 5, 8, 12) and codec.latent_channels == 16
    train = codec.encode(videos[:4])  # about unit variance per channel on the data it was fitted to
    torch.testing.assert_close(train.transpose(0, 1).flatten(1).std(dim=1), torch.ones(16), atol=0.1, rtol=0)
    error = (codec.decode(latents) - videos[4:]).pow(2).mean()
    assert 10 * torch.log10(4 / error) > 30  # held-out PSNR of smooth video, dB
    image = codec.encode(videos[4:, :, :1])  # the condition image is a 1-frame video
    torch.testing.assert_close(image, latents[:, :, :1])
    full = BlockPCACodec(channels=48).fit(videos)  # all 48 frame-0 components: frame 0 is exact
    torch.testing.assert_close(full.decode(full.encode(videos))[:, :, 0], videos[:, :, 0], atol=1e-4, rtol=0)


def test_colour_channels_keep_block_colour_and_a_still_clip_constant():
    videos = smooth_video()
    codec = BlockPCACodec(channels=16, colour_channels=3).fit(videos[:4])
    still = videos[4:, :, :1].expand(-1, -1, 17, -1, -1)  # one frame held for 17 frames
    z = codec.encode(still)
    torch.testing.assert_close(z[:, :3, 1:], z[:, :3, :1].expand(-1, -1, 4, -1, -1), atol=1e-5, rtol=0)
    assert (z[:, 3:, 1:] - z[:, 3:, :1]).abs().max() > 1e-2  # the other channels are two different bases
    moving = videos[4:] * 0.5  # inside [-1, 1]: decode's clamp does not touch it
    block_mean = torch.nn.functional.avg_pool3d(moving[:, :, 1:], (4, 4, 4))
    back = codec.decode(codec.encode(moving))
    torch.testing.assert_close(torch.nn.functional.avg_pool3d(back[:, :, 1:], (4, 4, 4)), block_mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.nn.functional.avg_pool2d(back[:, :, 0], 4),
                               torch.nn.functional.avg_pool2d(moving[:, :, 0], 4), atol=1e-5, rtol=0)
    with pytest.raises(FlashI2VError, match="colour_channels"):
        BlockPCACodec(channels=16, colour_channels=2)


def test_codec_save_load(tmp_path):
    codec = BlockPCACodec(spatial=2, temporal=4, channels=8).fit(smooth_video(9, 16, 16))
    codec.save_pretrained(tmp_path / "vae")
    loaded = load_vae(tmp_path / "vae")
    assert isinstance(loaded, BlockPCACodec) and loaded.spatial == 2 and loaded.channels == 8
    video = smooth_video(9, 16, 16, seed=1)
    torch.testing.assert_close(loaded.encode(video), codec.encode(video), rtol=0, atol=0)
    (tmp_path / "vae" / BlockPCACodec.WEIGHTS).unlink()
    with pytest.raises(FlashI2VError, match="codec.safetensors"):
        load_vae(tmp_path / "vae")


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


def test_pipeline_with_builtin_components_roundtrip(minilm, tmp_path, example_image):
    """A folder of a transformer plus write_components' codec and MiniLM table loads as a pipeline whose video
    is the one the same parts give in memory: the codec's decode of the transformer's (non-trivial) latents."""
    torch.manual_seed(0)
    transformer = randomize_zero_parameters(FlashI2VTransformer.from_config("builtin", num_layers=1))
    folder = tmp_path / "model"
    transformer.save_pretrained(folder / "transformer")
    write_components(folder)
    pipe = FlashI2VPipeline.from_pretrained(folder)
    assert isinstance(pipe.vae, BlockPCACodec) and isinstance(pipe.text_encoder, SentenceTextEncoder)
    settings = dict(num_frames=5, height=32, width=32, steps=2, seed=0, progress=False)
    out = pipe(example_image, "the camera pans left", **settings)
    assert out.frames.shape == (5, 32, 32, 3)
    in_memory = FlashI2VPipeline(transformer.eval(), pipe.vae, pipe.text_encoder, defaults=pipe.defaults)
    torch.testing.assert_close(in_memory(example_image, "the camera pans left", **settings).latents, out.latents,
                               rtol=0, atol=0)
    assert (out.latents - pipe.prepare_noise(out.latents.shape, 0, None)).abs().mean() > 0.1
    assert torch.equal(out.frames, to_uint8(pipe.vae.decode(out.latents).permute(0, 2, 3, 4, 1))[0])


def _script(name):
    import importlib.util

    path = Path(__file__).parents[1] / "scripts" / "builtin" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_widening_onto_a_wider_codec_keeps_the_model_function():
    """scripts/builtin/map_codec.py: a model trained on a 16-channel codec, mapped onto a 32-channel fit of the
    same clips, predicts the same velocity on the old channels and zero on the added ones (until trained)."""
    map_codec = _script("map_codec")
    videos = smooth_video()
    narrow, wide = BlockPCACodec(channels=16).fit(videos[:4]), BlockPCACodec(channels=32).fit(videos[:4])
    torch.manual_seed(0)
    model = FlashI2VTransformer.from_config("tiny", in_dim=16, out_dim=16)
    for p in model.parameters():  # no zero-initialised layer: every path carries signal
        torch.nn.init.normal_(p, std=0.1)
    widened = map_codec.map_transformer(model, narrow, wide)
    assert widened.config.in_dim == widened.config.out_dim == 32
    assert widened.learnable_proj.proj[0].weight.shape[0] == 128  # phi's hidden width follows the channels

    video, t, context = videos[4:5], torch.tensor([700.0]), torch.randn(1, 7, 32)

    def velocity(net, codec):
        x, s = codec.encode(video), codec.encode(video[:, :, :1])
        with torch.no_grad():
            return net(x - net.learnable_proj(s, x.shape[2]), t, context)
    old, new = velocity(model, narrow), velocity(widened, wide)
    torch.testing.assert_close(new[:, :16], old, atol=1e-4, rtol=1e-4)
    assert new[:, 16:].abs().max() < 1e-5
    with pytest.raises(FlashI2VError, match="does not hold"):
        map_codec.codec_change(narrow, BlockPCACodec(channels=32).fit(torch.rand_like(videos[:4]) * 2 - 1), first=False)


def test_pixel_weighted_flow_loss_is_the_squared_error_in_pixels():
    """channel_loss_weights(pixel_scales, 2): the latent loss equals the decoded videos' squared error (x const)."""
    videos = smooth_video()
    codec = BlockPCACodec(channels=16).fit(videos[:4])
    latent = codec.encode(0.5 * videos[4:])  # decodes well inside [-1, 1]: no clamping below
    weights = flow.channel_loss_weights(codec.pixel_scales(latent.shape[2]), 2.0)
    assert weights.shape == (16, 5) and weights.mean().item() == pytest.approx(1.0)
    assert (weights[0, 1:] > 50 * weights[-1, 1:]).all()  # a block's brightness outweighs its finest detail
    ratios = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x, other = latent, latent + 0.05 * torch.randn(latent.shape, generator=g)
        pixels = (codec.decode(other) - codec.decode(x)).square().sum()
        eps = torch.zeros_like(x)  # velocity target eps - x = -x; the prediction -other
        ratios.append(flow.flow_loss(-other, x, eps, channel_weight=weights).item() / pixels.item())
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-3)
    plain = flow.flow_loss(-other, x, eps)
    assert flow.flow_loss(-other, x, eps, channel_weight=flow.channel_loss_weights(weights, 0.0)).item() == plain.item()
