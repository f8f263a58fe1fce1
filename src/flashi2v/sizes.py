"""Byte sizes as users write them (``--max-shard-size 2GB``), parsed strictly: garbage is one error line."""

from __future__ import annotations

import re

from .errors import FlashI2VError

# Binary units, as our shard writer has always used them: "5GB" is 5 * 2**30 bytes.
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*$")


def parse_size(size, what: str = "size") -> int:
    """5_000_000, '5GB', '500MB', '1.5GiB', '4096' -> bytes (> 0); anything else raises FlashI2VError."""
    what = f"{what} " if what else ""  # "" when the caller (argparse) names the option itself
    if isinstance(size, bool):
        raise FlashI2VError(f"{what}{size!r} is not a size: write e.g. 2GB, 500MB or a number of bytes")
    if isinstance(size, int):
        value = size
    else:
        m = _SIZE_RE.match(str(size))
        unit = m.group(2).upper() if m else None
        if not m or unit not in _UNITS:
            raise FlashI2VError(f"{what}{str(size)!r} is not a size: write e.g. 2GB, 500MB or a number of bytes")
        value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise FlashI2VError(f"{what}{size!r} must be more than 0 bytes: write e.g. 2GB or 500MB")
    return value


def format_size(n: int) -> str:
    """Bytes as people read them, in the binary units ``parse_size`` takes: 512 B, 3.2 MB, 17.4 GB."""
    for unit, scale in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
