"""Guidance only inside a sigma interval: does CFG at high or at low noise make the colour drift?

Kynkäänniemi et al. 2024 ("Applying guidance in a limited interval improves sample and distribution
quality") apply guidance only in a middle range of noise levels. Here each interval [lo, hi] runs the model's
guidance (mean-free CFG for the built-in model) at the steps whose sigma lies in it and the conditional branch
alone at the others; everything else is the model's default. For the 18 camera-motion videos of the held-out
photos (as ``flashi2v eval motion``, without its knob videos) it prints each video's aligned colour drift and
whether the motion was read right, then one summary line per interval.

    python scripts/builtin/guidance_interval.py --intervals 0:1.01 0:0.95 0:0.9 0.5:1.01 0.8:1.01 0.9:1.01 --seed 0
"""

from __future__ import annotations

import argparse
import tempfile

import flashi2v.pipeline as pipeline_module
from flashi2v import FlashI2VPipeline
from flashi2v.data.synthetic import evaluation_photos
from flashi2v.eval.motion import classify_motion, colour_drift, pair_motions
from flashi2v.eval.quality import DIRECTIONAL, _prompt

_plain_velocity = pipeline_module.flashi2v_velocity


def guided_inside(lo: float, hi: float):
    """A drop-in for ``flashi2v_velocity``: guided for lo <= sigma <= hi, the conditional branch elsewhere."""
    def velocity_factory(model, phi_s, s_high, context, negative_context=None, guidance=1.0, **kwargs):
        guided = _plain_velocity(model, phi_s, s_high, context, negative_context, guidance, **kwargs)
        conditional = _plain_velocity(model, phi_s, s_high, context, None, 1.0, **kwargs)
        return lambda z, sigma: guided(z, sigma) if lo <= float(sigma) <= hi else conditional(z, sigma)

    return velocity_factory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--photos", default="held-out", help='"held-out" or a folder of photos')
    ap.add_argument("--intervals", nargs="+", default=["0:1.01", "0.5:1.01"], help="lo:hi pairs of sigma")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pipe = FlashI2VPipeline.from_pretrained(args.model)
    summaries = []
    with tempfile.TemporaryDirectory() as tmp:
        photos = evaluation_photos(args.photos, tmp)
        for spec in args.intervals:
            lo, hi = (float(v) for v in spec.split(":"))
            pipeline_module.flashi2v_velocity = guided_inside(lo, hi)
            drifts, correct = [], 0
            for photo in photos:
                for motion in DIRECTIONAL:
                    frames = pipe(str(photo), _prompt(motion), seed=args.seed, progress=False).frames.numpy()
                    motions = pair_motions(frames)
                    ok = classify_motion(frames, motions=motions)[0] == motion
                    drifts.append(colour_drift(frames, motions=motions))
                    correct += ok
                    print(f"[{lo}, {hi}] {photo.stem} {motion}: drift {drifts[-1]:.2f} %, motion read right: {ok}",
                          flush=True)
            summaries.append(f"guidance for sigma in [{lo}, {hi}], seed {args.seed}: drift max {max(drifts):.2f} % / "
                             f"mean {sum(drifts) / len(drifts):.2f} %, {sum(d <= 3 for d in drifts)}/{len(drifts)} "
                             f"within 3 %, motion read right {correct}/{len(drifts)}")
            print(summaries[-1], flush=True)
    pipeline_module.flashi2v_velocity = _plain_velocity
    print("\n".join(summaries))


if __name__ == "__main__":
    main()
