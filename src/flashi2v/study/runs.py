"""Stages ``train`` and ``generate``: every (paradigm, seed) run trained as its own ``flashi2v train`` process
(several at once share one GPU), then sampled on both evaluation sets with the same settings and noise."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from ..errors import FlashI2VError
from .config import LeakageStudyConfig, run_name, train_config
from .sets import SETS, kit_dir, read_prompts, render_training_clips, set_dir


def run_dir(root: str | Path, name: str) -> Path:
    return Path(root) / "runs" / name


def _steps_done(folder: Path) -> int:
    """The last step a run logged (0 if none); metrics.jsonl has one row per step."""
    try:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0


def _finished(folder: Path, steps: int) -> bool:
    return (folder / "ema_transformer" / "config.json").is_file() and _steps_done(folder) >= steps


def _launch(config, yaml_path: Path, log_path: Path, device: str, resume: bool) -> subprocess.Popen:
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    yaml_path.write_text(yaml.safe_dump(json.loads(json.dumps(config.to_dict())), sort_keys=False))
    cmd = [sys.executable, "-m", "flashi2v.cli", "train", str(yaml_path), "--device", device]
    cmd += ["--resume"] if resume else ["--overwrite"]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=log_path.open("a"), stderr=subprocess.STDOUT, env=env)


def _run_all(jobs: list[tuple[str, object, bool]], root: Path, device: str, parallel: int, progress: bool,
             what: str) -> list[str]:
    """Run ``(name, TrainConfig, resume)`` jobs, ``parallel`` at a time, with one progress bar over all their
    steps; returns the names that failed (their logs say why)."""
    from tqdm import tqdm

    total = sum(cfg.recipe.steps for _, cfg, _ in jobs)
    waiting, running, failed = list(jobs), {}, []
    bar = tqdm(total=total, desc=what, unit="step", disable=not progress, smoothing=0.05)
    done_before = {name: _steps_done(Path(cfg.output.dir)) if resume else 0 for name, cfg, resume in jobs}
    bar.update(sum(done_before.values()))
    if parallel == 1:  # one at a time: in this process (no interpreter start per run); errors surface as they are
        from ..train import train

        for name, cfg, resume in jobs:
            train(cfg, resume=True if resume else None, device=device, progress=False, overwrite=not resume)
            bar.update(cfg.recipe.steps - done_before[name])
        bar.close()
        return failed
    while waiting or running:
        while waiting and len(running) < parallel:
            name, cfg, resume = waiting.pop(0)
            log = Path(cfg.output.dir).with_suffix(".log")
            running[name] = (_launch(cfg, log.with_suffix(".yaml"), log, device, resume), cfg)
        time.sleep(2.0)
        done = sum(min(_steps_done(Path(cfg.output.dir)), cfg.recipe.steps) for _, cfg, _ in jobs)
        bar.update(done - bar.n)
        for name, (proc, cfg) in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                if proc.returncode != 0:
                    failed.append(name)
    bar.close()
    return failed


def _probe_steps(c: LeakageStudyConfig, root: Path, device: str, parallel: int, progress: bool, log) -> int:
    """recipe.steps that fill ``c.fill_minutes`` when every run trains at once: a few steps of each, side by side,
    timed (the slowest run's median step time after the first third)."""
    probe_root = root / "probe"
    jobs = []
    for p in c.paradigms:
        for s in c.seeds:
            cfg = train_config(c, probe_root, p, s)
            cfg.recipe.steps, cfg.output.checkpoint_every = c.probe_steps, 10**9
            cfg.data.clips, cfg.model.components = str(root / "train_clips.safetensors"), str(kit_dir(root) / "components")
            jobs.append((run_name(p, s), cfg, False))
    failed = _run_all(jobs, probe_root, device, parallel, progress, "probe")
    if failed:
        raise FlashI2VError(f"study: the probe of {', '.join(failed)} failed ({_last_error(probe_root, failed[0])}): "
                            f"see {probe_root / 'runs'}/<run>.log")
    paces = []
    for _, cfg, _ in jobs:
        rows = [json.loads(line) for line in (Path(cfg.output.dir) / "metrics.jsonl").read_text().splitlines()]
        paces.append(statistics.median(r["sec_per_step"] for r in rows[len(rows) // 2:]))  # all runs stepping by then
    waves = -(-len(jobs) // parallel)  # runs go `parallel` at a time: the minutes are shared by the waves
    steps = max(1, int(0.97 * c.fill_minutes * 60 / (max(paces) * waves)))
    log(f"train: probe {max(paces):.3f} s/step for the slowest run, {parallel} side by side: {steps} steps x {waves} "
        f"wave(s) fill {c.fill_minutes} minutes")
    return steps


def _last_error(root: Path, name: str) -> str:
    """The first run's error line (the CLI prints errors as 'flashi2v: error: ...'), shortened."""
    try:
        lines = (root / "runs" / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [line.split("error:", 1)[1].strip() for line in lines if "flashi2v: " in line and "error:" in line]
    return (errors[-1] if errors else (lines[-1] if lines else "empty log"))[:200]


def train_all(c: LeakageStudyConfig, root: str | Path, device: str = "auto", progress: bool = True, log=print) -> dict:
    """Train every run that is not finished (a stopped one resumes from its checkpoint). Returns
    {run: steps}; a failed run is a one-line error naming its log."""
    root = Path(root)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    render_training_clips(c, root, log=log)
    parallel = c.jobs or (len(c.paradigms) * len(c.seeds) if device.startswith("cuda") else 1)
    if c.fill_minutes:
        steps_file = root / "filled_steps.json"
        if steps_file.is_file():
            steps = json.loads(steps_file.read_text())["steps"]
        else:
            steps = _probe_steps(c, root, device, parallel, progress, log)
            steps_file.write_text(json.dumps({"steps": steps, "fill_minutes": c.fill_minutes}) + "\n")
        c.train.setdefault("recipe", {})["steps"] = steps
    jobs = []
    for p in c.paradigms:
        for s in c.seeds:
            cfg = train_config(c, root, p, s)
            folder = Path(cfg.output.dir)
            if _finished(folder, cfg.recipe.steps):
                continue
            resume = (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir())
            jobs.append((run_name(p, s), cfg, resume))
    if jobs:
        log(f"train: {len(jobs)} run(s), {parallel} at a time on {device}")
        failed = _run_all(jobs, root, device, parallel, progress, "train")
        if failed:
            raise FlashI2VError(f"study: training of {', '.join(failed)} failed ({_last_error(root, failed[0])}): see "
                                f"{root / 'runs'}/<run>.log (rerun the train stage to resume)")
    return {name: _steps_done(run_dir(root, name)) for name in c.run_names()}


def assemble_pipeline(c: LeakageStudyConfig, root: str | Path, name: str) -> Path:
    """runs/<run>/pipeline: the run's EMA transformer beside the kit's components, with the study's sampler as
    its defaults (pipeline.json)."""
    import shutil

    from ..builtin import DEFAULTS
    from ..outputs import staged_folder

    folder = run_dir(root, name)
    ema = folder / "ema_transformer"
    if not (ema / "config.json").is_file():
        raise FlashI2VError(f"study: run {name} has no exported weights ({ema}): run the train stage first")
    config = train_config(c, root, *_split(name))
    s = c.sampling
    defaults = {**DEFAULTS, "num_frames": config.data.num_frames, "height": config.data.height,
                "width": config.data.width, "steps": s.steps, "guidance": s.guidance, "guidance_mode": s.guidance_mode,
                "shift": s.shift, "cutoff": s.cutoff, "negative_prompt": s.negative_prompt}
    with staged_folder(folder / "pipeline") as out:
        shutil.copytree(ema, out / "transformer")
        for part in ("vae", "text_encoder"):
            shutil.copytree(kit_dir(root) / "components" / part, out / part)
        (out / "pipeline.json").write_text(json.dumps({"signed_fourier": config.model.signed_fourier,
                                                       "defaults": defaults}, indent=2) + "\n")
    return folder / "pipeline"


def _split(name: str) -> tuple[str, int]:
    paradigm, seed = name.rsplit("-seed", 1)
    return paradigm, int(seed)


def videos_dir(root: str | Path, name: str, set_name: str) -> Path:
    return Path(root) / "videos" / name / set_name


def generate_all(c: LeakageStudyConfig, root: str | Path, device: str = "auto", progress: bool = True, log=print) -> None:
    """Every run on both sets: the same prompts, condition images, sampler and noise (the video's position in its
    set seeds it), so runs differ only in their weights."""
    from tqdm import tqdm

    from ..pipeline import FlashI2VPipeline
    from ..video import write_mp4

    root = Path(root)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    sets = {name: read_prompts(root, name) for name in SETS}
    total = len(c.run_names()) * sum(len(p) for p in sets.values())
    bar = tqdm(total=total, desc="generate", unit="video", disable=not progress)
    for name in c.run_names():
        pipe = FlashI2VPipeline.from_pretrained(assemble_pipeline(c, root, name), device=device)
        for set_name, prompts in sets.items():
            out = videos_dir(root, name, set_name)
            stems = sorted(prompts)
            for start in range(0, len(stems), c.sampling.batch):
                batch = stems[start:start + c.sampling.batch]
                if all((out / f"{stem}.mp4").is_file() for stem in batch):
                    bar.update(len(batch))
                    continue
                images = [str(set_dir(root, set_name) / "images" / f"{stem}.png") for stem in batch]
                # a generator per video, seeded by its position in the set: the same noise whatever the batching
                frames = pipe(images, [prompts[stem] for stem in batch], progress=False,
                              seed=[c.sampling.seed + stems.index(stem) for stem in batch]).frames
                for stem, video in zip(batch, frames):
                    write_mp4(video, out / f"{stem}.mp4", fps=c.train.get("data", {}).get("fps", 16))
                bar.update(len(batch))
        del pipe
    bar.close()
    log(f"generate: {total} videos under {root / 'videos'}")

