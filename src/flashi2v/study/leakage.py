"""`flashi2v study leakage CONFIG`: the stages in order, each skipped where its outputs are already complete."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import FlashI2VError
from .config import STAGES, LeakageStudyConfig, study_from_dict


def _study_file(c: LeakageStudyConfig, root: Path) -> None:
    """study.json: the config the results belong to. A folder holding another study's results is refused (its
    runs would be mixed with this one's), except for settings that only the report reads."""
    path = root / "study.json"
    mine = c.to_dict()
    if path.is_file():
        try:
            theirs = json.loads(path.read_text())
        except ValueError:
            theirs = None
        def same(d: dict | None) -> dict:
            d = {k: v for k, v in (d or {}).items() if k not in ("jobs", "fill_minutes", "probe_steps")}
            if c.fill_minutes is not None:  # the probe sets the steps
                d["train"] = {**d.get("train", {}), "recipe": {k: v for k, v in d.get("train", {}).get("recipe", {}).items()
                                                              if k != "steps"}}
            return d

        if same(theirs) != same(mine):
            raise FlashI2VError(f"'{root}' holds the results of another study config (study.json differs): give "
                                "another --out, or the same config")
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mine, indent=1) + "\n")


def run_leakage_study(c: LeakageStudyConfig, out: str | Path, stages=STAGES, device: str = "auto",
                      progress: bool = True, config_name: str = "CONFIG", log=print) -> Path | None:
    """Run ``stages`` (a subset of STAGES, in their order) of the study into ``out``; returns the report's path
    when the report stage ran."""
    from .report import evaluate_all, write_report
    from .runs import generate_all, train_all
    from .sets import prepare

    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise FlashI2VError(f"unknown stage(s) {unknown}: choose from {', '.join(STAGES)}")
    root = Path(out)
    steps_file = root / "filled_steps.json"
    if steps_file.is_file():  # the steps a GPU probe chose are part of the results' config
        c.train.setdefault("recipe", {})["steps"] = json.loads(steps_file.read_text())["steps"]
        c = study_from_dict(c.to_dict())
    if "prepare" in stages and not (root / "kit" / "sets").is_dir():
        _study_file(c, root)
        prepare(c, root, log=log)
    if "train" in stages:
        _study_file(c, root)
        train_all(c, root, device=device, progress=progress, log=log)
        _study_file(c, root)  # with the filled steps
    if "generate" in stages:
        generate_all(c, root, device=device, progress=progress, log=log)
    if "evaluate" in stages:
        evaluate_all(c, root, progress=progress, log=log)
    if "report" in stages:
        return write_report(c, root, config_name, log=log)
    return None
