"""Checkpoint layouts: detection, loading, conversion to our format and back, inspection, errors.

Synthetic checkpoints carry the exact key names of the shared tables (tests/helpers_layouts.py),
with tiny shapes; the full-size 1.3B layouts are checked on the meta device.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers_layouts import (
    from_diffusers,
    is_flashi2v,
    make_released_like_vae,
    make_umt5,
    mindspeed_keys_1_3b,
    mindspeed_rows,
    mindspeed_to_original,
    original_keys_1_3b,
    original_templates,
    outputs,
    randomized_tiny,
    save_mindspeed,
    to_diffusers,
    to_mindspeed,
    vae_diffusers_to_original,
)
from safetensors.torch import load_file, save_file

from flashi2v import FlashI2VError, FlashI2VTransformer, preset
from flashi2v.weights import (
    convert_checkpoint,
    export_state_dict,
    inspect_checkpoint,
    layouts,
    load_transformer_state,
    load_transformer_weights,
)
from flashi2v.model.io import save_state_sharded, save_transformer
from flashi2v.weights.components import (
    UMT5_MODULES,
    load_umt5_original,
    load_wan_vae_original,
    umt5_transformers_to_original,
)
from flashi2v.weights.readers import load_pickle

TINY_HEADS = 4
TINY_ARGS = {"num_heads": TINY_HEADS, "text_len": 16}  # what a bare tiny file cannot tell
WAN_TINY_CONFIG = {"_class_name": "WanModel", "dim": 64, "num_heads": TINY_HEADS, "text_len": 16}
DIFFUSERS_TINY_CONFIG = {"_class_name": "WanTransformer3DModel", "num_attention_heads": TINY_HEADS,
                         "attention_head_dim": 16}
P_1X3X3 = 1_421_475_984
P_3X3X3 = 1_421_512_848


def _tensors(state: dict) -> dict:
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k, value in a.items():
        assert value.dtype == b[k].dtype and torch.equal(value, b[k]), k


def _write(state: dict, path, config: dict | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    if config is not None:
        (path.parent / "config.json").write_text(json.dumps(config))
    return path


# -- synthetic checkpoints, one per layout --------------------------------------------------------


def make_checkpoint(kind: str, tmp_path, dtype=torch.float32):
    """(path to pass, source model, source state as written, layout name, load kwargs)."""
    t2v = kind in ("wan-original", "wan-original-sharded", "wan-diffusers")
    kernel = "3x3x3" if kind == "mindspeed" else "1x3x3"
    model = randomized_tiny(seed=3, proj_kernel=kernel, t2v=t2v).to(dtype)
    ours = {k: v.detach().clone() for k, v in model.state_dict().items()}
    backbone = {k: v for k, v in ours.items() if not is_flashi2v(k)}
    if kind == "wan-original":
        path = _write(backbone, tmp_path / "Wan2.1-T2V" / "diffusion_pytorch_model.safetensors", WAN_TINY_CONFIG)
        return path.parent, model, backbone, "wan-original", {}
    if kind == "wan-original-sharded":
        folder = tmp_path / "Wan2.1-T2V-sharded"
        save_state_sharded(backbone, folder, max_shard_size=20_000, weights_name="diffusion_pytorch_model.safetensors")
        (folder / "config.json").write_text(json.dumps(WAN_TINY_CONFIG))
        assert len(list(folder.glob("diffusion_pytorch_model-0000*-of-*.safetensors"))) > 1
        return folder / "diffusion_pytorch_model.safetensors.index.json", model, backbone, "wan-original", {}
    if kind == "wan-diffusers":
        state = to_diffusers(ours)
        path = _write(state, tmp_path / "Diffusers" / "transformer" / "diffusion_pytorch_model.safetensors",
                      DIFFUSERS_TINY_CONFIG)
        return path.parent, model, state, "wan-diffusers", {"text_len": 16}  # diffusers configs have no text_len
    if kind == "flashi2v-gpu-pt":
        return _write(ours, tmp_path / "gpu" / "flashi2v.pt"), model, ours, "flashi2v-gpu", TINY_ARGS
    if kind == "flashi2v-gpu-safetensors":
        path = _write(ours, tmp_path / "gpu_st" / "flashi2v.safetensors", WAN_TINY_CONFIG)
        return path, model, ours, "flashi2v-gpu", {}
    if kind == "mindspeed":
        path = tmp_path / "flashi2v_1_3B.pt"
        save_mindspeed(path, ours)
        return path, model, to_mindspeed(ours), "mindspeed", TINY_ARGS
    raise AssertionError(kind)


KINDS = ["wan-original", "wan-original-sharded", "wan-diffusers", "flashi2v-gpu-pt", "flashi2v-gpu-safetensors",
         "mindspeed"]


# -- the tables agree with the model and the library ----------------------------------------------


def test_model_names_are_the_wan_original_table():
    assert {layouts.template(k)[0] for k in randomized_tiny().state_dict()} == original_templates()


def test_library_diffusers_table_equals_shared_table():
    """Our table comes from diffusers' own converter; it must equal the shared tsv."""
    from wan_keys import original_to_diffusers_rules

    assert layouts.diffusers_table() == original_to_diffusers_rules()


