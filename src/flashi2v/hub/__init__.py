"""Models on the Hugging Face Hub: ``from_pretrained("ORG/NAME")`` / ``--model ORG/NAME`` download, convert once
and reuse; ``push_to_hub`` / ``flashi2v upload`` publish our own folders with a model card.

- ``refs``: what a model argument names (builtin, a folder, ``ORG/NAME[@REVISION]``, ``hf://...``); no imports.
- ``plan``: which files of a repository make the model, from its file list.
- ``resolve``: the huggingface_hub calls, their errors as one line, the space check, the conversion.
- ``cache``: the converted-model cache (complete or rebuilt; list / clear).
- ``upload``: the model card and the one-commit upload.

Names are imported on first use: ``flashi2v cache list`` must not pay for torch.
"""

import importlib

_EXPORTS = {"DEFAULT_COMPONENTS_REPO": "resolve", "resolve_model": "resolve", "HubRef": "refs",
            "parse_model_ref": "refs", "cache_dir": "cache", "clear_cache": "cache", "list_cache": "cache",
            "model_card": "upload", "push_to_hub": "upload"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
