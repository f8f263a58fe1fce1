"""Colour drift frame by frame: does a video jump at the first later latent frame or drift steadily?

For each (photo, motion, seed) it generates the video as ``flashi2v eval motion`` does and prints the aligned
colour drift of every frame against frame 0 (``flashi2v.eval.motion.colour_drift`` on the frames up to t),
and the mean R / G / B of a few frames.

    python scripts/builtin/drift_per_frame.py --photos .kit/held_out \\
        --videos astronaut:tilt_up:0 coffee:zoom_out:1 astronaut:zoom_out:0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flashi2v import FlashI2VPipeline
from flashi2v.eval.motion import as_frames, colour_drift, pair_motions
from flashi2v.eval.quality import _prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--photos", default=".kit/held_out")
    ap.add_argument("--videos", nargs="+", default=["astronaut:tilt_up:0", "coffee:zoom_out:1", "astronaut:zoom_out:0"],
                    help="photo:motion:seed triples")
    args = ap.parse_args()
    pipe = FlashI2VPipeline.from_pretrained(args.model)
    for spec in args.videos:
        photo, motion, seed = spec.split(":")
        out = pipe(str(Path(args.photos) / f"{photo}.png"), _prompt(motion), seed=int(seed), progress=False)
        frames = as_frames(out.frames)
        motions = pair_motions(frames)
        drift = [colour_drift(frames[:t + 1], motions=motions[:t]) for t in range(1, len(frames))]
        print(f"{photo} {motion} seed {seed}: drift of frames 1..{len(frames) - 1} vs frame 0 (%):",
              " ".join(f"{d:.2f}" for d in drift))
        means = {t: frames[t].reshape(-1, 3).mean(axis=0) for t in (0, len(frames) // 2, len(frames) - 1)}
        print("  mean R / G / B:", "; ".join(f"frame {t}: {m[0]:.0f} / {m[1]:.0f} / {m[2]:.0f}" for t, m in means.items()))


if __name__ == "__main__":
    main()
