"""What a ``--model`` / ``from_pretrained`` argument names: the built-in model, a local folder, or a Hub repository.

Grammar: ``builtin``; a path; ``ORG/NAME[@REVISION]``; ``hf://ORG/NAME[@REVISION][/PATH/IN/REPO]``.
A string that starts like a path (``./``, ``../``, ``/``, ``~``) or names something that exists on disk is a
path, so ``outputs/run1`` (a folder you made) is never sent to the Hub; one that does not exist but reads as
``ORG/NAME`` is tried on the Hub, and an error then names both readings. ``hf://`` is always the Hub (the
prefix of huggingface_hub's file system) and may pick a file or folder inside the repository.
No torch, no huggingface_hub here: the CLI parses references before importing anything heavy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import FlashI2VError

HUB_PREFIX = "hf://"
BUILTIN = "builtin"
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REVISION = r"[A-Za-z0-9._-]+"  # branch, tag or commit; "refs/pr/N" would be ambiguous with a path inside the repo
_REPO = re.compile(rf"^(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>{_REVISION}))?(?P<subpath>/.*)?$")


@dataclass(frozen=True)
class HubRef:
    """A Hub model repository at a revision (None: the default branch), optionally a path inside it."""

    repo_id: str
    revision: str | None = None
    subpath: str = ""
    explicit: bool = False  # written with hf://, so it cannot have meant a local folder

    def __str__(self) -> str:
        text = self.repo_id + (f"@{self.revision}" if self.revision else "") + (f"/{self.subpath}" if self.subpath else "")
        return HUB_PREFIX + text if self.explicit else text


def looks_like_path(text: str) -> bool:
    return text.startswith(("./", "../", "/", "~", ".\\", "..\\")) or text in (".", "..") or (
        os.sep == "\\" and (":" in text[:3] or "\\" in text))


def parse_model_ref(ref: str | os.PathLike) -> str | Path | HubRef:
    """``"builtin"``, a ``Path``, or a ``HubRef``; a ``Path`` object is always a path."""
    if isinstance(ref, os.PathLike):
        return Path(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise FlashI2VError(f"model {ref!r} is not a model reference: pass 'builtin', a folder or a Hub id ORG/NAME")
    text = ref.strip()
    if text == BUILTIN:
        return BUILTIN
    if text.startswith(HUB_PREFIX):
        m = _REPO.match(text[len(HUB_PREFIX):])
        if not m:
            raise FlashI2VError(f"'{text}' is not a Hub reference: write hf://ORG/NAME[@REVISION][/PATH/IN/REPO]")
        subpath = (m.group("subpath") or "").strip("/")
        if ".." in subpath.split("/"):
            raise FlashI2VError(f"'{text}': a path inside a repository cannot contain '..'")
        return HubRef(m.group("repo"), m.group("revision"), subpath, explicit=True)
    if looks_like_path(text) or Path(text).expanduser().exists():
        return Path(text).expanduser()
    m = _REPO.match(text)
    if m and not m.group("subpath"):
        return HubRef(m.group("repo"), m.group("revision"))
    return Path(text)


def check_repo_id(text) -> str:
    """``ORG/NAME`` exactly (an upload target: no revision, no path), else one line saying how to write it."""
    m = _REPO.match(text) if isinstance(text, str) else None
    if not m or m.group("revision") or m.group("subpath"):
        raise FlashI2VError(f"{text!r} is not a Hub repository id: write ORG/NAME (your user or organisation name, a "
                            "slash, the model name)")
    return text
