"""`flashi2v eval videos GENERATED REFERENCE`: compare a folder of generated videos with a folder of
reference videos, paired by file name (stem), over the whole clip and chunk by chunk.

Per video (``clip_metrics``): optical-flow motion and VBench's dynamic rule, flicker, colour drift, fidelity
of frame 0 to the condition image. Per set: the means, the share of dynamic videos, a Frechet distance over
weight-free per-chunk features and, with I3D weights, FVD. Chunk-wise versions of all of them give curves
over time. Writes metrics.json, summary.md and curves.png.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from flashi2v.errors import FlashI2VError
from flashi2v.eval.clip_metrics import (
    FEATURE_NAMES,
    chunk_metrics,
    chunks,
    colour_offset,
    fidelity,
    is_dynamic,
)
from flashi2v.eval.frechet import MIN_SAMPLES, frechet_distance_of
from flashi2v.eval.motion import colour_drift

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mov", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CHUNK_METRICS = ("motion", "motion_top5", "dynamic", "flicker", "colour_drift", "psnr_first", "ssim_first")


@dataclass
class VideoEvalConfig:
    """Settings of one evaluation. ``chunk``: frames per chunk of the curves; ``images``: folder of condition
    images (by stem; default: each reference's frame 0); ``i3d``: ``i3d_torchscript.pt`` for FVD, or an
    already loaded ``InceptionI3d`` (reused across evaluations);
    ``vbench_names``: also copy the generated videos into ``out/vbench_i2v`` named ``{prompt}-{n}.mp4``;
    ``prompts``: JSON {stem: prompt} for those names (default: ``stem.txt`` beside the video or image)."""

    chunk: int = 16
    images: str | Path | None = None
    i3d: str | Path | torch.nn.Module | None = None
    vbench_names: bool = False
    prompts: str | Path | None = None
    colour_drift: bool = True
    chunk_drift: bool = True  # also per chunk (most of the evaluation's time: a motion fit per chunk)
    device: str = "cpu"


@dataclass
class _Set:
    """Everything measured on one side (generated or reference)."""

    rows: list[dict] = field(default_factory=list)  # per video: whole-clip metrics
    chunk_rows: list[list[dict]] = field(default_factory=list)  # per video, per chunk
    i3d: list[np.ndarray] = field(default_factory=list)  # per video: 400-d feature
    i3d_chunks: list[list[np.ndarray]] = field(default_factory=list)


# ---- inputs ----------------------------------------------------------------------------------------------


def list_videos(folder: str | Path, what: str) -> dict[str, Path]:
    """{stem: path} of the videos (``VIDEO_SUFFIXES``) in a folder, with one-line errors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FlashI2VError(f"{what} folder '{folder}' does not exist or is not a folder; pass a folder of videos")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file() and not path.name.startswith("."):  # hidden: temp files
            if path.stem in found:
                raise FlashI2VError(f"{what} folder '{folder}' has two videos named '{path.stem}' "
                                    f"({found[path.stem].name}, {path.name}); videos are paired by name, rename one")
            found[path.stem] = path
    if not found:
        raise FlashI2VError(f"{what} folder '{folder}' holds no videos ({'/'.join(s[1:] for s in VIDEO_SUFFIXES)})")
    return found


def pair_videos(generated: str | Path, reference: str | Path) -> list[tuple[str, Path, Path]]:
    """(stem, generated path, reference path) of every pair; the two folders must hold the same names."""
    gen, ref = list_videos(generated, "generated"), list_videos(reference, "reference")
    if set(gen) != set(ref):
        only_gen, only_ref = sorted(set(gen) - set(ref)), sorted(set(ref) - set(gen))
        listed = ", ".join([f"{s} (generated only)" for s in only_gen[:3]] + [f"{s} (reference only)" for s in only_ref[:3]])
        raise FlashI2VError(f"the folders differ: {len(gen)} generated vs {len(ref)} reference videos, "
                            f"{len(only_gen) + len(only_ref)} without a partner of the same name ({listed}); "
                            "videos are paired by file name")
    return [(stem, gen[stem], ref[stem]) for stem in sorted(gen)]


def find_images(folder: str | Path, stems: list[str]) -> dict[str, Path]:
    """{stem: condition image} for every stem, from a folder of images named like the videos."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FlashI2VError(f"--images '{folder}' is not a folder; pass the folder of condition images")
    images = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [s for s in stems if s not in images]
    if missing:
        raise FlashI2VError(f"--images '{folder}' has no image for {len(missing)} video(s) (e.g. '{missing[0]}'); "
                            "name each condition image like its video")
    return {s: images[s] for s in stems}


def _condition(image_path: Path | None, fallback: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 H x W x 3 condition image at the video's size (centre crop-resize, as generation prepares it)."""
    from flashi2v.video import center_crop_resize, image_to_tensor, to_uint8

    if image_path is not None:
        return to_uint8(image_to_tensor(image_path, height, width)).permute(1, 2, 0).numpy()
    if fallback.shape[:2] == (height, width):
        return fallback
    x = torch.from_numpy(fallback).permute(2, 0, 1).float()
    return center_crop_resize(x, height, width).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _read(path: Path) -> tuple[np.ndarray, float]:
    from flashi2v.video import read_video_frames

    frames, fps = read_video_frames(path)
    return frames.numpy(), fps


# ---- measuring -------------------------------------------------------------------------------------------


def _measure(frames: np.ndarray, fps: float, image: np.ndarray | None, config: VideoEvalConfig, i3d_model) -> tuple:
    """(whole-clip row, chunk rows, I3D feature, I3D chunk features) of one video."""
    from flashi2v.eval.i3d import MIN_FRAMES, i3d_features

    rows = chunk_metrics(frames, fps, config.chunk, image, drift=config.colour_drift and config.chunk_drift)
    whole = {
        "frames": len(frames),
        "fps": fps,
        "motion": float(np.mean([r["motion"] for r in rows])),
        "motion_top5": float(np.mean([r["motion_top5"] for r in rows])),
        "dynamic": bool(is_dynamic(frames, fps)),
        "flicker": float(np.mean([r["flicker"] for r in rows])),
        "colour_drift": float(colour_drift(frames[[0, -1]])) if config.colour_drift else None,
        "psnr_first": None,
        "ssim_first": None,
        "colour_offset_first": None,
        "features": np.mean([r["features"] for r in rows], axis=0).tolist(),
    }
    if image is not None:
        whole["psnr_first"], whole["ssim_first"] = fidelity(frames[0], image)
        whole["colour_offset_first"] = colour_offset(frames[0], image)
    else:
        for row in rows:
            row["psnr_first"] = row["ssim_first"] = None
    feature, chunk_features = None, []
    if i3d_model is not None:
        clip = torch.from_numpy(frames)
        feature = i3d_features(i3d_model, clip).numpy()
        if config.chunk >= MIN_FRAMES:
            chunk_features = [i3d_features(i3d_model, clip[part]).numpy() for part in chunks(len(frames), config.chunk)]
    return whole, rows, feature, chunk_features


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def evaluate_videos(generated: str | Path, reference: str | Path, out: str | Path,
                    config: VideoEvalConfig | None = None, on_video: Callable[[str, bool], None] | None = None) -> dict:
    """Measure both folders, write ``out``/metrics.json, summary.md and curves.png; returns the metrics dict.
    ``on_video(stem, ok)`` is called after each pair (the CLI's progress bar); a pair whose video cannot be
    decoded is skipped and counted."""
    config = config or VideoEvalConfig()
    chunks(config.chunk, config.chunk)  # validates --chunk before any decoding
    pairs = pair_videos(generated, reference)
    if len(pairs) < MIN_SAMPLES:
        raise FlashI2VError(f"{len(pairs)} video pair(s) is too few: the Frechet distances need at least {MIN_SAMPLES} "
                            "videos per folder")
    images = find_images(config.images, [s for s, _, _ in pairs]) if config.images else {}
    i3d_model = config.i3d if isinstance(config.i3d, torch.nn.Module) else None
    if config.i3d is not None and i3d_model is None:
        from flashi2v.eval.i3d import load_i3d

        i3d_model = load_i3d(config.i3d, device=config.device)
    sets, skipped, stems = {"generated": _Set(), "reference": _Set()}, [], []
    for stem, gen_path, ref_path in pairs:
        try:
            gen, gen_fps = _read(gen_path)
            ref, ref_fps = _read(ref_path)
            if min(len(gen), len(ref)) < config.chunk:
                raise FlashI2VError(f"'{stem}' has {min(len(gen), len(ref))} frames, fewer than one chunk ({config.chunk})")
        except FlashI2VError as err:
            skipped.append({"video": stem, "reason": str(err)})
            if on_video:
                on_video(stem, False)
            continue
        image_path = images.get(stem)
        gen_image = _condition(image_path, ref[0], *gen.shape[1:3])
        ref_image = _condition(image_path, ref[0], *ref.shape[1:3]) if image_path else None
        for name, frames, fps, image in (("generated", gen, gen_fps, gen_image), ("reference", ref, ref_fps, ref_image)):
            whole, rows, feature, chunk_features = _measure(frames, fps, image, config, i3d_model)
            target = sets[name]
            target.rows.append({"video": stem, **whole})
            target.chunk_rows.append(rows)
            target.i3d.append(feature)
            target.i3d_chunks.append(chunk_features)
        stems.append(stem)
        if on_video:
            on_video(stem, True)
    if len(stems) < MIN_SAMPLES:
        raise FlashI2VError(f"only {len(stems)} of {len(pairs)} video pairs could be read ({len(skipped)} skipped, e.g. "
                            f"{skipped[0]['reason'] if skipped else '-'}); the Frechet distances need at least {MIN_SAMPLES}")
    metrics = _summarise(sets, stems, skipped, config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.vbench_names:
        metrics["vbench_i2v"] = str(write_vbench_names(pairs, stems, out / "vbench_i2v", config))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / "summary.md").write_text(summary_markdown(metrics))
    metrics["plot"] = plot_curves(metrics, out / "curves.png")
    return metrics


def _summarise(sets: dict[str, _Set], stems: list[str], skipped: list[dict], config: VideoEvalConfig) -> dict:
    """Set means, share of dynamic videos, Frechet distances and the chunk-wise curves."""
    gen, ref = sets["generated"], sets["reference"]
    num_chunks = min(len(rows) for s in (gen, ref) for rows in s.chunk_rows)
    summary = {}
    for key in ("motion", "motion_top5", "flicker", "colour_drift", "psnr_first", "ssim_first", "colour_offset_first"):
        summary[key] = {side: _mean(r[key] for r in s.rows) for side, s in sets.items()}
    summary["dynamic_share"] = {side: float(np.mean([r["dynamic"] for r in s.rows])) for side, s in sets.items()}
    summary["feature_frechet"] = frechet_distance_of([r["features"] for r in gen.rows], [r["features"] for r in ref.rows],
                                                     "weight-free features")
    summary["fvd"] = frechet_distance_of(gen.i3d, ref.i3d, "I3D features") if gen.i3d and gen.i3d[0] is not None else None
    curves: dict[str, dict] = {"start": [gen.chunk_rows[0][k]["start"] for k in range(num_chunks)]}
    for key in CHUNK_METRICS:
        curves[key] = {side: [_mean(rows[k][key] for rows in s.chunk_rows) for k in range(num_chunks)]
                       for side, s in sets.items()}
    curves["feature_frechet"] = [
        frechet_distance_of([rows[k]["features"] for rows in gen.chunk_rows], [rows[k]["features"] for rows in ref.chunk_rows],
                            f"chunk {k} features") for k in range(num_chunks)
    ]
    curves["fvd"] = None
    if gen.i3d_chunks and gen.i3d_chunks[0]:
        curves["fvd"] = [frechet_distance_of([c[k] for c in gen.i3d_chunks], [c[k] for c in ref.i3d_chunks], f"chunk {k} I3D")
                         for k in range(num_chunks)]
    per_video = {side: [{k: v for k, v in r.items()} for r in s.rows] for side, s in sets.items()}
    return {
        "videos": len(stems),
        "skipped": skipped,
        "chunk": config.chunk,
        "chunks": num_chunks,
        "condition_images": bool(config.images),
        "feature_names": list(FEATURE_NAMES),
        "summary": summary,
        "curves": curves,
        "per_video": per_video,
    }


# ---- outputs ---------------------------------------------------------------------------------------------

_LABELS = {
    "motion": "motion, mean optical flow (px/frame)",
    "motion_top5": "motion, top-5 % flow (px/frame)",
    "dynamic_share": "dynamic videos (VBench rule on Farneback flow)",
    "flicker": "flicker, flow-warping error (levels)",
    "colour_drift": "colour drift from frame 0 (%)",
    "psnr_first": "PSNR of frame 0 vs condition image (dB)",
    "ssim_first": "SSIM of frame 0 vs condition image",
    "colour_offset_first": "colour cast of frame 0 vs condition image (%)",
}


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def summary_markdown(metrics: dict) -> str:
    """The metrics as a markdown report: set means, distances, chunk curves, skipped videos."""
    s = metrics["summary"]
    lines = [f"# Video evaluation: {metrics['videos']} pairs" + (f", {len(metrics['skipped'])} skipped" if metrics["skipped"] else ""),
             "", "| metric | generated | reference |", "|---|---|---|"]
    for key, label in _LABELS.items():
        lines.append(f"| {label} | {_fmt(s[key]['generated'])} | {_fmt(s[key]['reference'])} |")
    lines += ["", f"- Frechet distance of weight-free features: {_fmt(s['feature_frechet'])}",
              f"- FVD (I3D): {_fmt(s['fvd']) if s['fvd'] is not None else 'not computed (pass --i3d i3d_torchscript.pt)'}", ""]
    c = metrics["curves"]
    lines += [f"## Per chunk of {metrics['chunk']} frames (generated / reference)", "",
              "| chunk start | motion | flicker | colour drift | PSNR first | feature FD | FVD |", "|---|---|---|---|---|---|---|"]
    def pair(key: str, k: int) -> str:
        return f"{_fmt(c[key]['generated'][k])} / {_fmt(c[key]['reference'][k])}"

    for k, start in enumerate(c["start"]):
        fvd = _fmt(c["fvd"][k]) if c["fvd"] else "-"
        lines.append(f"| {start} | {pair('motion', k)} | {pair('flicker', k)} | {pair('colour_drift', k)} | "
                     f"{pair('psnr_first', k)} | {_fmt(c['feature_frechet'][k])} | {fvd} |")
    if metrics["skipped"]:
        lines += ["", "## Skipped", ""] + [f"- {r['video']}: {r['reason']}" for r in metrics["skipped"]]
    return "\n".join(lines) + "\n"


def plot_curves(metrics: dict, path: Path) -> str | None:
    """PNG of the chunk-wise curves (generated vs reference, and the distances); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    c = metrics["curves"]
    panels = ["motion", "dynamic", "flicker", "colour_drift", "psnr_first", "feature_frechet"] + (["fvd"] if c["fvd"] else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2))
    for ax, key in zip(axes, panels):
        if isinstance(c[key], dict):
            for side, style in (("generated", "-o"), ("reference", "--s")):
                ax.plot(c["start"], [np.nan if v is None else v for v in c[key][side]], style, label=side)
            ax.legend(fontsize=7)
        else:
            ax.plot(c["start"], c[key], "-o", color="C3")
        titles = {"feature_frechet": "Frechet dist., weight-free", "fvd": "FVD (I3D)", "dynamic": _LABELS["dynamic_share"],
                  "psnr_first": "PSNR of the chunk's first frame vs condition image (dB)", "colour_drift": "colour drift from frame 0 to chunk end (%)"}
        ax.set_title(titles.get(key, _LABELS.get(key, key)),
                     fontsize=8)
        ax.set_xlabel("chunk start frame", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def _prompt_for(stem: str, video: Path, prompts: dict, image_dir: Path | None) -> str | None:
    if stem in prompts:
        return str(prompts[stem])
    for folder in (video.parent, image_dir):
        if folder is not None and (folder / f"{stem}.txt").is_file():
            return (folder / f"{stem}.txt").read_text(encoding="utf-8").strip()
    return None


def write_vbench_names(pairs: list[tuple[str, Path, Path]], stems: list[str], folder: Path, config: VideoEvalConfig) -> Path:
    """Copy the generated videos to ``folder`` under VBench's naming, ``{prompt}-{n}.mp4`` with n = 0, 1, ...
    over the videos of one prompt (VBench-I2V samples each image's prompt several times). Non-mp4 videos are
    re-encoded to mp4; an existing different file is never overwritten."""
    from flashi2v.video import read_video_frames, write_mp4

    prompts: dict = {}
    if config.prompts:
        try:
            prompts = json.loads(Path(config.prompts).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise FlashI2VError(f"cannot read --prompts '{config.prompts}': {err}; pass a JSON file {{\"stem\": \"prompt\"}}") from None
        if not isinstance(prompts, dict):
            raise FlashI2VError(f"--prompts '{config.prompts}' must hold a JSON object {{\"stem\": \"prompt\"}}")
    image_dir = Path(config.images) if config.images else None
    counts: dict[str, int] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for stem, video, _ in pairs:
        if stem not in stems:
            continue
        prompt = _prompt_for(stem, video, prompts, image_dir)
        if not prompt:
            raise FlashI2VError(f"--vbench-names needs the prompt of '{stem}': put it in {stem}.txt beside the video "
                                "or the image, or pass --prompts FILE.json")
        safe = prompt.replace("/", " ").replace("\0", " ")  # a prompt is a file name: no path separators
        n = counts.get(safe, 0)
        counts[safe] = n + 1
        target = folder / f"{safe}-{n}.mp4"
        if target.exists():
            if video.suffix.lower() == ".mp4" and target.read_bytes() == video.read_bytes():
                continue
            raise FlashI2VError(f"'{target}' already exists; remove it or choose another --out")
        try:
            if video.suffix.lower() == ".mp4":
                shutil.copyfile(video, target)
            else:
                frames, fps = read_video_frames(video)
                write_mp4(frames, target, fps=fps or 16)
        except OSError as err:  # e.g. a prompt too long for a file name
            raise FlashI2VError(f"cannot write '{target.name[:80]}...' for --vbench-names ({err.strerror}); shorten the prompt") from None
    return folder
