"""JSON files of model folders (config.json, pipeline.json, shard indexes...) read with one-line errors.

``json.loads`` reports a bad file as a JSONDecodeError traceback without the file's name; these helpers
name the file, the line and column, or the key whose value has the wrong type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import FlashI2VError


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; missing, unreadable, non-UTF-8 or invalid JSON is a FlashI2VError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FlashI2VError(f"'{path}' does not exist: check the path or re-download the model folder") from None
    except IsADirectoryError:
        raise FlashI2VError(f"'{path}' is a directory, not a JSON file: check the path") from None
    except UnicodeDecodeError as err:
        raise FlashI2VError(f"'{path}' is not UTF-8 text (byte {err.start}): it is damaged or not a JSON file; "
                            "re-download or re-save it") from None
    except OSError as err:
        raise FlashI2VError(f"cannot read '{path}' ({err.strerror or err}): check its permissions") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FlashI2VError(f"'{path}' is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}): "
                            "fix or re-download it") from None
    except RecursionError:
        raise FlashI2VError(f"'{path}' nests too deeply to be a config file: re-download it") from None


def read_json_object(path: str | Path) -> dict:
    """A JSON file that must hold an object (a mapping of keys), as every config file does."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise FlashI2VError(f"'{path}' must hold a JSON object {{...}} of keys, not a {type(data).__name__}: "
                            "fix or re-download it")
    return data


def expect_type(data: dict, key: str, kinds: type | tuple[type, ...], path: str | Path, want: str) -> Any:
    """``data[key]`` when present and of ``kinds`` (bool is never taken for a number), else one error line."""
    value = data.get(key)
    if value is None:
        return None
    numeric = kinds in (int, float) or (isinstance(kinds, tuple) and (int in kinds or float in kinds))
    if not isinstance(value, kinds) or (numeric and isinstance(value, bool)):
        raise FlashI2VError(f"'{path}': key '{key}' must be {want}, got {value!r} ({type(value).__name__}); "
                            "fix the value or re-save the model")
    return value
