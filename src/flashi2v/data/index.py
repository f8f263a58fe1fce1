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
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from flashi2v.errors import FlashI2VError
from flashi2v.outputs import check_output, write_text_atomic

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
    records = [_parse_record(raw, source.parent, where) for where, raw in _read_raw(source)]
    if not records:
        raise FlashI2VError(f"clip index {source} holds no records; add clips or point at another index")
    return records


def check_index_output(out: str | os.PathLike, source: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse, before any probing, an output index that is the input index (also through another path or a
    link), has no .json/.jsonl name, or exists without ``overwrite``. A folder of videos may hold its index."""
    out, source = Path(out), Path(source)
    if out.suffix not in (".json", ".jsonl"):
        raise FlashI2VError(f"cannot write clip index {out}: use a .json or .jsonl file name")
    inputs = [] if source.is_dir() and out.resolve() != source.resolve() else [("input index", source)]
    return check_output(out, inputs, overwrite, folder=False)


def save_clip_index(records: Iterable[ClipRecord], path: str | os.PathLike) -> None:
    """Write records as ``.json`` (a list) or ``.jsonl``; paths inside the index's folder are stored relative,
    so the dataset folder can be moved together with its index. Written to a temporary file and renamed,
    so an interrupted save never leaves a truncated index."""
    path = Path(path)
    if path.suffix not in (".json", ".jsonl"):
        raise FlashI2VError(f"cannot write clip index {path}: use a .json or .jsonl file name")
    rows = [_to_raw(r, path.parent) for r in records]
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    write_text_atomic(path, text)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise FlashI2VError(f"{path} line {line} is not UTF-8 text (byte {e.start}); re-save the index as UTF-8") from None
    except OSError as e:
        raise FlashI2VError(f"cannot read clip index {path} ({e.strerror or e}); check the path and its permissions") from None


def _read_raw(path: Path) -> list[tuple[str, Any]]:
    """Parse the file into (where, raw record) pairs, ``where`` naming the file and its line (``.jsonl``) or
    record number (``.json``) for messages; syntax errors name the line."""
    if path.suffix not in (".json", ".jsonl"):
        raise FlashI2VError(f"clip index {path} must be a .json list, a .jsonl file or a folder of videos")
    text = _read_text(path)
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    raw = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as e:
                    msg = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
                    raise FlashI2VError(
                        f"{path} line {n} is not valid JSON ({msg}); fix or remove that line"
                    ) from None
                if isinstance(raw, list):
                    raise FlashI2VError(f"{path} line {n} holds a JSON list, but a .jsonl index has one record "
                                        "{...} per line; rename a list file to .json")
                rows.append((f"{path} line {n}", raw))
        return rows
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise FlashI2VError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); fix the file") from None
    except RecursionError:
        raise FlashI2VError(f"{path} nests too deeply to be a clip index; fix the file") from None
    if isinstance(rows, dict):
        raise FlashI2VError(f"{path} holds one JSON object, but a .json index must be a list [...] of clip records; "
                            "wrap it in [ ] (or write one record per line to a .jsonl file)")
    if not isinstance(rows, list):
        raise FlashI2VError(f"{path} must hold a JSON list of clip records, not a {type(rows).__name__}")
    return [(f"{path} record {i}", raw) for i, raw in enumerate(rows)]


def _parse_record(raw: Any, root: Path, where: str) -> ClipRecord:
    """Validate one raw record; relative paths are taken relative to the index's folder. Every wrong field
    is one error naming the file, the line (or record) and the field."""
    if not isinstance(raw, dict):
        raise FlashI2VError(f'{where} is a {type(raw).__name__}, not a record {{"path": ..., "cap": ...}}; fix that line')
    missing = [k for k in ("path", "cap") if k not in raw]
    if missing:
        raise FlashI2VError(f'{where} lacks the field "{missing[0]}" (every record needs "path" and "cap"); fix that record')
    path = raw["path"]
    if not isinstance(path, str) or not path.strip() or "\0" in path:
        raise FlashI2VError(f'{where}: field "path" must be a non-empty file path, got {path!r}; fix that record')
    res = raw.get("resolution")
    if res is not None and not isinstance(res, dict):
        raise FlashI2VError(f'{where}: field "resolution" must be {{"height": H, "width": W}}, got {res!r}; fix that record')
    res = res or {}
    return ClipRecord(
        path=_abs(root / path),
        cap=_caption(raw["cap"], where),
        height=_positive(res.get("height"), int, where, "resolution.height"),
        width=_positive(res.get("width"), int, where, "resolution.width"),
        fps=_positive(raw.get("fps"), float, where, "fps"),
        num_frames=_positive(raw.get("num_frames"), int, where, "num_frames"),
        cut=_cut(raw.get("cut"), where),
        extra={k: v for k, v in raw.items() if k not in _KNOWN_KEYS},
    )


def _caption(cap: Any, where: str = "record") -> str:
    """Some indexes store several captions per clip; the first one is used so that training is deterministic."""
    if isinstance(cap, list):
        cap = cap[0] if cap else ""
    if not isinstance(cap, str):
        raise FlashI2VError(f'{where}: field "cap" must be text (or a list of texts), got {cap!r}; fix that record')
    return cap


def _abs(path: str | os.PathLike) -> str:
    """Absolute, normalised, symlinks kept: the path the user wrote, anchored (absolute input stays as is)."""
    return os.path.normpath(os.path.abspath(path))


def _positive(value: Any, kind: type, where: str, name: str) -> Any:
    """An optional stream fact: absent/null, or a positive number (an integer where ``kind`` is int).

    Numbers written as strings ("25") or whole floats (25.0 frames) are what some tools emit and are taken;
    anything else (0, negatives, NaN, "abc", lists, booleans) is refused: a 0 height would divide by zero
    in filtering and a 0 fps would never sample a frame."""
    if value is None:
        return None
    number = None
    if not isinstance(value, bool):
        try:
            number = float(value) if isinstance(value, (int, float, str)) else None
        except ValueError:
            number = None
    ok = number is not None and math.isfinite(number) and number > 0 and (kind is float or number == int(number))
    if not ok:
        want = "a positive integer" if kind is int else "a positive number"
        raise FlashI2VError(f'{where}: field "{name}" must be {want}, got {value!r}; fix or drop that field')
    return kind(number) if kind is float else int(number)


def _cut(value: Any, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value) and 0 <= value[0] < value[1])
    if not ok:
        raise FlashI2VError(
            f'{where}: field "cut" is {value!r}; use [start, end) source frame indices with 0 <= start < end'
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
    return [ClipRecord(path=_abs(v), cap=_read_text(v.with_suffix(".txt")).strip()) for v in videos]
