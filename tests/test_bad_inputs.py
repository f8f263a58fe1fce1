"""Bad inputs of the library: each class gives one FlashI2VError line and leaves the inputs untouched.

Images, model folders and weights, convert's destination, clip indexes and `data filter`'s output. The
end-to-end corpus over the CLI is scripts/bad_input_corpus.py; these are the fast in-process checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from flashi2v.errors import FlashI2VError
from flashi2v.video import MIN_IMAGE_SIDE, image_to_tensor, load_image


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims width x height but holds almost no data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) +
                     chunk(b"IEND", b""))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- images ----------------------------------------------------------------------------------------


def test_sixteen_bit_png_keeps_its_brightness(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    rgb = np.asarray(load_image(tmp_path / "grey16.png")).astype(int)
    expected = np.round(ramp / 257.0).astype(int)
    assert np.abs(rgb[..., 0] - expected).max() <= 1  # PIL's own convert clips at 255: a nearly white image
    assert rgb.mean() == pytest.approx(127.5, abs=2)


def test_sixteen_bit_rgba_png_is_not_washed_out(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint16)
    rgba[..., 0], rgba[..., 3] = 32768, 65535  # half-bright red, opaque
    # PIL cannot write 16-bit RGBA; a raw 16-bit RGBA PNG is written by hand (big-endian samples).
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgba)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    (tmp_path / "rgba16.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 16, 6, 0, 0, 0))
                                          + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    rgb = np.asarray(load_image(tmp_path / "rgba16.png")).astype(int)
    assert abs(rgb[..., 0].mean() - 128) <= 1 and rgb[..., 1].max() == 0


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1", "LA"])
def test_other_modes_become_rgb(tmp_path, mode):
    image = Image.new("RGB", (24, 20), (200, 200, 200)).convert(mode)
    image.save(tmp_path / ("x.tif" if mode == "CMYK" else "x.png"))
    out = load_image(tmp_path / ("x.tif" if mode == "CMYK" else "x.png"))
    assert out.mode == "RGB" and out.size == (24, 20)


def test_transparent_pixels_are_composited_on_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)  # fully transparent black
    rgba[:10, :, :] = (255, 0, 0, 255)  # opaque red top half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = np.asarray(load_image(tmp_path / "a.png"))
    assert (rgb[:10] == (255, 0, 0)).all() and (rgb[10:] == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = 255  # white left half of a landscape image
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    upright = np.asarray(load_image(tmp_path / "phone.jpg"))
    assert upright.shape == (40, 20, 3)
    assert upright[:15].mean() > 200 and upright[25:].mean() < 50  # white ends up on top


def test_decompression_bomb_is_refused_from_the_header(tmp_path, monkeypatch):
    _png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(FlashI2VError, match=r"10,000,000,000 pixels, over the [0-9,]+-pixel limit") as err:
        load_image(tmp_path / "bomb.png")
    assert "\n" not in str(err.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # below PIL's own 2x hard limit: our check answers
    _png_header_only(tmp_path / "big.png", 40, 40)
    with pytest.raises(FlashI2VError, match="1,600 pixels, over the 1,000-pixel limit"):
        load_image(tmp_path / "big.png")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "text"])
def test_damaged_image_files(tmp_path, damage):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(good)
    data = good.read_bytes()
    bad = tmp_path / "bad.png"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": data[:40] + b"\x13" * 500, "empty": b"",
                     "text": b"hello"}[damage])
    before = _digest(bad)
    with pytest.raises(FlashI2VError, match=r"cannot read image .*bad\.png") as err:
        load_image(bad)
    assert "\n" not in str(err.value) and _digest(bad) == before


def test_missing_and_directory(tmp_path):
    with pytest.raises(FlashI2VError, match="no such file"):
        image_to_tensor(tmp_path / "nope.png", 16, 16)
    with pytest.raises(FlashI2VError, match="directory"):
        image_to_tensor(tmp_path, 16, 16)


def test_tiny_image_is_refused_and_flat_image_stays_flat(tmp_path):
    Image.new("RGB", (1, 1), (200, 30, 30)).save(tmp_path / "dot.png")
    with pytest.raises(FlashI2VError, match=f"1x1 pixels.*at least {MIN_IMAGE_SIDE}"):
        image_to_tensor(tmp_path / "dot.png", 32, 32)
    Image.new("RGB", (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE), (200, 30, 30)).save(tmp_path / "flat.png")
    flat = image_to_tensor(tmp_path / "flat.png", 48, 80)
    assert flat.std(dim=(1, 2)).max() < 1e-5  # resizing a flat image adds no pattern


@pytest.mark.parametrize("bad, match", [
    (torch.full((3, 16, 16), 200.0), r"must lie in \[-1, 1\]"),
    (torch.full((3, 16, 16), float("nan")), "NaN"),
    (torch.zeros(3, 16, 16, dtype=torch.int64), "dtype"),
    (torch.zeros(4, 16, 16), "3 x H x W"),
])
def test_bad_image_tensors(bad, match):
    with pytest.raises(FlashI2VError, match=match):
        image_to_tensor(bad, 16, 16)


# -- convert: the destination never destroys an input --------------------------------------------


def _tree(folder) -> dict:
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def tiny_source(tmp_path):
    from flashi2v import FlashI2VTransformer, preset

    torch.manual_seed(0)
    src = tmp_path / "work" / "src"
    FlashI2VTransformer.from_config(preset("tiny")).save_pretrained(src)
    return src


def test_convert_refuses_overlapping_destinations(tiny_source, tmp_path):
    from flashi2v.weights import convert_checkpoint

    before = _tree(tmp_path)
    (tmp_path / "link").symlink_to(tiny_source)
    for dst in (tiny_source, tiny_source / "out", tiny_source.parent, tmp_path / "link"):
        with pytest.raises(FlashI2VError, match=r"overlaps\) the source checkpoint"):
            convert_checkpoint(tiny_source, dst, overwrite=True)
    with pytest.raises(FlashI2VError, match=r"overlaps\) the vae"):
        convert_checkpoint(tiny_source, tmp_path / "out", vae=tmp_path / "out" / "vae")
    (tmp_path / "link").unlink()
    assert _tree(tmp_path) == before


def test_convert_refuses_a_non_empty_destination_unless_overwrite(tiny_source, tmp_path):
    from flashi2v.model import FlashI2VTransformer
    from flashi2v.weights import convert_checkpoint

    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "notes.txt").write_text("mine")
    with pytest.raises(FlashI2VError, match="not empty.*--overwrite"):
        convert_checkpoint(tiny_source, dst)
    assert (dst / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FlashI2VError, match="existing file"):
        convert_checkpoint(tiny_source, tmp_path / "file", overwrite=True)
    convert_checkpoint(tiny_source, dst, overwrite=True)
    assert not (dst / "notes.txt").exists() and FlashI2VTransformer.from_pretrained(dst / "transformer").config.dim == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "file", "work"]  # no temp folders left


def test_convert_failing_midway_leaves_no_half_folder(tiny_source, tmp_path):
    from flashi2v.weights import convert_checkpoint

    bad_vae = tmp_path / "Wan2.1_VAE.pth"
    bad_vae.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(FlashI2VError, match="truncated or corrupt"):
        convert_checkpoint(tiny_source, tmp_path / "new", vae=bad_vae)  # fails after the transformer is written
    assert not (tmp_path / "new").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("old model")
    with pytest.raises(FlashI2VError):
        convert_checkpoint(tiny_source, old, vae=bad_vae, overwrite=True)
    assert (old / "keep.txt").read_text() == "old model"  # replaced only when the new folder is complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Wan2.1_VAE.pth", "old", "work"]


def test_export_never_overwrites_its_source(tiny_source, tmp_path):
    from flashi2v.weights import export_transformer

    before = _tree(tiny_source)
    with pytest.raises(FlashI2VError, match="would overwrite the source file"):
        export_transformer(tiny_source, tiny_source / "model.safetensors", "wan-original", num_heads=4)
    assert _tree(tiny_source) == before
    out = export_transformer(tiny_source, tmp_path / "w.safetensors", "wan-original")
    with pytest.raises(FlashI2VError, match="already exists"):
        export_transformer(tiny_source, out, "wan-original")


@pytest.mark.parametrize("text, expected", [("2GB", 2 * 2**30), ("500mb", 500 * 2**20), ("1.5 GiB", int(1.5 * 2**30)),
                                            ("4096", 4096), (1000, 1000)])
def test_parse_size(text, expected):
    from flashi2v.sizes import parse_size

    assert parse_size(text) == expected


@pytest.mark.parametrize("garbage", ["", "GB", "2XB", "-1GB", "0", "1e9", "two gigs", None, True, 0, -5, "5 G B"])
def test_parse_size_garbage(garbage):
    from flashi2v.sizes import parse_size

    with pytest.raises(FlashI2VError, match="size"):
        parse_size(garbage, "--max-shard-size")


def test_convert_checks_the_shard_size_before_writing(tiny_source, tmp_path):
    from flashi2v.weights import convert_checkpoint

    with pytest.raises(FlashI2VError, match="--max-shard-size 'lots' is not a size"):
        convert_checkpoint(tiny_source, tmp_path / "out", max_shard_size="lots")
    assert not (tmp_path / "out").exists()


# -- model folders: config.json, shard indexes, damaged shards -------------------------------------


@pytest.mark.parametrize("change, match", [
    ({"dim": "64"}, "key 'dim' must be a positive integer"),
    ({"num_layers": 0}, "key 'num_layers' must be a positive integer"),
    ({"ffn_dim": -128}, "key 'ffn_dim' must be a positive integer"),
    ({"text_len": 16.5}, "key 'text_len'"),
    ({"num_heads": True}, "key 'num_heads'"),
    ({"patch_size": {"t": 1}}, "key 'patch_size' must be 3 positive integers"),
    ({"patch_size": [1, 2]}, "key 'patch_size'"),
    ({"eps": "small"}, "key 'eps'"),
    ({"cross_attn_norm": "yes"}, "key 'cross_attn_norm' must be true or false"),
    ({"proj_kernel": [3, 3, 3]}, "key 'proj_kernel'"),
    ({"hidden_size": 64}, r"unknown transformer config keys \['hidden_size'\]"),
])
def test_transformer_config_values_are_checked(change, match):
    from flashi2v.config import TransformerConfig, preset

    with pytest.raises(FlashI2VError, match=f"x/config.json: {match}"):
        TransformerConfig.from_dict({**preset("tiny").to_dict(), **change}, "x/config.json")


def test_transformer_config_must_be_a_mapping():
    from flashi2v.config import TransformerConfig, preset

    with pytest.raises(FlashI2VError, match="must hold a JSON object"):
        TransformerConfig.from_dict([preset("tiny").to_dict()], "x/config.json")


def test_model_folder_with_a_bad_config_is_named(tiny_source):
    from flashi2v.model import FlashI2VTransformer

    config = tiny_source / "config.json"
    good = config.read_text()
    config.write_text(good.replace('"dim": 64', '"dim": "sixty-four"'))
    with pytest.raises(FlashI2VError, match="key 'dim' must be a positive integer"):
        FlashI2VTransformer.from_pretrained(tiny_source)


@pytest.mark.parametrize("text, match", [
    ('{"num_heads": 4,', "not valid JSON .* line 1"),
    ("[4]", "must hold a JSON object"),
    ('{"num_heads": "four"}', "key 'num_heads' must be a positive integer"),
    ('{"num_heads": 0}', "key 'num_heads' must be a positive integer"),
    ('{"text_len": [16]}', "key 'text_len'"),
])
def test_config_beside_foreign_weights_is_checked(tmp_path, text, match):
    from safetensors.torch import save_file

    from flashi2v import FlashI2VTransformer, preset
    from flashi2v.weights import inspect_checkpoint, load_transformer_weights

    folder = tmp_path / "wan"
    folder.mkdir()
    save_file(FlashI2VTransformer.from_config(preset("tiny")).state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(text)
    with pytest.raises(FlashI2VError, match=match):
        load_transformer_weights(folder / "model.safetensors")
    with pytest.raises(FlashI2VError, match=match):
        inspect_checkpoint(folder)
    (folder / "config.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(FlashI2VError, match="not UTF-8"):
        load_transformer_weights(folder / "model.safetensors")


@pytest.fixture()
def sharded(tmp_path):
    from flashi2v import FlashI2VTransformer, preset
    from flashi2v.model.io import save_transformer

    save_transformer(FlashI2VTransformer.from_config(preset("tiny")), tmp_path / "t", max_shard_size=30_000)
    assert (tmp_path / "t" / "model.safetensors.index.json").is_file()
    return tmp_path / "t"


def test_sharded_transformer_damage(sharded):
    from flashi2v.model import FlashI2VTransformer

    index = sharded / "model.safetensors.index.json"
    shards = sorted(sharded.glob("model-*.safetensors"))
    good_index = index.read_text()
    index.write_text(good_index[:50])
    with pytest.raises(FlashI2VError, match="index.json' is not valid JSON"):
        FlashI2VTransformer.from_pretrained(sharded)
    index.write_text('{"weight_map": ["model-00001-of-00002.safetensors"]}')
    with pytest.raises(FlashI2VError, match="weight_map"):
        FlashI2VTransformer.from_pretrained(sharded)
    index.write_text(good_index.replace(shards[0].name, "../../elsewhere.safetensors", 1))
    with pytest.raises(FlashI2VError, match="not a .safetensors file beside the index"):
        FlashI2VTransformer.from_pretrained(sharded)
    data = json.loads(good_index)
    data["weight_map"]["blocks.9.extra.weight"] = shards[0].name
    index.write_text(json.dumps(data))
    with pytest.raises(FlashI2VError, match="lists 1 tensor.*no shard holds.*blocks.9.extra.weight"):
        FlashI2VTransformer.from_pretrained(sharded)
    index.write_text(good_index)
    payload = shards[-1].read_bytes()
    shards[-1].write_bytes(payload[: len(payload) // 2])
    with pytest.raises(FlashI2VError, match="truncated or corrupt"):
        FlashI2VTransformer.from_pretrained(sharded)
    shards[-1].unlink()
    with pytest.raises(FlashI2VError, match="lacks 1 shard"):
        FlashI2VTransformer.from_pretrained(sharded)



# -- clip indexes, data filter / cache outputs, bad clips in training data -------------------------

GOOD = {"path": "a.mp4", "cap": "a cat"}


@pytest.mark.parametrize("lines, match", [
    (['{"path": "a.mp4", "cap": "x"}', '{"path": "b.mp4", "cap": '], r"line 2 is not valid JSON"),
    (['{"path": "a.mp4", "cap": "x"}', '[1, 2]'], r"line 2 holds a JSON list"),
    (['{"path": "a.mp4", "cap": "x"}', '"just text"'], r"line 2 is a str, not a record"),
    (['{"cap": "x"}'], r'line 1 lacks the field "path"'),
    (['{"path": "a.mp4"}'], r'line 1 lacks the field "cap"'),
    (['{"path": 17, "cap": "x"}'], r'line 1: field "path" must be a non-empty file path'),
    (['{"path": "", "cap": "x"}'], r'line 1: field "path"'),
    (['{"path": "a.mp4", "cap": 3}'], r'line 1: field "cap" must be text'),
    (['{"path": "a.mp4", "cap": "x", "resolution": [480, 832]}'], r'line 1: field "resolution" must be'),
    (['{"path": "a.mp4", "cap": "x", "resolution": {"height": 0, "width": 832}}'], r'"resolution.height" must be a positive integer'),
    (['{"path": "a.mp4", "cap": "x", "resolution": {"height": "tall", "width": 8}}'], r'"resolution.height"'),
    (['{"path": "a.mp4", "cap": "x", "fps": 0}'], r'line 1: field "fps" must be a positive number'),
    (['{"path": "a.mp4", "cap": "x", "fps": -25}'], r'field "fps"'),
    (['{"path": "a.mp4", "cap": "x", "fps": NaN}'], r'field "fps"'),
    (['{"path": "a.mp4", "cap": "x", "num_frames": 0}'], r'field "num_frames" must be a positive integer'),
    (['{"path": "a.mp4", "cap": "x", "num_frames": 12.5}'], r'field "num_frames"'),
    (['{"path": "a.mp4", "cap": "x", "num_frames": true}'], r'field "num_frames"'),
    (['{"path": "a.mp4", "cap": "x", "cut": [5, 2]}'], r'line 1: field "cut"'),
    (['{"path": "a.mp4", "cap": "x", "cut": ["a", "b"]}'], r'field "cut"'),
    (['{"path": "a.mp4", "cap": "x", "cut": [-3, 2]}'], r'field "cut"'),
])
def test_jsonl_index_errors_name_line_and_field(tmp_path, lines, match):
    from flashi2v.data import load_clip_index

    index = tmp_path / "clips.jsonl"
    index.write_text("\n".join(lines) + "\n")
    with pytest.raises(FlashI2VError, match=match) as err:
        load_clip_index(index)
    assert "clips.jsonl" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("content, match", [
    (GOOD, "holds one JSON object, but a .json index must be a list"),
    ("clips", "must hold a JSON list of clip records, not a str"),
    ([GOOD, {"path": "b.mp4", "cap": "y", "fps": "fast"}], r'record 1: field "fps" must be a positive number'),
    ([GOOD, 5], "record 1 is a int, not a record"),
])
def test_json_index_errors(tmp_path, content, match):
    from flashi2v.data import load_clip_index

    index = tmp_path / "clips.json"
    index.write_text(json.dumps(content))
    with pytest.raises(FlashI2VError, match=match):
        load_clip_index(index)


def test_index_numbers_written_as_text_are_accepted(tmp_path):
    from flashi2v.data import load_clip_index

    (tmp_path / "clips.jsonl").write_text(json.dumps({**GOOD, "fps": "25", "num_frames": 48.0,
                                                      "resolution": {"height": "480", "width": 832}}) + "\n")
    (record,) = load_clip_index(tmp_path / "clips.jsonl")
    assert (record.fps, record.num_frames, record.height, record.width) == (25.0, 48, 480, 832)


def test_non_utf8_index_and_caption(tmp_path):
    from flashi2v.data import load_clip_index

    (tmp_path / "clips.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"path": "b.mp4", "cap": "caf\xe9"}\n')
    with pytest.raises(FlashI2VError, match=r"clips.jsonl line 2 is not UTF-8"):
        load_clip_index(tmp_path / "clips.jsonl")
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(b"")
    (folder / "a.txt").write_bytes(b"caf\xe9")
    with pytest.raises(FlashI2VError, match=r"a.txt line 1 is not UTF-8"):
        load_clip_index(folder)


@pytest.fixture()
def described_index(tmp_path):
    """A .jsonl index whose records carry their stream facts (so filtering needs no real video)."""
    rows = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.mp4").write_bytes(b"not probed")
        rows.append({"path": f"{name}.mp4", "cap": name, "resolution": {"height": 480, "width": 832}, "fps": 16,
                     "num_frames": 100})
    index = tmp_path / "clips.jsonl"
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return index


def test_data_filter_never_empties_its_input(described_index, tmp_path, capsys):
    from flashi2v.cli import main

    before = _digest(described_index)
    (tmp_path / "link.jsonl").symlink_to(described_index)
    os.link(described_index, tmp_path / "hard.jsonl")
    for out in (described_index, tmp_path / "link.jsonl", tmp_path / "hard.jsonl", tmp_path / "." / "clips.jsonl"):
        assert main(["data", "filter", str(described_index), "--out", str(out), "--overwrite"]) == 2
        assert "the same as" in capsys.readouterr().err
    assert _digest(described_index) == before
    out = tmp_path / "kept.jsonl"
    out.write_text("precious\n")
    assert main(["data", "filter", str(described_index), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "precious\n"
    assert main(["data", "filter", str(described_index), "--out", str(out), "--overwrite"]) == 0
    assert len(out.read_text().splitlines()) == 2 and _digest(described_index) == before
    assert main(["data", "filter", str(described_index), "--out", str(tmp_path / "kept.csv")]) == 2
    assert "use a .json or .jsonl" in capsys.readouterr().err


def test_data_cache_refuses_bad_outputs_and_settings(described_index, tmp_path, capsys):
    from flashi2v.cli import main

    out = tmp_path / "cache"
    out.mkdir()
    (out / "old.txt").write_text("keep")
    assert main(["data", "cache", str(described_index), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "old.txt").read_text() == "keep"
    assert main(["data", "cache", str(described_index), "--out", str(described_index)]) == 2
    assert "the same as" in capsys.readouterr().err
    assert main(["data", "cache", str(described_index), "--out", str(tmp_path / "new"), "--shard-size", "0"]) == 2
    assert "shard_size" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_damaged_latent_cache_is_one_line(tmp_path):
    from safetensors.torch import save_file

    from flashi2v.data.cache import CachedLatentDataset

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "index.json").write_text("{\"samples\": [")
    with pytest.raises(FlashI2VError, match="not a valid cache index"):
        CachedLatentDataset(cache)
    (cache / "index.json").write_text(json.dumps({"samples": [{"shard": "0", "caption": "x"}]}))
    with pytest.raises(FlashI2VError, match="sample 0 needs an integer"):
        CachedLatentDataset(cache)
    (cache / "index.json").write_text(json.dumps({"samples": [{"shard": 0, "caption": "x"}]}))
    with pytest.raises(FlashI2VError, match="lacks 2 file"):
        CachedLatentDataset(cache)
    save_file({"context": torch.zeros(1, 4)}, str(cache / "null_context.safetensors"))
    (cache / "shard-00000.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    dataset = CachedLatentDataset(cache)
    with pytest.raises(FlashI2VError, match="truncated or corrupt"):
        dataset[0]


def test_dataset_skips_and_counts_zero_length_and_short_clips(tmp_path):
    from flashi2v.data import ClipRecord, DataConfig, VideoClipDataset
    from flashi2v.video import write_mp4

    good = write_mp4(np.zeros((20, 32, 32, 3), np.uint8), tmp_path / "good.mp4", fps=16)
    short = write_mp4(np.zeros((2, 32, 32, 3), np.uint8), tmp_path / "short.mp4", fps=16)
    (tmp_path / "empty.mp4").write_bytes(b"")
    records = [ClipRecord(str(tmp_path / "empty.mp4"), "e"), ClipRecord(str(short), "s"), ClipRecord(str(good), "g"),
               ClipRecord(str(tmp_path / "gone.mp4"), "m")]
    dataset = VideoClipDataset(records, DataConfig(num_frames=5, fps=16, height=16, width=16))
    samples = [dataset[i] for i in range(4)]
    assert {s["caption"] for s in samples} == {"g"}
    counts = dataset.skipped.counts
    assert counts["unreadable"] + counts["corrupt"] == 1 and counts["too_short"] == 1 and counts["missing"] == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"fps": float("nan")}, "finite fps"), ({"fps": float("inf")}, "finite fps"), ({"num_frames": 0}, "num_frames"),
    ({"min_pixels": -1}, "min_pixels"), ({"min_aspect": -1.0}, "aspect"), ({"max_aspect": float("nan")}, "aspect"),
    ({"min_aspect": 3.0, "max_aspect": 1.0}, "swap"),
])
def test_filter_config_limits(kwargs, match):
    from flashi2v.data import FilterConfig

    with pytest.raises(FlashI2VError, match=match):
        FilterConfig(**kwargs)


@pytest.mark.parametrize("heads", [0, -4, True])
def test_num_heads_must_be_positive(tiny_source, heads):
    from flashi2v.weights import inspect_checkpoint, load_transformer_weights

    with pytest.raises(FlashI2VError, match="num_heads .* must be a positive integer"):
        load_transformer_weights(tiny_source, num_heads=heads)
    with pytest.raises(FlashI2VError, match="num_heads .* must be a positive integer"):
        inspect_checkpoint(tiny_source, num_heads=heads)


def test_pickle_that_cannot_be_rebuilt_safely_is_one_line(tmp_path):
    import pickle

    from flashi2v.weights.readers import load_pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"w": torch.zeros(2), "evil": Payload()}))
    with pytest.raises(FlashI2VError, match="not a readable torch checkpoint"):
        load_pickle(tmp_path / "raw.pt")
    assert not marker.exists()
