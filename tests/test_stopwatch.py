"""flashi2v.stopwatch: the clock behind FlashI2VOutput.timings and the `times:` line of `flashi2v generate`."""

import subprocess
import sys

import pytest

from flashi2v.stopwatch import Stopwatch, add_times, format_times, seconds_since_process_start


def test_laps_add_up_per_stage_and_leave_no_gap():
    clock = Stopwatch(start=100.0)  # a start in the past: everything since then is the first lap
    first = clock.lap("encode")
    clock.lap("denoise")
    clock.lap("encode")  # a stage met twice (e.g. segments) accumulates
    assert first > 0 and list(clock.times) == ["encode", "denoise"]
    assert sum(clock.times.values()) == pytest.approx(clock.last - 100.0)


def test_add_times_and_format():
    total = add_times({"encode": 0.25, "denoise": 2.0}, {"grade": 0.5}, {"encode": 0.25, "denoise": 1.0})
    assert total == {"encode": 0.5, "denoise": 3.0, "grade": 0.5}
    assert (format_times({"load": 2.14, "decode": 0.0413, "write": 0.00052}, total=12.0)
            == "times: load 2.1 s, decode 0.041 s, write 0.00052 s, total 12.0 s")  # a short stage never reads as 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_process_age_counts_what_happened_before_python_code_ran():
    """A process that slept 0.3 s before asking is at least 0.3 s old: the CLI's "load" starts at the process start."""
    code = "import time; time.sleep(0.3); from flashi2v.stopwatch import seconds_since_process_start as s; print(s())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0.3 <= age < 60
    assert seconds_since_process_start() > 0
