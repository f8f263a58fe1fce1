"""Time the README's first command stage by stage: `flashi2v generate` in fresh processes, the median of each stage of
its `times:` line, and the process's whole wall time (which also holds the interpreter's exit, after the line).

    python scripts/stage_times.py --repeat 3            # the README command, 3 fresh processes
    python scripts/stage_times.py --repeat 5 --load-only  # import + FlashI2VPipeline.from_pretrained("builtin") only

--load-only works on any revision (it needs no `times:` line): run it with PYTHONPATH at another checkout's src/
to compare loads. The machine's core count and load average are printed too: on a shared machine the numbers
move with what else runs.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_ARGS = ["generate", "--image", str(ROOT / "assets/examples/astronaut.jpg"), "--prompt", "the camera pans left",
               "--seed", "0"]
LOAD_ONLY = "from flashi2v import FlashI2VPipeline; FlashI2VPipeline.from_pretrained('builtin')"


def run_once(load_only: bool, out: Path) -> tuple[float, dict[str, float]]:
    """(process wall seconds, the `times:` stages) of one fresh process."""
    command = (["-c", LOAD_ONLY] if load_only else
               ["-m", "flashi2v.cli", *README_ARGS, "--out", str(out), "--overwrite"])
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *command], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"stage_times: the command failed:\n{proc.stderr[-2000:]}")
    line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("times: ")), "")
    return wall, {stage: float(t) for stage, t in re.findall(r"(\w+) (\S+) s\b", line)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes (default %(default)s)")
    parser.add_argument("--load-only", action="store_true", help="time import + from_pretrained('builtin') only")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            runs.append(run_once(args.load_only, Path(tmp) / "demo.mp4"))
            wall, times = runs[-1]
            print(f"run {i + 1}: process {wall:.2f} s" + (f"; {', '.join(f'{k} {v:g}' for k, v in times.items())}"
                                                          if times else ""))
    stages = list(runs[0][1])
    medians = {stage: statistics.median(times[stage] for _, times in runs) for stage in stages}
    medians["process (incl. exit)"] = statistics.median(wall for wall, _ in runs)
    print(f"\nmedian of {args.repeat} ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} now):")
    for stage, seconds in medians.items():
        print(f"  {stage:22s} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