def test_library_mindspeed_table_equals_doc():
    for ms, orig in mindspeed_to_original().items():
        if orig is None:
            assert ms.endswith("._extra_state")
        else:
            assert layouts.to_ours(ms.format(7), "mindspeed") == orig.format(7)
            assert layouts.from_ours(orig.format(7), "mindspeed") == ms.format(7)


# -- full size on the meta device ------------------------------------------------------------------


def _meta(shapes: dict) -> dict:
    return {k: torch.empty(s, device="meta", dtype=torch.bfloat16) for k, s in shapes.items() if s is not None}


def _full_size_state(layout: str, kernel: str) -> dict:
    original = original_keys_1_3b()  # 1x3x3 in the tsv
    ms_shapes = mindspeed_keys_1_3b()  # 3x3x3 in the doc
    rules = mindspeed_to_original()
    if kernel == "3x3x3":
        for ms, orig in rules.items():
            if orig and orig.startswith("learnable_proj."):
                original[orig] = ms_shapes[ms]
    if layout == "wan-original":
        return _meta({k: s for k, s in original.items() if not is_flashi2v(k)})
    if layout == "flashi2v-gpu":
        return _meta(original)
    if layout == "wan-diffusers":
        from wan_keys import _rows

        return _meta({k: tuple(int(n) for n in s.strip("()").split(",") if n.strip())
                      for k, s in _rows("diffusers_wan_1.3b.tsv")})
    ms = {k: s for k, s in ms_shapes.items()}
    if kernel == "1x3x3":
        for key in ms:
            if key.startswith("learnable_proj.") and key.endswith("weight"):
                ms[key] = original[rules[key]]
    return {**_meta(ms), **{k: None for k, s in ms.items() if s is None}}


@pytest.mark.parametrize("kernel", ["1x3x3", "3x3x3"])
@pytest.mark.parametrize("layout", ["wan-original", "wan-diffusers", "flashi2v-gpu", "mindspeed"])
def test_full_size_layout_maps_one_to_one(layout, kernel):
    state = _full_size_state(layout, kernel)
    tensors = {k: v for k, v in state.items() if v is not None}
    assert layouts.detect_layout(state) == layout
    renamed = [layouts.to_ours(k, layout) for k in tensors]
    assert len(set(renamed)) == len(renamed)  # no two keys land on one
    model, report = load_transformer_state(state, proj_kernel=kernel if layouts.LAYOUTS[layout].t2v else None)
    assert report.ok and report.loaded == len(tensors) and report.layout == layout
    assert model.config == preset("flashi2v-1.3b", proj_kernel=kernel)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(tensors[from_k].shape) for k, from_k in zip(renamed, tensors)} == \
        {k: s for k, s in expected.items() if k in renamed}
    leftover = set(expected) - set(renamed)
    if layouts.LAYOUTS[layout].t2v:
        assert leftover == {k for k in expected if is_flashi2v(k)}
        assert report.zero_init == ["fourier_embedding", "learnable_proj"]
    else:
        assert leftover == set()
        assert sum(math.prod(s) for s in expected.values()) == (P_3X3X3 if kernel == "3x3x3" else P_1X3X3)


# -- tiny synthetic checkpoints: load, compare outputs, convert, round trip -------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_checkpoint_loads_with_identical_outputs(kind, tmp_path):
    path, source, _, layout, kwargs = make_checkpoint(kind, tmp_path)
    model, report = load_transformer_weights(path, **kwargs)
    assert report.layout == layout and report.ok
    assert model.config == source.config
    for ours, theirs in zip(outputs(model), outputs(source)):
        assert torch.equal(ours, theirs)
    if layouts.LAYOUTS[layout].t2v:
        assert report.zero_init == ["fourier_embedding", "learnable_proj"]
        assert not outputs(model)[1].any()  # phi(s) = 0: FlashI2V starts as the T2V model
        assert "initialised from T2V" in report.summary()


