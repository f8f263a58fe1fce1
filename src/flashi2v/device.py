"""Which device to run on, and how much memory it has. torch is imported inside the functions, so the
CLI can import this module while it only parses flags."""

from __future__ import annotations

import os

from .errors import FlashI2VError


def resolve_device(name=None) -> str:
    """'auto' (or None) -> 'cuda' when a GPU is visible, else 'cpu'. A device this machine does not have is
    a FlashI2VError naming the one to use instead. Accepts a torch.device too."""
    import torch

    name = str(name) if name is not None else "auto"
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise FlashI2VError(f"device {name!r} is not available (no CUDA GPU visible to torch): use device 'cpu'")
        index_text = name.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise FlashI2VError(f"device {name!r} is not a device name: use cuda or cuda:N with N a GPU index")
        if int(index_text) >= torch.cuda.device_count():
            raise FlashI2VError(f"device {name!r} is not available: only {torch.cuda.device_count()} GPU(s); use cuda:0")
    elif name == "mps":
        if not torch.backends.mps.is_available():
            raise FlashI2VError("device 'mps' is not available on this machine: use device 'cpu'")
    elif name != "cpu":
        raise FlashI2VError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return name


def device_memory_bytes(device) -> int | None:
    """Total memory of ``device`` (a GPU's memory, or the machine's RAM for the CPU); None if unknown."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # not a POSIX system
            return None
    return None
