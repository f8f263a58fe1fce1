"""Where results are written: never over an input, never over something the user did not ask to replace,
and never half-written under the final name (a temporary sibling is renamed into place at the end).

Used by ``generate``, ``convert``, ``data filter`` and ``data cache``; each names its own option in the messages.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from .errors import FlashI2VError


def overlaps(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """The same path (symlinks and hard links included), or one inside the other."""
    a, b = Path(a).resolve(), Path(b).resolve()
    if a == b or a in b.parents or b in a.parents:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike]], overwrite: bool,
                 folder: bool, flag: str = "--overwrite") -> Path:
    """Refuse, before any work, an output that is (or holds, or lies inside) one of ``inputs`` (what, path),
    is of the wrong kind (a file where a folder goes or the reverse), or exists (non-empty, for a folder)
    without ``overwrite``."""
    out = Path(out)
    for what, path in inputs:
        if overlaps(path, out):
            raise FlashI2VError(f"output '{out}' is the same as (or overlaps) the {what} '{path}': writing it would "
                                "destroy the input; pick another output path")
    if folder and out.exists() and not out.is_dir():
        raise FlashI2VError(f"output '{out}' is an existing file, not a folder: pick a new folder name")
    if not folder and out.is_dir():
        raise FlashI2VError(f"output '{out}' is a folder: give a file name, e.g. '{out / 'out'}'")
    exists = (out.is_dir() and any(out.iterdir())) if folder else out.exists()
    if exists and not overwrite:
        raise FlashI2VError(f"output '{out}' already exists{' and is not empty' if folder else ''}: pick a new "
                            f"{'folder' if folder else 'file'}, or pass {flag} to replace it")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:  # the writer creates the missing folders
        parent = parent.parent
    if not parent.is_dir():
        raise FlashI2VError(f"cannot write '{out}': '{parent}' is a file, not a folder; choose another output")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FlashI2VError(f"cannot write '{out}': no permission to write in '{parent}'; choose a folder you can "
                            "write")
    return out


def replace_folder(tmp: Path, dst: Path) -> None:
    """Move a finished ``tmp`` to ``dst``; an old ``dst`` is renamed away first and deleted only after."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
    os.replace(tmp, dst)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


@contextmanager
def staged_folder(dst: str | os.PathLike):
    """Yield a temporary folder beside ``dst``; on success it replaces ``dst``, on any failure it is removed
    and ``dst`` is left as it was."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        replace_folder(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextmanager
def staged_file(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` to write; on success it is renamed over ``path``, on any failure
    removed (``path`` is left as it was)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to a temporary sibling and rename it over ``path``: readers see the old or the
    new file, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