@pytest.mark.parametrize("kind", KINDS)
def test_convert_and_round_trip_bit_exact(kind, tmp_path):
    path, source, written, layout, kwargs = make_checkpoint(kind, tmp_path)
    text = convert_checkpoint(path, tmp_path / "ours", **kwargs)
    assert f"layout: {layout}" in text
    loaded = FlashI2VTransformer.from_pretrained(tmp_path / "ours" / "transformer")
    for ours, theirs in zip(outputs(loaded), outputs(source)):
        assert torch.equal(ours, theirs)
    _assert_same_tensors(export_state_dict(loaded, layout), _tensors(written))


def test_bf16_is_preserved_and_dtype_override(tmp_path):
    path, source, written, _, kwargs = make_checkpoint("mindspeed", tmp_path, dtype=torch.bfloat16)
    model, report = load_transformer_weights(path, **kwargs)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and report.dtypes == {"bfloat16": len(source.state_dict())}
    _assert_same_tensors(export_state_dict(model, "mindspeed"), _tensors(written))
    model32, _ = load_transformer_weights(path, dtype="float32", **kwargs)
    assert {p.dtype for p in model32.parameters()} == {torch.float32}


def test_t2v_bf16_source_gives_bf16_flashi2v_modules(tmp_path):
    path, *_ = make_checkpoint("wan-original", tmp_path, dtype=torch.bfloat16)
    model, _ = load_transformer_weights(path)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_mindspeed_prefers_ema_and_convert_keeps_both(tmp_path):
    raw, ema = randomized_tiny(seed=1, proj_kernel="3x3x3"), randomized_tiny(seed=2, proj_kernel="3x3x3")
    path = tmp_path / "model_optim_rng.pt"
    marker = tmp_path / "pwned"
    save_mindspeed(path, raw.state_dict(), ema.state_dict(), marker=marker)
    model, report = load_transformer_weights(path, **TINY_ARGS)
    assert report.container.endswith("ema_model") and report.dropped == 16  # 8 _extra_state per block
    assert torch.equal(outputs(model)[0], outputs(ema)[0])
    raw_model, _ = load_transformer_weights(path, **TINY_ARGS, ema=False)
    assert torch.equal(outputs(raw_model)[0], outputs(raw)[0])
    convert_checkpoint(path, tmp_path / "ours", **TINY_ARGS)
    assert torch.equal(outputs(FlashI2VTransformer.from_pretrained(tmp_path / "ours" / "transformer"))[0], outputs(raw)[0])
    assert torch.equal(outputs(FlashI2VTransformer.from_pretrained(tmp_path / "ours" / "transformer_ema"))[0], outputs(ema)[0])
    assert not marker.exists()  # the pickled os.system call was never run


def test_restricted_unpickler_keeps_args_inert(tmp_path):
    path = tmp_path / "ms.pt"
    marker = tmp_path / "pwned"
    save_mindspeed(path, randomized_tiny().state_dict(), marker=marker)
    obj = load_pickle(path)
    assert type(obj["args"]).__name__ == "Namespace" and "inert" in repr(obj["args"])
    assert obj["args"].state["mm"].origin == "mindspeed_mm.configs.config.MMConfig"
    assert not marker.exists()
    assert "mindspeed_mm" not in __import__("sys").modules


def test_gpu_branch_iteration_folder_prefers_ema(tmp_path):
    raw, ema = randomized_tiny(seed=1), randomized_tiny(seed=2)
    folder = tmp_path / "iter_000001000"
    _write(raw.state_dict(), folder / "model_state_dict.pt")
    _write(ema.state_dict(), folder / "ema_model_state_dict.pt")
    model, report = load_transformer_weights(folder, **TINY_ARGS)
    assert report.layout == "flashi2v-gpu" and torch.equal(outputs(model)[0], outputs(ema)[0])


def test_our_format_sharded_round_trip(tmp_path):
    model = randomized_tiny(seed=4)
    save_transformer(model, tmp_path / "t", max_shard_size=30_000)
    assert (tmp_path / "t" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "t").glob("model-*-of-*.safetensors"))) > 1
    _assert_same_tensors(FlashI2VTransformer.from_pretrained(tmp_path / "t").state_dict(), model.state_dict())
    again, report = load_transformer_weights(tmp_path / "t")
    assert report.layout == "flashi2v-gpu" and torch.equal(outputs(again)[0], outputs(model)[0])
    save_transformer(model, tmp_path / "t")  # re-save unsharded: stale shards must go
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["config.json", "model.safetensors"]


