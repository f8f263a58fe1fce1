"""The converted-model cache: one folder per (Hub repository, commit), built once and reused.

``<cache>/<org>--<name>--<commit sha>/`` holds ``model/`` (a flashi2v pipeline folder) and ``entry.json``
(what it was made from, and the size of every file in it). An entry is built in a temporary sibling and
renamed into place with ``entry.json`` already inside, so a half-built entry never carries the name; an
entry whose files no longer match ``entry.json`` (a file deleted or truncated) is rebuilt, never used.
Files taken unchanged from the Hub download are hard links to its blobs (no second copy on the same disk).

The cache lives in ``$FLASHI2V_CACHE``, else ``flashi2v/`` beside the Hugging Face hub cache (in
``$HF_HOME``, ``~/.cache/huggingface`` by default); it is not inside the hub cache, whose scanner would
report it as a damaged repository. Downloads stay in huggingface_hub's own cache (``HF_HUB_CACHE``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import FlashI2VError
from ..sizes import format_size

ENTRY_FILE = "entry.json"
MODEL_DIR = "model"
FORMAT = 1


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hf_home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(os.path.expandvars(os.environ.get("HF_HOME", str(default)))).expanduser()


def hub_cache_dir() -> Path:
    """huggingface_hub's download cache, read from the environment on each call (huggingface_hub reads it once,
    at import; a program or a test that sets HF_HUB_CACHE later is still honoured)."""
    text = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(os.path.expandvars(text)).expanduser() if text else hf_home() / "hub"


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, or as huggingface_hub read it at import."""
    try:
        from huggingface_hub import constants

        imported = constants.HF_HUB_OFFLINE
    except ImportError:
        imported = False
    return imported or _is_true(os.environ.get("HF_HUB_OFFLINE")) or _is_true(os.environ.get("TRANSFORMERS_OFFLINE"))


def cache_dir() -> Path:
    text = os.environ.get("FLASHI2V_CACHE")
    return Path(os.path.expandvars(text)).expanduser() if text else hf_home() / "flashi2v"


def entry_name(repo_id: str, sha: str, companion: str | None = None) -> str:
    """Keyed by the source commit; a non-default companion repository gets its own entry."""
    name = f"{repo_id.replace('/', '--')}--{sha}"
    return name + (f"+{companion.replace('/', '--')}" if companion else "")


def _files(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def write_entry(staging: Path, record: dict) -> None:
    """``entry.json`` for the finished ``staging/model``: the record plus every file and its size."""
    record = {"format": FORMAT, **record, "files": _files(staging / MODEL_DIR)}
    (staging / ENTRY_FILE).write_text(json.dumps(record, indent=1) + "\n")


def entry_problem(entry: Path) -> str | None:
    """Why ``entry`` cannot be used (None: complete). Sizes are compared, not contents: hashing a 17 GB model
    on every load would cost more than the load."""
    try:
        record = json.loads((entry / ENTRY_FILE).read_text())
    except FileNotFoundError:
        return f"no {ENTRY_FILE} (an older or interrupted build)"
    except (OSError, ValueError) as err:
        return f"{ENTRY_FILE} is unreadable ({type(err).__name__})"
    files = record.get("files") if isinstance(record, dict) else None
    if record.get("format") != FORMAT or not isinstance(files, dict) or not files:
        return f"{ENTRY_FILE} is not one this version wrote"
    for name, size in files.items():
        path = entry / MODEL_DIR / name
        if not path.is_file():
            return f"{MODEL_DIR}/{name} is missing"
        if path.stat().st_size != size:
            return f"{MODEL_DIR}/{name} has {path.stat().st_size} bytes, not {size}"
    return None


def read_record(entry: Path) -> dict:
    try:
        record = json.loads((entry / ENTRY_FILE).read_text())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def entry_lock(entry: Path):
    """A lock file beside ``entry`` (``.NAME.lock``), held while it is checked and built."""
    from filelock import FileLock

    entry.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(entry.with_name(f".{entry.name}.lock")))


def mark_used(entry: Path) -> None:
    try:
        os.utime(entry / ENTRY_FILE)
    except OSError:
        pass  # a read-only cache still works; only "last used" is not updated


# -- list / clear ------------------------------------------------------------------------------------


