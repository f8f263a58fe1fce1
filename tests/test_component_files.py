"""Truncated or corrupt component files (VAE, text encoder, codec, caption table, transformer) and empty photo
folders give one FlashI2VError line naming the file and the fix, never a traceback from a library (issue 25)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flashi2v import FlashI2VError, FlashI2VTransformer
from flashi2v.cli import main
from flashi2v.encoders import BlockPCACodec, PrecomputedTextEncoder, load_text_encoder, load_vae
from flashi2v.encoders.files import check_safetensors
from flashi2v.photos import evaluation_photos
from flashi2v.random_components import make_tiny_text_encoder, make_tiny_tokenizer, make_tiny_vae, random_tiny_pipeline


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def one_line_naming(err: pytest.ExceptionInfo, path: Path, fix: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and fix in message


def test_check_safetensors_accepts_a_whole_file_and_rejects_a_cut_one(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(100), "b": torch.zeros(3, 4)}, str(path))
    check_safetensors(path, "fix it")  # a complete file passes
    truncate(path, 0.9)
    with pytest.raises(FlashI2VError, match="truncated") as err:
        check_safetensors(path, "fix it")
    one_line_naming(err, path, "fix it")
    path.write_bytes(b"\xff" * 64)  # a header length past the end of the file
    with pytest.raises(FlashI2VError, match="corrupt"):
        check_safetensors(path, "fix it")


@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_vae_weights(tmp_path, keep):
    make_tiny_vae().save_pretrained(tmp_path / "vae", safe_serialization=True)
    weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    load_vae(tmp_path / "vae")  # intact: loads
    truncate(weights, keep)
    with pytest.raises(FlashI2VError) as err:
        load_vae(tmp_path / "vae")
    one_line_naming(err, weights, "re-download the vae/ folder")


def test_truncated_text_encoder_weights(tmp_path):
    tokenizer = make_tiny_tokenizer()
    make_tiny_text_encoder(len(tokenizer)).save_pretrained(tmp_path / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    load_text_encoder(tmp_path / "text_encoder", tmp_path / "tokenizer")  # intact: loads
    weights = tmp_path / "text_encoder" / "model.safetensors"
    truncate(weights)
    with pytest.raises(FlashI2VError) as err:
        load_text_encoder(tmp_path / "text_encoder", tmp_path / "tokenizer")
    one_line_naming(err, weights, "re-download the text_encoder/ and tokenizer/ folders")


def test_corrupt_text_encoder_config(tmp_path):
    tokenizer = make_tiny_tokenizer()
    make_tiny_text_encoder(len(tokenizer)).save_pretrained(tmp_path / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    (tmp_path / "text_encoder" / "config.json").write_text("{not json")
    with pytest.raises(FlashI2VError) as err:
        load_text_encoder(tmp_path / "text_encoder", tmp_path / "tokenizer")
    one_line_naming(err, tmp_path / "text_encoder", "re-download the text_encoder/")


def test_truncated_or_corrupt_codec(tmp_path):
    folder = tmp_path / "vae"
    BlockPCACodec().save_pretrained(folder)
    assert isinstance(load_vae(folder), BlockPCACodec)
    truncate(folder / BlockPCACodec.WEIGHTS)
    with pytest.raises(FlashI2VError) as err:
        load_vae(folder)
    one_line_naming(err, folder / BlockPCACodec.WEIGHTS, "rebuild it")
    (folder / "config.json").write_text('{"_class_name": "BlockPCACodec", "spat')
    with pytest.raises(FlashI2VError) as err:
        load_vae(folder)
    one_line_naming(err, folder / "config.json", "not valid JSON")


def test_truncated_caption_table(tmp_path):
    folder = tmp_path / "text_encoder"
    PrecomputedTextEncoder({"": torch.zeros(4, 8), "a cat": torch.ones(4, 8)}).save_pretrained(folder)
    assert load_text_encoder(folder, None).encode("a cat").shape == (1, 4, 8)
    truncate(folder / PrecomputedTextEncoder.FILE, 0.8)
    with pytest.raises(FlashI2VError) as err:
        load_text_encoder(folder, None)
    one_line_naming(err, folder / PrecomputedTextEncoder.FILE, "build it again")


def test_truncated_transformer_weights(tmp_path):
    FlashI2VTransformer.from_config("tiny").save_pretrained(tmp_path / "t")
    weights = tmp_path / "t" / "model.safetensors"
    truncate(weights)
    with pytest.raises(FlashI2VError) as err:
        FlashI2VTransformer.from_pretrained(tmp_path / "t")
    one_line_naming(err, weights, "re-download or re-save it")
    (tmp_path / "t" / "config.json").write_text("[1, 2")
    with pytest.raises(FlashI2VError, match="not valid JSON"):
        FlashI2VTransformer.from_pretrained(tmp_path / "t")


def test_empty_photo_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("no image here")
    with pytest.raises(FlashI2VError, match="holds no images"):
        evaluation_photos(tmp_path / "photos", tmp_path / "scratch")


def test_cli_eval_motion_with_an_empty_photo_folder(tmp_path, capsys):
    random_tiny_pipeline(seed=0).save_pretrained(tmp_path / "model")
    (tmp_path / "photos").mkdir()
    code = main(["eval", "motion", "--model", str(tmp_path / "model"), "--photos", str(tmp_path / "photos"),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("flashi2v: error: photo folder") and "holds no images" in err[-1]
    assert "Traceback" not in "\n".join(err)
