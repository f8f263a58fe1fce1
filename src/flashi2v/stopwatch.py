"""Wall time per stage of a generation: ``FlashI2VOutput.timings`` and the ``times:`` line of ``flashi2v generate``.

Imports nothing heavy (torch only for a CUDA device): the CLI starts its clock before torch is imported.
"""

from __future__ import annotations

import os
import time


class Stopwatch:
    """``lap(stage)`` adds the seconds since the previous lap (or the start) to ``times[stage]``, so consecutive laps
    cover the whole span between the first and the last without gaps.

    On a CUDA device each lap synchronises first: kernels run asynchronously, and without it a stage's GPU work would
    be counted in whichever later stage first waits for it.
    """

    def __init__(self, device=None, start: float | None = None):
        self.device = device if device is not None and _is_cuda(device) else None
        self.last = time.perf_counter() if start is None else start
        self.times: dict[str, float] = {}

    def lap(self, stage: str) -> float:
        if self.device is not None:
            import torch

            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        elapsed = now - self.last
        self.times[stage] = self.times.get(stage, 0.0) + elapsed
        self.last = now
        return elapsed


def _is_cuda(device) -> bool:
    return str(getattr(device, "type", device)).split(":")[0] == "cuda"


def add_times(*timings: dict[str, float]) -> dict[str, float]:
    """Stage-wise sum of several ``timings`` (e.g. the segments of a chained video), stages in first-seen order."""
    total: dict[str, float] = {}
    for times in timings:
        for stage, seconds in times.items():
            total[stage] = total.get(stage, 0.0) + seconds
    return total


def format_times(times: dict[str, float], total: float) -> str:
    """``times: load 2.1 s, encode 0.31 s, ..., total 11.9 s``: stages in the order given; two significant digits
    below a second, so a short stage does not read as 0."""
    parts = [f"{stage} {_seconds(t)} s" for stage, t in {**times, "total": total}.items()]
    return "times: " + ", ".join(parts)


def _seconds(t: float) -> str:
    return f"{t:.2g}" if t < 1 else f"{t:.1f}"


def seconds_since_process_start() -> float | None:
    """How long this process has been running (Linux: its start time in /proc/self/stat, in clock ticks of 10 ms
    since boot); None where that cannot be read. Lets the CLI's "load" include the interpreter's start and every
    import, which no clock started inside Python sees."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()  # the command name may hold spaces; it ends at ")"
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5): starttime, ticks since boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux, or no /proc
        return None