@dataclass
class CachedModel:
    path: Path
    record: dict
    problem: str | None
    size: int  # bytes on disk in the entry
    shared: int  # of which hard-linked with another file (the Hub download): freed only when both go

    @property
    def repo_id(self) -> str:
        return self.record.get("repo_id") or self.path.name.split("--", 2)[0] + "/?"

    def row(self) -> str:
        sha = (self.record.get("sha") or "?")[:12]
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime((self.path / ENTRY_FILE).stat().st_mtime)) \
            if (self.path / ENTRY_FILE).exists() else "-"
        state = "ok" if self.problem is None else "damaged"
        return f"{self.repo_id:<40} {sha:<12} {format_size(self.size):>9} {format_size(self.shared):>9}  {state:<7}  {used}"


def _sizes(folder: Path) -> tuple[int, int]:
    total = shared = 0
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            total += st.st_size
            shared += st.st_size if st.st_nlink > 1 else 0
    return total, shared


def cached_models(root: Path | None = None) -> list[CachedModel]:
    root = cache_dir() if root is None else root
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if path.is_dir() and not path.name.startswith("."):
            found.append(CachedModel(path, read_record(path), entry_problem(path), *_sizes(path)))
    return found


def leftovers(root: Path | None = None) -> list[Path]:
    """Temporary folders of builds that were interrupted (``.NAME.partial-*``, ``.NAME.old-*``)."""
    root = cache_dir() if root is None else root
    return sorted(p for p in root.iterdir() if p.name.startswith(".") and p.is_dir()) if root.is_dir() else []


def list_cache() -> str:
    """A table of the converted models and what they occupy, and where the downloads are."""
    root = cache_dir()
    models = cached_models(root)
    lines = [f"converted models in {root}:"]
    if not models:
        lines.append("  (none)")
    else:
        lines.append(f"  {'REPOSITORY':<40} {'COMMIT':<12} {'SIZE':>9} {'LINKED':>9}  {'STATE':<7}  LAST USED")
        lines += ["  " + m.row() for m in models]
        lines.append(f"  total {format_size(sum(m.size for m in models))}; LINKED: hard links to the downloads' files, "
                     "the space of which is freed only when both are deleted")
    stale = leftovers(root)
    if stale:
        lines.append(f"  {len(stale)} unfinished build folder(s), {format_size(sum(_sizes(p)[0] for p in stale))}: "
                     "`flashi2v cache clear` removes them")
    lines.append(f"downloads: huggingface_hub's cache in {hub_cache_dir()} (`hf cache ls`; `flashi2v cache clear "
                 "--downloads` removes those of the models it clears)")
    return "\n".join(lines)


def clear_cache(repo_id: str | None = None, downloads: bool = False) -> str:
    """Delete the converted models (all, or those made from ``repo_id``) and unfinished builds; with
    ``downloads``, also huggingface_hub's downloads of the repositories they were made from (not of the
    components repository, which other programs may share). Returns what was freed."""
    root = cache_dir()
    models = [m for m in cached_models(root) if repo_id is None or m.repo_id == repo_id]
    if repo_id is not None and not models:
        known = sorted({m.repo_id for m in cached_models(root)})
        raise FlashI2VError(f"no converted model of '{repo_id}' in {root}" +
                            (f": cached are {', '.join(known)}" if known else ": the cache is empty"))
    freed = sum(m.size - m.shared for m in models)
    for m in models:
        shutil.rmtree(m.path)
        m.path.with_name(f".{m.path.name}.lock").unlink(missing_ok=True)
    stale = leftovers(root) if repo_id is None else []
    for p in stale:
        freed += _sizes(p)[0]
        shutil.rmtree(p, ignore_errors=True)
    for lock in root.glob(".*.lock") if repo_id is None else ():
        lock.unlink(missing_ok=True)
    lines = [f"removed {len(models)} converted model(s)" + (f" and {len(stale)} unfinished build(s)" if stale else "")
             + f", {format_size(freed)} freed"]
    if downloads:
        lines.append(_clear_downloads({m.repo_id for m in models}))
        kept = sorted({r for m in models if (r := m.record.get("components_repo"))})
        if kept:
            # Other programs (diffusers) may use these too: deleting them is the user's call, with hf's own command.
            lines.append(f"kept the download of {', '.join(kept)} (VAE / text encoder / tokenizer; other programs may "
                         f"use it): `hf cache rm {' '.join('model/' + r for r in kept)}` removes it")
    return "\n".join(lines)


def _clear_downloads(repos: set[str]) -> str:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hub_cache_dir())
    except CacheNotFound:
        return f"no downloads: {hub_cache_dir()} does not exist"
    gone = [r for r in info.repos if r.repo_type == "model" and r.repo_id in repos]
    for r in gone:
        shutil.rmtree(r.repo_path)
    names = ", ".join(r.repo_id for r in gone) or "none cached"
    return f"removed the downloads of {names}, {format_size(sum(r.size_on_disk for r in gone))} freed"
