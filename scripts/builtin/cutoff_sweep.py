"""What the Fourier cutoff (rho) does to the built-in model's output, on the held-out photos.

For each rho: frame-0 PSNR against the photo and the aligned colour drift, per video and on average,
over photos x camera prompts at the model's other defaults (same seed for every rho, so the videos are
paired). This is the detail knob's test with more videos than the two-point check in the quality report.

    python scripts/builtin/cutoff_sweep.py --photos held-out --rho 0.05 0.3 0.95
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np

from flashi2v.eval.motion import colour_drift, pair_motions, psnr
from flashi2v.eval.quality import evaluation_prompt
from flashi2v.photos import evaluation_photos
from flashi2v.pipeline import FlashI2VPipeline
from flashi2v.video import image_to_tensor, to_uint8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--photos", default="held-out", help="a folder, or 'held-out' (the built-in model's held-out photos)")
    ap.add_argument("--rho", type=float, nargs="+", default=[0.05, 0.3, 0.95])
    ap.add_argument("--motions", nargs="+", default=["pan_left", "tilt_up", "zoom_in"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    scratch = tempfile.TemporaryDirectory()
    photos = evaluation_photos(args.photos, scratch.name)
    pipe = FlashI2VPipeline.from_pretrained(args.model)
    d = pipe.defaults
    rows = []
    for rho in args.rho:
        for photo in photos:
            reference = to_uint8(image_to_tensor(str(photo), d["height"], d["width"]).permute(1, 2, 0)).numpy()
            for motion in args.motions:
                frames = pipe(str(photo), evaluation_prompt(motion), seed=args.seed, cutoff=rho, progress=False).frames.numpy()
                rows.append(dict(rho=rho, photo=photo.name, motion=motion, psnr_frame0=float(psnr(frames[0], reference)),
                                 colour_drift=float(colour_drift(frames, motions=pair_motions(frames)))))
                print(rows[-1], flush=True)
    print("\n| rho | videos | frame-0 PSNR dB, mean | paired difference to the lowest rho (dB) | colour drift %, mean / max |")
    print("|---|---|---|---|---|")
    low = np.array([r["psnr_frame0"] for r in rows if r["rho"] == args.rho[0]])
    for rho in args.rho:
        p = np.array([r["psnr_frame0"] for r in rows if r["rho"] == rho])
        dr = np.array([r["colour_drift"] for r in rows if r["rho"] == rho])
        diff = p - low
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
        print(f"| {rho} | {len(p)} | {p.mean():.2f} | {diff.mean():+.3f} +- {se:.3f} (SE) | {dr.mean():.2f} / {dr.max():.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
