"""Colour drift frame by frame: does a video jump at the first later latent frame or drift steadily?

For each (photo, motion, seed) it generates the video as ``flashi2v eval motion`` does and prints the aligned
colour drift of every frame against frame 0 (``flashi2v.eval.motion.colour_drift`` on the frames up to t),
the mean R / G / B of a few frames, the camera path from frame 0 to the last frame (summed pair reads and
the direct fit), and for the last frame the signed change of each channel's mean on the
content both frames show (% of 0-255) and of its contrast (standard deviation, last / frame 0).

    python scripts/builtin/drift_per_frame.py \\
        --videos astronaut:pan_right:0 astronaut:zoom_out:0 coffee:zoom_out:0 rocket:zoom_out:0
"""

from __future__ import annotations

import argparse
import tempfile

from flashi2v import FlashI2VPipeline
from flashi2v.photos import evaluation_photos
from flashi2v.eval.motion import as_frames, colour_drift, end_to_end_motion, pair_motions, warp_by_motion
from flashi2v.eval.quality import evaluation_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--photos", default="held-out", help='"held-out" (copied from their packages) or a folder')
    ap.add_argument("--videos", nargs="+", default=["astronaut:tilt_up:0", "coffee:zoom_out:1", "astronaut:zoom_out:0"],
                    help="photo:motion:seed triples")
    args = ap.parse_args()
    pipe = FlashI2VPipeline.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as scratch:
        photos = {p.stem: p for p in evaluation_photos(args.photos, scratch)}
        for spec in args.videos:
            photo, motion, seed = spec.split(":")
            out = pipe(str(photos[photo]), evaluation_prompt(motion), seed=int(seed), progress=False)
            frames = as_frames(out.frames)
            motions = pair_motions(frames)
            drift = [colour_drift(frames[:t + 1], motions=motions[:t]) for t in range(1, len(frames))]
            print(f"{photo} {motion} seed {seed}: drift of frames 1..{len(frames) - 1} vs frame 0 (%):",
                  " ".join(f"{d:.2f}" for d in drift))
            means = {t: frames[t].reshape(-1, 3).mean(axis=0) for t in (0, len(frames) // 2, len(frames) - 1)}
            print("  mean R / G / B:", "; ".join(f"frame {t}: {m[0]:.0f} / {m[1]:.0f} / {m[2]:.0f}" for t, m in means.items()))
            sums, fit = motions.sum(axis=0), end_to_end_motion(frames, motions)
            print(f"  camera path frame 0 -> last (dy, dx, log scale): pair sums {sums[0]:.1f}, {sums[1]:.1f}, "
                  f"{sums[2]:.3f}; direct fit {fit[0]:.1f}, {fit[1]:.1f}, {fit[2]:.3f}")
            warped, seen = warp_by_motion(frames[0], fit)
            first, last = warped[seen], frames[-1].astype(float)[seen]
            change = (last.mean(axis=0) - first.mean(axis=0)) / 2.55
            print(f"  last frame, content seen in both: R / G / B change {change[0]:+.2f} / {change[1]:+.2f} / "
                  f"{change[2]:+.2f} %, contrast x{(last.std(axis=0) / first.std(axis=0)).mean():.3f}")

if __name__ == "__main__":
    main()
