"""PrecomputedTextEncoder: caption embeddings looked up from a table the real text encoder computed once."""

from __future__ import annotations

from pathlib import Path

import torch

from flashi2v.errors import FlashI2VError

from ..jsonfile import read_json
from .files import load_safetensors

class PrecomputedTextEncoder(torch.nn.Module):
    """Embeddings looked up from a table computed once by the real text encoder (caption -> L x D).

    For training where the text encoder's weights are not at hand (a GPU machine without the package):
    the DiT sees exactly the tensors the real encoder gives for those captions.
    """

    FILE = "embeddings.safetensors"

    def __init__(self, table: dict[str, torch.Tensor]):
        super().__init__()
        self.table = table

    @classmethod
    def build(cls, encoder, captions, max_length: int) -> "PrecomputedTextEncoder":
        captions = sorted(set(captions) | {""})
        return cls(dict(zip(captions, encoder.encode(captions, max_length=max_length).cpu())))

    @classmethod
    def from_pretrained(cls, text_encoder_folder: str | Path, tokenizer_folder=None, device="cpu", dtype=None):
        folder = Path(text_encoder_folder)
        fix = "the table was not saved completely: build it again (PrecomputedTextEncoder.build)"
        captions = read_json(folder / "captions.json")
        tensors = load_safetensors(folder / cls.FILE, fix)
        if not isinstance(captions, list) or len(captions) != len(tensors) or any(str(i) not in tensors for i in range(len(captions))):
            raise FlashI2VError(f"'{folder}': captions.json and {cls.FILE} do not match: {fix}")
        return cls({c: tensors[str(i)] for i, c in enumerate(captions)})

    def save_pretrained(self, text_encoder_folder: str | Path, tokenizer_folder=None) -> None:
        import json

        from safetensors.torch import save_file

        folder = Path(text_encoder_folder)
        folder.mkdir(parents=True, exist_ok=True)
        captions = sorted(self.table)
        save_file({str(i): self.table[c].contiguous() for i, c in enumerate(captions)}, str(folder / self.FILE))
        (folder / "captions.json").write_text(json.dumps(captions, ensure_ascii=False))
        (folder / "config.json").write_text(json.dumps({"_class_name": type(self).__name__}) + "\n")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def encode(self, prompts: list[str] | str, max_length: int = 32) -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else prompts
        missing = [p for p in prompts if p not in self.table]
        if missing:
            raise FlashI2VError(f"caption {missing[0]!r} is not in the precomputed text table: rebuild the table with it")
        return torch.stack([self.table[p][:max_length] for p in prompts])
