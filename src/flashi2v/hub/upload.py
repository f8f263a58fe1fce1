"""Push a flashi2v model folder to the Hub with a model card, so ``--model ORG/NAME`` runs it anywhere.

One commit holds the folder's files and ``README.md``: the folder's own README when it has one, else a card
written here whose YAML metadata says what the model is (pipeline tag image-to-video, library flashi2v,
paradigm, transformer config, training data). The folder itself is never modified.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from ..errors import FlashI2VError
from ..jsonfile import read_json_object
from ..sizes import format_size
from .refs import HubRef, check_repo_id

CARD_NAME = "README.md"
_SKIP = (".git", ".cache", ".gitattributes")


def check_model_folder(folder: Path) -> dict:
    """The transformer config of a complete flashi2v pipeline folder; one line naming what is missing."""
    if not folder.is_dir():
        raise FlashI2VError(f"model folder '{folder}' does not exist: pass a folder written by save_pretrained or "
                            "`flashi2v convert`")
    config = folder / "transformer" / "config.json"
    if not config.is_file():
        raise FlashI2VError(f"'{folder}' has no transformer/config.json: upload a flashi2v model folder (transformer/, "
                            "vae/, text_encoder/), e.g. one written by `flashi2v convert`")
    for sub in ("vae", "text_encoder"):
        if not (folder / sub).is_dir():
            raise FlashI2VError(f"'{folder}' has no {sub}/: a model on the Hub must carry its components; add them with "
                                "`flashi2v convert ... --vae/--text-encoder/--tokenizer`")
    data = read_json_object(config)
    if data.get("_class_name") != "FlashI2VTransformer":
        raise FlashI2VError(f"'{config}' is not a flashi2v transformer config (_class_name "
                            f"{data.get('_class_name')!r}): convert the model first with `flashi2v convert`")
    return data


def model_card(folder: str | os.PathLike, repo_id: str, training_data: str | None = None) -> str:
    """README.md text: YAML metadata (the Hub's filters read it) and a short human description."""
    folder = Path(folder)
    config = {k: v for k, v in check_model_folder(folder).items() if not k.startswith("_")}
    settings = folder / "pipeline.json"
    defaults = read_json_object(settings).get("defaults", {}) if settings.is_file() else {}
    paradigm = config.get("paradigm", "flashi2v")
    meta = {"library_name": "flashi2v", "pipeline_tag": "image-to-video",
            "tags": ["flashi2v", "image-to-video", "wan2.1", f"paradigm:{paradigm}"],
            "flashi2v": {"paradigm": paradigm, "config": config,
                         "training_data": training_data or "not stated by the uploader"}}
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    rows = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in config.items())
    shown = ", ".join(f"{k}={v}" for k, v in defaults.items() if k != "negative_prompt") or "the FlashI2V-1.3B ones"
    return (f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n\n"
            f"# {repo_id.split('/')[-1]}\n\n"
            f"An image-to-video model for the flashi2v library ({format_size(size)}): a Wan2.1-style "
            f"diffusion transformer conditioned on the image with the `{paradigm}` paradigm.\n\n"
            "## Use\n\n```bash\n"
            f"flashi2v generate --model {repo_id} --image photo.jpg --prompt \"the camera pans left\" --out video.mp4\n"
            "```\n\n```python\nfrom flashi2v import FlashI2VPipeline\n\n"
            f"pipe = FlashI2VPipeline.from_pretrained(\"{repo_id}\")\n```\n\n"
            f"Generation defaults (pipeline.json): {shown}.\n\n"
            f"## Training data\n\n{training_data or 'Not stated by the uploader.'}\n\n"
            f"## Transformer config\n\n| key | value |\n| --- | --- |\n{rows}\n")


def push_to_hub(folder: str | os.PathLike, repo_id: str, private: bool | None = None, token: str | bool | None = None,
                revision: str | None = None, commit_message: str | None = None,
                training_data: str | None = None) -> str:
    """Upload ``folder`` (and a model card unless it has a README.md) to ``repo_id`` in one commit, creating the
    repository when needed. Returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from .resolve import hub_errors

    check_repo_id(repo_id)
    folder = Path(folder)
    check_model_folder(folder)
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                  for p in sorted(folder.rglob("*")) if p.is_file()
                  and not any(part in _SKIP or part.startswith(".") for part in p.relative_to(folder).parts)]
    if not (folder / CARD_NAME).is_file():
        card = model_card(folder, repo_id, training_data).encode()
        operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card))
    api = HfApi(token=token)
    with hub_errors(HubRef(repo_id, revision, explicit=True), "upload"):
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(repo_id, operations=operations, revision=revision,
                                 commit_message=commit_message or f"Upload flashi2v model ({len(operations)} files)")
    return getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}"
