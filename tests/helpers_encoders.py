"""Tiny encoder builders for tests: the library's own (flashi2v.random_components), plus an on-disk round trip."""

from __future__ import annotations

from pathlib import Path

from flashi2v.random_components import TINY_TEXT_DIM, TINY_Z_DIM, make_tiny_text_encoder, make_tiny_tokenizer, make_tiny_vae

__all__ = ["TINY_TEXT_DIM", "TINY_Z_DIM", "make_tiny_text_encoder_and_tokenizer", "make_tiny_tokenizer", "make_tiny_vae"]


def make_tiny_text_encoder_and_tokenizer(tmp_path: Path | None = None, seed: int = 0):
    """(UMT5EncoderModel, tokenizer); with ``tmp_path`` the tokenizer goes through save/AutoTokenizer first."""
    tokenizer = make_tiny_tokenizer()
    if tmp_path is not None:
        from transformers import AutoTokenizer

        folder = Path(tmp_path) / "tiny_tokenizer"
        tokenizer.save_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return make_tiny_text_encoder(len(tokenizer), seed), tokenizer
