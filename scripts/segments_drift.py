"""How chained segments drift, and what the counter-measures do, with the project's own clip metrics.

For every photo x camera prompt x seed, a 4-segment video per variant (no counter-measure, colour matching to
the input image or motion-aligned, sharpening, both, a Fourier cutoff decay; ``VARIANTS``). Counter-measures not named are off (0, decay 1). Per segment k (its frames in the joined video):

- colour drift: ``flashi2v.eval.motion.colour_drift`` from the video's frame 0 to segment k's last frame
  (motion-aligned, % of 0-255; the number the built-in model's quality bar uses),
- exposure: |mean luma of segment k's last frame - mean luma of frame 0|, % of 0-255,
- sharpness: ``flashi2v.eval.clip_metrics.sharpness`` of segment k over that of segment 1 (1 = as sharp),
- flicker: ``flashi2v.eval.clip_metrics.warping_error`` of segment k (mean).

Writes ``drift.jsonl`` (one row per video and segment, appended as they finish), ``drift.md`` (the table:
mean over videos per variant and segment) and, for the first photo / prompt / seed, each variant's mp4 and
PNG strip. CPU: about 40 s per 4-segment video of the built-in model.

    python scripts/segments_drift.py --out outputs/segments-drift
    python scripts/segments_drift.py --out outputs/segments-drift --table-only   # the table from drift.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from flashi2v.eval.clip_metrics import dense_flow, luma, sharpness, warping_error
from flashi2v.eval.motion import colour_drift
from flashi2v.eval.quality import evaluation_prompt
from flashi2v.photos import evaluation_photos
from flashi2v.video import save_png_strip

# name -> generate_segments keywords
VARIANTS = {
    "none": dict(),
    "colour image 1.0": dict(colour_match=1.0, colour_reference="image"),
    "colour aligned 1.0": dict(colour_match=1.0, colour_reference="aligned"),
    "sharpen 1.0": dict(sharpen=1.0),
    "colour image 1.0 + sharpen 1.0": dict(colour_match=1.0, colour_reference="image", sharpen=1.0),
    "colour aligned 1.0 + sharpen 1.0": dict(colour_match=1.0, colour_reference="aligned", sharpen=1.0),
    "cutoff decay 0.5": dict(cutoff_decay=0.5),
}
METRICS = ("colour_drift", "exposure", "sharpness", "flicker")


def segment_rows(frames: np.ndarray, num_frames: int, segments: int) -> list[dict]:
    """The drift metrics of each segment of a joined uint8 video (segment k: frames k (F-1) .. k (F-1) + F - 1)."""
    step = num_frames - 1
    gray = luma(frames)
    first_sharp = None
    rows = []
    for k in range(segments):
        part = slice(k * step, k * step + num_frames)
        sharp = sharpness(gray[part])
        first_sharp = first_sharp or sharp
        rows.append(dict(segment=k + 1,
                         colour_drift=colour_drift(frames[[0, part.stop - 1]]),
                         exposure=float(abs(gray[part.stop - 1].mean() - gray[0].mean()) / 255 * 100),
                         sharpness=sharp / first_sharp,
                         flicker=float(warping_error(dense_flow(frames[part])).mean())))
    return rows


def table(rows: list[dict], segments: int, variants: list[str]) -> str:
    """Mean over the videos (photo, motion, seed) measured with every one of ``variants``, so the rows are paired."""
    chains = set.intersection(*({(r["photo"], r["motion"], r["seed"]) for r in rows if r["variant"] == v}
                                for v in variants))
    lines = [f"{len(chains)} videos per variant ({', '.join(sorted(f'{p} {m} seed {s}' for p, m, s in chains))}).",
             "",
             "| variant | " + " | ".join(f"segment {k}: colour / exposure / sharpness / flicker"
                                         for k in range(1, segments + 1)) + " |",
             "|---|" + "---|" * segments]
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant and (r["photo"], r["motion"], r["seed"]) in chains]
        cells = []
        for k in range(1, segments + 1):
            seg = [r for r in mine if r["segment"] == k]
            cells.append(" / ".join(f"{np.mean([r[m] for r in seg]):.2f}" for m in METRICS) if seg else "")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--photos", default="held-out", help="a folder, or 'held-out' (the built-in model's held-out photos)")
    ap.add_argument("--motions", nargs="+", default=["pan_left", "static"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default="outputs/segments-drift")
    ap.add_argument("--table-only", action="store_true", help="only rebuild drift.md from drift.jsonl")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "drift.jsonl"
    if not args.table_only:
        from flashi2v.pipeline import FlashI2VPipeline

        scratch = tempfile.TemporaryDirectory()
        photos = evaluation_photos(args.photos, scratch.name)
        pipe = FlashI2VPipeline.from_pretrained(args.model)
        num_frames = pipe.resolve_settings().num_frames
        done = set()
        if log.exists():  # resume: skip the videos already measured
            done = {(r["variant"], r["photo"], r["motion"], r["seed"]) for r in map(json.loads, log.read_text().splitlines())}
        # every photo with every motion, ordered so that the first pass already mixes photos and motions
        chains = [(photo, args.motions[(i + m) % len(args.motions)], seed) for m in range(len(args.motions))
                  for i, photo in enumerate(photos) for seed in args.seeds]
        for photo, motion, seed in chains:
            for variant in args.variants:
                if (variant, photo.name, motion, seed) in done:
                    continue
                result = pipe.generate_segments(str(photo), evaluation_prompt(motion), args.segments, seed=seed,
                                                progress=False, **VARIANTS[variant])
                rows = segment_rows(result.frames.numpy(), num_frames, args.segments)
                with log.open("a") as f:
                    for row in rows:
                        f.write(json.dumps(dict(variant=variant, photo=photo.name, motion=motion, seed=seed, **row)) + "\n")
                print(variant, photo.name, motion, seed, [{m: round(r[m], 2) for m in METRICS} for r in rows], flush=True)
                if (photo, motion, seed) == chains[0]:
                    stem = f"{photo.stem}_{motion}_{variant.replace(' ', '_').replace('+', 'and')}"
                    result.save(out / f"{stem}.mp4")
                    save_png_strip(result.frames, out / f"{stem}.png", num=args.segments + 1)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    text = ("Mean over videos; colour drift and exposure in % of 0-255 from the video's frame 0 to the segment's "
            "last frame, sharpness of the segment relative to segment 1 of the same video, flicker = warping error.\n")
    for motion in args.motions:  # a pan leaves frame 0's content behind: its late colour drift compares new content
        text += f"\n**{motion}**: " + table([r for r in rows if r["motion"] == motion], args.segments, args.variants) + "\n"
    text += "\n**all**: " + table(rows, args.segments, args.variants) + "\n"

    (out / "drift.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
