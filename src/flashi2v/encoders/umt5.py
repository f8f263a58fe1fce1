"""UMT5TextEncoder: umT5 (transformers) + tokenizer -> the fixed-length, zero-padded context Wan2.1 expects."""

from __future__ import annotations

import html
import re
from pathlib import Path

import torch
from transformers import AutoTokenizer, UMT5EncoderModel

from flashi2v.errors import FlashI2VError

from .files import check_model_folder, check_weight_files, library_error

def clean_prompt(text: str) -> str:
    """Wan's 'whitespace' cleaning: unescape HTML entities and collapse runs of whitespace."""
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


class UMT5TextEncoder(torch.nn.Module):
    """umT5 encoder + tokenizer producing the fixed-length, zero-padded text context Wan2.1 expects."""

    def __init__(self, model: UMT5EncoderModel, tokenizer):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls,
        text_encoder_folder: str | Path,
        tokenizer_folder: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "UMT5TextEncoder":
        """Load the ``text_encoder/`` and ``tokenizer/`` subfolders of a Wan2.1-T2V-Diffusers folder, offline."""
        text_encoder_folder = check_model_folder(text_encoder_folder, "text encoder", "text_encoder")
        tokenizer_folder = Path(tokenizer_folder)
        if not tokenizer_folder.is_dir():
            raise FlashI2VError(
                f"tokenizer folder '{tokenizer_folder}' does not exist: pass the tokenizer/ subfolder of a "
                "Wan2.1-T2V-1.3B-Diffusers-style folder (see README)"
            )
        fix = "re-download the text_encoder/ and tokenizer/ folders (see README)"
        check_weight_files(text_encoder_folder, fix)
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder, local_files_only=True)
        except Exception as err:  # transformers, sentencepiece and tokenizers raise many types for a bad file
            raise library_error("umT5 tokenizer", tokenizer_folder, err, fix) from None
        try:
            model = UMT5EncoderModel.from_pretrained(text_encoder_folder, dtype=dtype, local_files_only=True)
        except Exception as err:  # transformers, safetensors and torch raise many types for a bad file
            raise library_error("umT5 text encoder", text_encoder_folder, err, fix) from None
        return cls(model.to(device), tokenizer)

    def save_pretrained(self, text_encoder_folder: str | Path, tokenizer_folder: str | Path) -> None:
        """Write both parts in the diffusers pipeline layout so from_pretrained reads them back."""
        self.model.save_pretrained(text_encoder_folder, safe_serialization=True)
        self.tokenizer.save_pretrained(tokenizer_folder)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    @torch.no_grad()
    def encode(self, prompts: list[str] | str, max_length: int = 512) -> torch.Tensor:
        """Prompts -> B x max_length x d_model float32; positions past each prompt's real length are zero.

        The encoder sees the attention mask, and the padded positions are then zeroed exactly as Wan2.1
        does (umT5 pads on the right, so the mask marks each prompt's real length), because the DiT's
        cross-attention is unmasked and was trained on that zero padding.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise FlashI2VError("no prompt given: pass at least one text prompt")
        tokens = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            max_length=max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        return hidden.masked_fill(mask[:, :, None] == 0, 0.0)
