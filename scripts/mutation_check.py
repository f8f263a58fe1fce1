"""Mutation check: break the method on purpose and require the test suite to notice.

For each mutant in MUTANTS, src/ is copied to a temporary folder, one exact text replacement is applied
there, and the tests that should catch it run against the copy (PYTHONPATH=<tmp>/src, `pytest -x`). A mutant
is *caught* when those tests fail; the check fails when any mutant survives, when a mutant's target text is
not found exactly once (the code moved: update the table, do not let the check pass silently), or when the
unmutated copy does not pass the same tests (a broken baseline would look like a caught mutant).

Run from the repo root: ``python scripts/mutation_check.py`` (``--list`` prints the table, ``--only NAME``
runs one mutant). CI runs it after pytest. About 2-3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to src/flashi2v/
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids / files, relative to the repo root


# One row per mutant: when src/ is refactored, update the text here (file, old, new) and the tests that catch it.
MUTANTS = [
    Mutant("velocity target sign", "flow.py",
           "return eps.float() - x.float()",
           "return x.float() - eps.float()",
           ("tests/test_flow.py",)),
    Mutant("Fourier high-pass mask (low-pass instead)", "fourier.py",
           "mask = centred_radius(h, w, s.device)[None] >= r_c.view(b, 1, 1)",
           "mask = centred_radius(h, w, s.device)[None] < r_c.view(b, 1, 1)",
           ("tests/test_fourier.py",)),
    Mutant("CFG combination (conditional branch as the base)", "sampling.py",
           "return v_uncond + guidance * (v_cond - v_uncond)",
           "return v_cond + guidance * (v_cond - v_uncond)",
           ("tests/test_flow.py", "tests/test_pipeline.py::test_latents_are_the_euler_integral_of_the_shifted_flow")),
    Mutant("latent shift not subtracted (the DiT input of every shifting paradigm)", "paradigms.py",
           "z = z - condition.shift",
           "z = z",
           ("tests/test_flow.py", "tests/test_pipeline.py::test_latents_are_the_euler_integral_of_the_shifted_flow")),
    Mutant("training objective feeds the unshifted state", "train/objective.py",
           "z = dit_input(flow.interpolation(x, eps, sigma), condition)",
           "z = flow.interpolation(x, eps, sigma)",
           ("tests/test_paradigms.py::test_objective_is_the_flow_loss_of_the_shifted_state",)),
    Mutant("concatenating paradigms drop their channels", "paradigms.py",
           "z = torch.cat([z, condition.extra.to(z)], dim=1)",
           "z = torch.cat([z, torch.zeros_like(condition.extra)], dim=1)",
           ("tests/test_paradigms.py",)),
    Mutant("EMA update weight (decay for 1 - decay)", "train/ema.py",
           "torch._foreach_lerp_(ema_params, params, 1.0 - decay)",
           "torch._foreach_lerp_(ema_params, params, decay)",
           ("tests/test_ema.py",)),
    Mutant("sampler resume ignores the saved position", "data/sampler.py",
           "self.epoch, self.offset = epoch, offset",
           "self.epoch, self.offset = 0, 0",
           ("tests/test_data.py::test_sampler_resume_reproduces_the_stream",
            "tests/test_data.py::test_sampler_resume_with_prefetch_uses_consumed_count")),
    Mutant("trainer resume does not restore the sampler", "train/trainer.py",
           'sampler.load_state_dict(state["sampler"])',
           "sampler.load_state_dict(sampler.state_dict())",
           ("tests/test_train.py::test_resume_reproduces_uninterrupted_run",)),
]


def mutated_text(mutant: Mutant, src: Path) -> str:
    """The file with mutant.old replaced by mutant.new; fail loudly unless the old text occurs exactly once."""
    path = src / "flashi2v" / mutant.file
    if not path.is_file():
        raise SystemExit(f"mutation_check: error: {mutant.name!r}: src/flashi2v/{mutant.file} does not exist; "
                         "update MUTANTS in scripts/mutation_check.py")
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(f"mutation_check: error: {mutant.name!r}: the target text occurs {count} times in "
                         f"src/flashi2v/{mutant.file} (need exactly 1): {mutant.old!r}; update MUTANTS")
    return text.replace(mutant.old, mutant.new)


def apply(mutant: Mutant, src: Path) -> None:
    text = mutated_text(mutant, src)
    (src / "flashi2v" / mutant.file).write_text(text)


def copy_src(dest: Path) -> Path:
    src = dest / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return src


def env_for(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PYTHONDONTWRITEBYTECODE": "1"}


def check_imports_from(src: Path) -> None:
    """The tests must import the copy, not an installed (editable) flashi2v: else every mutant would survive."""
    out = subprocess.run([sys.executable, "-c", "import flashi2v; print(flashi2v.__file__)"], env=env_for(src),
                         cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0 or not Path(out.stdout.strip()).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"mutation_check: error: with PYTHONPATH={src} flashi2v is imported from "
                         f"{out.stdout.strip() or out.stderr.strip()!r}, not from the copy")


def run_tests(src: Path, tests: tuple[str, ...]) -> tuple[bool, list[str], float]:
    """(passed, failed test ids, seconds) for ``pytest -x`` over ``tests`` against the copy at ``src``."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:warnings",
           "-o", "addopts=", "-rf", *tests]
    proc = subprocess.run(cmd, env=env_for(src), cwd=REPO, capture_output=True, text=True)
    failed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    if proc.returncode not in (0, 1):  # 2+: interrupted, usage or collection error: not a result about the code
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise SystemExit(f"mutation_check: error: pytest exited {proc.returncode} on {' '.join(tests)}:\n{tail}")
    return proc.returncode == 0, failed, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only mutants whose name contains NAME (repeatable)")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.only or any(o.lower() in m.name.lower() for o in args.only)]
    if args.list:
        for m in MUTANTS:
            print(f"{m.name}: src/flashi2v/{m.file}: {m.old!r} -> {m.new!r}; tests {', '.join(m.tests)}")
        return 0
    if not mutants:
        parser.error(f"no mutant matches {args.only}")

    with tempfile.TemporaryDirectory(prefix="flashi2v-mutants-") as tmp:
        tmp = Path(tmp)
        # 0. The unmutated copy passes every test the mutants use, and the tests really import the copy.
        base = copy_src(tmp / "baseline")
        check_imports_from(base)
        for m in mutants:  # a table that no longer matches the code fails before anything runs
            mutated_text(m, REPO / "src")
        all_tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        ok, failed, secs = run_tests(base, all_tests)
        print(f"baseline (no mutation): {'pass' if ok else 'FAIL'} in {secs:.0f} s over {len(all_tests)} test targets")
        if not ok:
            print(f"mutation_check: error: the unmutated code fails {failed}: fix the suite first", file=sys.stderr)
            return 1

        rows, survived = [], []
        for i, m in enumerate(mutants):
            src = copy_src(tmp / f"mutant{i}")
            apply(m, src)
            ok, failed, secs = run_tests(src, m.tests)
            result = "SURVIVED" if ok else "caught"
            if ok:
                survived.append(m.name)
            rows.append((m.name, m.file, " ".join(m.tests), ", ".join(failed) or "-", f"{result} ({secs:.0f} s)"))
            shutil.rmtree(src.parent)

    header = ("mutant", "file", "tests run", "tests that caught it", "result")
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if survived:
        print(f"\nmutation_check: error: {len(survived)} mutant(s) survived: {', '.join(survived)}; "
              "the tests listed for them do not check that behaviour", file=sys.stderr)
        return 1
    print(f"\nall {len(rows)} mutants caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
