"""Clip index: the list of training clips, in the record format the FlashI2V authors use.

A record is ``{"path", "cap", "resolution": {"height", "width"}, "fps", "num_frames", "cut": [start, end)}``;
only ``path`` and ``cap`` are required. ``num_frames`` counts the source file's frames, ``fps`` is the source
frame rate and ``cut`` is a half-open range of source frame indices to train on. The index is a ``.json``
list or a ``.jsonl`` file (one record a line); a folder of videos with same-named ``.txt`` captions gives
the same records, so small datasets need no index file at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from flashi2v.errors import FlashI2VError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
_KNOWN_KEYS = {"path", "cap", "resolution", "fps", "num_frames", "cut"}


@dataclass(frozen=True)
class ClipRecord:
    """One training clip. ``path`` is absolute; optional fields are filled by ``filter_clips`` probing.

    Keys of the source record that this library does not use are kept in ``extra`` so that a
    load/save round trip loses nothing (scores, ids and the like stay in the index).
    """

    path: str
    cap: str
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    num_frames: int | None = None
    cut: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def with_info(self, height: int, width: int, fps: float, num_frames: int) -> "ClipRecord":
        """Copy with the probed stream facts, so a saved index need not be probed again."""
        return dataclasses.replace(self, height=height, width=width, fps=fps, num_frames=num_frames)

    @property
    def has_info(self) -> bool:
        return None not in (self.height, self.width, self.fps, self.num_frames)


def load_clip_index(source: str | os.PathLike) -> list[ClipRecord]:
    """Read clip records from a ``.json`` / ``.jsonl`` index or from a folder of videos + ``.txt`` captions."""
    source = Path(source)
    if source.is_dir():
        return _records_from_folder(source)
    if not source.is_file():
        raise FlashI2VError(f"clip index {source} does not exist; pass a .json/.jsonl index or a folder of videos")
    records = [_parse_record(raw, source.parent, i, source) for i, raw in enumerate(_read_raw(source))]
    if not records:
        raise FlashI2VError(f"clip index {source} holds no records; add clips or point at another index")
    return records


def save_clip_index(records: Iterable[ClipRecord], path: str | os.PathLike) -> None:
    """Write records as ``.json`` (a list) or ``.jsonl``; paths inside the index's folder are stored relative,
    so the dataset folder can be moved together with its index."""
    path = Path(path)
    rows = [_to_raw(r, path.parent) for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    elif path.suffix == ".json":
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    else:
        raise FlashI2VError(f"cannot write clip index {path}: use a .json or .jsonl file name")
    path.write_text(text, encoding="utf-8")


def _read_raw(path: Path) -> list[Any]:
    """Parse the file into raw dicts, naming the file and line on a syntax error."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise FlashI2VError(
                        f"{path} line {n} is not valid JSON ({e.msg}); fix or remove that line"
                    ) from None
        return rows
    if path.suffix != ".json":
        raise FlashI2VError(f"clip index {path} must be a .json list, a .jsonl file or a folder of videos")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise FlashI2VError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); fix the file") from None
    if not isinstance(rows, list):
        raise FlashI2VError(f"{path} must hold a JSON list of clip records, not a {type(rows).__name__}")
    return rows


def _parse_record(raw: Any, root: Path, i: int, source: Path) -> ClipRecord:
    """Validate one raw record; relative paths are taken relative to the index's folder."""
    if not isinstance(raw, dict) or "path" not in raw or "cap" not in raw:
        raise FlashI2VError(f'record {i} of {source} needs at least "path" and "cap" keys; fix that record')
    res = raw.get("resolution") or {}
    return ClipRecord(
        path=_abs(root / str(raw["path"])),
        cap=_caption(raw["cap"]),
        height=_opt(res.get("height"), int),
        width=_opt(res.get("width"), int),
        fps=_opt(raw.get("fps"), float),
        num_frames=_opt(raw.get("num_frames"), int),
        cut=_cut(raw.get("cut"), i, source),
        extra={k: v for k, v in raw.items() if k not in _KNOWN_KEYS},
    )


def _caption(cap: Any) -> str:
    """Some indexes store several captions per clip; the first one is used so that training is deterministic."""
    if isinstance(cap, list):
        return str(cap[0]) if cap else ""
    return str(cap)


def _abs(path: str | os.PathLike) -> str:
    """Absolute, normalised, symlinks kept: the path the user wrote, anchored (absolute input stays as is)."""
    return os.path.normpath(os.path.abspath(path))


def _opt(value: Any, kind: type) -> Any:
    return None if value is None else kind(value)


def _cut(value: Any, i: int, source: Path) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not int(value[0]) < int(value[1]):
        raise FlashI2VError(
            f"record {i} of {source} has cut={value!r}; use [start, end) source frame indices with start < end"
        )
    return int(value[0]), int(value[1])


def _to_raw(record: ClipRecord, root: Path) -> dict[str, Any]:
    """Inverse of ``_parse_record``: the authors' layout, with unset fields left out."""
    path = Path(record.path)
    try:
        path_text = path.relative_to(_abs(root)).as_posix()
    except ValueError:
        path_text = str(path)
    raw: dict[str, Any] = {"path": path_text, "cap": record.cap}
    if record.height is not None and record.width is not None:
        raw["resolution"] = {"height": record.height, "width": record.width}
    if record.fps is not None:
        raw["fps"] = record.fps
    if record.num_frames is not None:
        raw["num_frames"] = record.num_frames
    if record.cut is not None:
        raw["cut"] = list(record.cut)
    raw.update(record.extra)
    return raw


def _records_from_folder(folder: Path) -> list[ClipRecord]:
    """Every video below ``folder`` (sorted, recursive) paired with the ``.txt`` caption of the same stem."""
    videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        raise FlashI2VError(
            f"no videos ({', '.join(VIDEO_SUFFIXES)}) found under {folder}; add clips or pass an index file"
        )
    missing = [v for v in videos if not v.with_suffix(".txt").is_file()]
    if missing:
        raise FlashI2VError(
            f"{len(missing)} video(s) under {folder} lack a caption file, e.g. {missing[0].name}; "
            f"add {missing[0].with_suffix('.txt').name} next to it"
        )
    return [ClipRecord(path=_abs(v), cap=v.with_suffix(".txt").read_text(encoding="utf-8").strip()) for v in videos]