def test_wrapper_prefix_is_stripped(tmp_path):
    model = randomized_tiny()
    path = _write({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt")
    loaded, report = load_transformer_weights(path, **TINY_ARGS)
    assert report.layout == "flashi2v-gpu" and torch.equal(outputs(loaded)[0], outputs(model)[0])


def test_forced_layout(tmp_path):
    path, *_ = make_checkpoint("flashi2v-gpu-pt", tmp_path)
    _, report = load_transformer_weights(path, layout="flashi2v-gpu", **TINY_ARGS)
    assert report.layout == "flashi2v-gpu"
    with pytest.raises(FlashI2VError, match="unknown layout"):
        load_transformer_weights(path, layout="nonsense", **TINY_ARGS)


# -- errors ----------------------------------------------------------------------------------------


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_wrong_shape_is_an_error_unless_partial(tmp_path):
    state = randomized_tiny().state_dict()
    state["blocks.1.ffn.0.weight"] = torch.zeros(100, 64)
    path = _write(state, tmp_path / "bad.safetensors", WAN_TINY_CONFIG)
    with pytest.raises(FlashI2VError) as err:
        load_transformer_weights(path)
    assert "shape-mismatched" in _one_line(err) and "blocks.1.ffn.0.weight" in str(err.value)
    with pytest.warns(UserWarning, match="blocks.1.ffn.0.weight"):
        model, report = load_transformer_weights(path, allow_partial=True)
    assert report.mismatched and model.blocks[1].ffn[0].weight.shape == (128, 64)
    assert not model.blocks[1].ffn[0].weight.is_meta


def test_missing_key_is_an_error_unless_partial(tmp_path):
    state = randomized_tiny().state_dict()
    del state["blocks.0.cross_attn.k.weight"]
    path = _write(state, tmp_path / "m.pt")
    with pytest.raises(FlashI2VError) as err:
        load_transformer_weights(path, **TINY_ARGS)
    assert "1 missing" in _one_line(err) and "blocks.0.cross_attn.k.weight" in str(err.value)
    with pytest.warns(UserWarning):
        model, report = load_transformer_weights(path, **TINY_ARGS, allow_partial=True)
    assert report.missing == ["blocks.0.cross_attn.k.weight"]
    assert not any(p.is_meta for p in model.parameters())


def test_unexpected_key_is_an_error(tmp_path):
    state = {**randomized_tiny().state_dict(), "blocks.0.extra.weight": torch.zeros(3)}
    with pytest.raises(FlashI2VError, match="1 unexpected"):
        load_transformer_state(state, **TINY_ARGS)


def test_partial_flashi2v_modules_are_missing_not_t2v(tmp_path):
    state = randomized_tiny().state_dict()
    del state["learnable_proj.proj.2.bias"]
    with pytest.raises(FlashI2VError, match="learnable_proj.proj.2.bias"):
        load_transformer_state(state, **TINY_ARGS)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_file_is_a_clear_error(tmp_path, suffix):
    path = _write(randomized_tiny().state_dict(), tmp_path / f"w{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FlashI2VError) as err:
        load_transformer_weights(path, **TINY_ARGS)
    assert "truncated or corrupt" in _one_line(err)


def test_unknown_heads_and_unknown_layout_errors(tmp_path):
    path = _write(randomized_tiny().state_dict(), tmp_path / "noconfig.pt")
    with pytest.raises(FlashI2VError, match="num_heads"):
        load_transformer_weights(path)
    with pytest.raises(FlashI2VError, match="cannot tell the weight layout"):
        load_transformer_state({"foo.weight": torch.zeros(2)})


def test_missing_shard_is_an_error(tmp_path):
    path, *_ = make_checkpoint("wan-original-sharded", tmp_path)
    next(path.parent.glob("*-00002-of-*.safetensors")).unlink()
    with pytest.raises(FlashI2VError, match="lacks 1 shard"):
        load_transformer_weights(path)


# -- inspect ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_inspect_names_the_layout(kind, tmp_path):
    path, source, _, layout, _ = make_checkpoint(kind, tmp_path)
    text = inspect_checkpoint(path)
    assert f"layout: {layout}" in text
    assert f"projection: {source.config.proj_kernel}" in text
    assert "problems: none" in text
    total = sum(v.numel() for k, v in source.state_dict().items() if not (layouts.LAYOUTS[layout].t2v and is_flashi2v(k)))
    assert f"parameters: {total:,}" in text


def test_inspect_lists_problems(tmp_path):
    state = randomized_tiny().state_dict()
    del state["head.head.bias"]
    text = inspect_checkpoint(_write(state, tmp_path / "x.pt"))
    assert "1 missing: head.head.bias" in text and "heads ? (pass num_heads)" in text


# -- VAE, umT5 and a whole Wan2.1 download folder --------------------------------------------------


def _original_vae_state(vae) -> dict:
    return {vae_diffusers_to_original(k): v for k, v in vae.state_dict().items()}


def test_wan_vae_original_converts_with_diffusers_converter(tmp_path):
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    vae = make_released_like_vae()
    original = _original_vae_state(vae)
    assert set(convert_wan_vae_to_diffusers(dict(original))) == set(vae.state_dict())  # our inverse is exact
    path = _write(original, tmp_path / "Wan2.1_VAE.pth")
    loaded = load_wan_vae_original(path)
    assert loaded.config.base_dim == 8 and list(loaded.config.dim_mult) == [1, 2, 4, 4]
    pixels = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.encode(pixels).latent_dist.mode(), vae.encode(pixels).latent_dist.mode())
    assert "layout: wan-vae-original" in inspect_checkpoint(path)


def test_umt5_original_converts(tmp_path):
    model = make_umt5(120).to(torch.bfloat16)
    original = {umt5_transformers_to_original(k): v for k, v in model.state_dict().items()
                if k != "encoder.embed_tokens.weight"}
    assert {k.split(".")[0] for k in original} == {"token_embedding", "norm", "blocks"}
    assert len(UMT5_MODULES) == 12
    path = _write(original, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    loaded = load_umt5_original(path)
    assert loaded.dtype == torch.bfloat16 and loaded.config.num_heads == 4 and loaded.config.d_kv == 8
    ids = torch.randint(0, 120, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids, attention_mask=mask).last_hidden_state,
                           model(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_convert_wan_download_folder_to_pipeline(tmp_path):
    """A Wan2.1-T2V-1.3B-like folder (DiT, Wan2.1_VAE.pth, umT5 .pth, google/umt5-xxl) -> a pipeline folder."""
    from flashi2v.pipeline import FlashI2VPipeline
    from flashi2v.random_components import make_tiny_tokenizer

    src = tmp_path / "Wan2.1-T2V-1.3B"
    dit = randomized_tiny(seed=5, t2v=True)
    _write({k: v for k, v in dit.state_dict().items() if not is_flashi2v(k)},
           src / "diffusion_pytorch_model.safetensors", WAN_TINY_CONFIG)
    vae = make_released_like_vae()
    _write(_original_vae_state(vae), src / "Wan2.1_VAE.pth")
    tokenizer = make_tiny_tokenizer()
    tokenizer.save_pretrained(src / "google" / "umt5-xxl")
    t5 = make_umt5(len(tokenizer)).to(torch.bfloat16)
    _write({umt5_transformers_to_original(k): v for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"},
           src / "models_t5_umt5-xxl-enc-bf16.pth")
    text = convert_checkpoint(src, tmp_path / "pipe", proj_kernel="3x3x3")
    assert "initialised from T2V" in text and "vae: converted" in text and "note:" not in text
    pipe = FlashI2VPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.transformer.config.proj_kernel == "3x3x3"
    assert torch.equal(outputs(pipe.transformer)[0], outputs(dit)[0])
    stored = load_file(str(tmp_path / "pipe" / "text_encoder" / "model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.bfloat16}  # kept as in the .pth
    out = pipe(torch.zeros(3, 32, 32), "a cat", num_frames=5, height=32, width=32, steps=1, seed=0, progress=False)
    assert out.frames.shape == (5, 32, 32, 3)


def test_convert_diffusers_pipeline_folder_copies_components(tmp_path):
    from flashi2v.random_components import random_tiny_pipeline

    pipe = random_tiny_pipeline(seed=0)
    src = tmp_path / "Wan2.1-T2V-1.3B-Diffusers"
    pipe.vae.save_pretrained(src / "vae")
    pipe.text_encoder.save_pretrained(src / "text_encoder", src / "tokenizer")
    state = to_diffusers(pipe.transformer.state_dict())
    _write(state, src / "transformer" / "diffusion_pytorch_model.safetensors", DIFFUSERS_TINY_CONFIG)
    assert set(from_diffusers(state)) == {k for k in pipe.transformer.state_dict() if not is_flashi2v(k)}
    text = convert_checkpoint(src, tmp_path / "pipe")
    assert "vae: copied" in text and "text_encoder: copied" in text
    _assert_same_tensors(load_file(str(tmp_path / "pipe" / "vae" / "diffusion_pytorch_model.safetensors")),
                         load_file(str(src / "vae" / "diffusion_pytorch_model.safetensors")))


def test_mindspeed_doc_rows_cover_every_tensor():
    rows = mindspeed_rows()
    assert sum(s is not None for _, s in rows) == 50 and sum(s is None for _, s in rows) == 8


# -- command line ----------------------------------------------------------------------------------


def _local_parser():
    import argparse

    from flashi2v.weights.cli import add_convert_parser, add_inspect_parser

    parser = argparse.ArgumentParser(prog="flashi2v")
    sub = parser.add_subparsers(dest="command")
    add_convert_parser(sub)
    add_inspect_parser(sub)
    return parser


def test_cli_functions_convert_and_inspect(tmp_path, capsys):
    path, *_ = make_checkpoint("mindspeed", tmp_path)
    args = _local_parser().parse_args(["inspect", str(path), "--num-heads", "4"])
    args.func(args)
    assert "layout: mindspeed" in capsys.readouterr().out
    args = _local_parser().parse_args(["convert", str(path), str(tmp_path / "out"), "--num-heads", "4",
                                       "--dtype", "bf16", "--layout", "mindspeed"])
    args.func(args)
    assert "wrote" in capsys.readouterr().out
    assert FlashI2VTransformer.from_pretrained(tmp_path / "out" / "transformer").patch_embedding.weight.dtype == torch.bfloat16


def _wired_main():
    from flashi2v import cli

    commands = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    if "convert" not in commands or "inspect" not in commands:
        pytest.skip("convert / inspect are not registered in flashi2v.cli yet")
    return cli.main


@pytest.mark.parametrize("problem", ["shape", "missing", "truncated"])
def test_cli_bad_checkpoint_exits_non_zero_with_one_line(problem, tmp_path, capsys):
    main = _wired_main()
    state = randomized_tiny().state_dict()
    if problem == "shape":
        state["blocks.0.self_attn.q.weight"] = torch.zeros(64, 65)
    if problem == "missing":
        del state["time_projection.1.bias"]
    path = _write(state, tmp_path / "w.safetensors", WAN_TINY_CONFIG)
    if problem == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    assert main(["convert", str(path), str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("flashi2v: error:")


@pytest.mark.parametrize("kind", ["wan-original", "wan-diffusers", "flashi2v-gpu-safetensors", "mindspeed"])
def test_cli_inspect_prints_layout(kind, tmp_path, capsys):
    main = _wired_main()
    path, _, _, layout, _ = make_checkpoint(kind, tmp_path)
    assert main(["inspect", str(path)]) == 0
    assert f"layout: {layout}" in capsys.readouterr().out


def test_export_to_every_layout_and_back(tmp_path):
    from flashi2v.weights import export_transformer

    model = randomized_tiny(seed=6, proj_kernel="3x3x3")
    save_transformer(model, tmp_path / "ours")
    for layout, suffix in (("mindspeed", ".pt"), ("flashi2v-gpu", ".safetensors"), ("wan-diffusers", ".safetensors")):
        out = export_transformer(tmp_path / "ours", tmp_path / layout / f"w{suffix}", layout)
        back, report = load_transformer_weights(out, **TINY_ARGS, proj_kernel="3x3x3")
        assert report.layout == layout
        expected = model.state_dict()
        for k, v in back.state_dict().items():
            if not (layouts.LAYOUTS[layout].t2v and is_flashi2v(k)):
                assert torch.equal(v, expected[k]), (layout, k)


def test_t2v_conversion_is_deterministic(tmp_path):
    path, *_ = make_checkpoint("wan-original", tmp_path)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, _ = load_transformer_weights(path)
    assert torch.equal(torch.get_rng_state(), state)
    b, _ = load_transformer_weights(path)
    _assert_same_tensors(a.state_dict(), b.state_dict())
