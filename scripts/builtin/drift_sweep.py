"""Colour drift and prompt following of the built-in model under sampling settings other than its defaults.

For each setting, the 18 camera-motion videos of the photos (6 motions each, as ``flashi2v eval motion``, without
its still and knob videos) are generated and measured: each video's colour drift (``colour_drift``) and whether
its motion was read right (``classify_motion``), then one summary line. A setting is a comma-separated list of
pipeline defaults to override (``guidance=3``, ``cutoff=0.3``, ``steps=20``, ``shift=3``,
``guidance_mode=cfg``, ``solver=dpmpp_2m``), plus ``interval=lo:hi``: guidance only at the steps whose sigma lies in [lo, hi], the
conditional branch alone at the others (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval
improves sample and distribution quality"). ``default`` is the model's own settings. ``--json`` saves the rows.

    python scripts/builtin/drift_sweep.py --settings default cutoff=0.3 guidance=3 interval=0.5:1.01 --seed 0
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import flashi2v.pipeline as pipeline_module
from flashi2v import FlashI2VPipeline
from flashi2v.eval.motion import classify_motion, colour_drift, pair_motions
from flashi2v.eval.quality import DIRECTIONAL, evaluation_prompt
from flashi2v.photos import evaluation_photos

_plain_velocity = pipeline_module.conditioned_velocity


def guided_inside(lo: float, hi: float):
    """A drop-in for ``conditioned_velocity``: guided for lo <= sigma <= hi, the conditional branch elsewhere."""
    def velocity_factory(model, phi_s, s_high, context, negative_context=None, guidance=1.0, **kwargs):
        guided = _plain_velocity(model, phi_s, s_high, context, negative_context, guidance, **kwargs)
        conditional = _plain_velocity(model, phi_s, s_high, context, None, 1.0, **kwargs)
        return lambda z, sigma: guided(z, sigma) if lo <= float(sigma) <= hi else conditional(z, sigma)

    return velocity_factory


def parse_setting(spec: str) -> tuple[dict, tuple[float, float] | None]:
    """"cutoff=0.3,interval=0.5:1.01" -> ({"cutoff": 0.3}, (0.5, 1.01)); "default" -> ({}, None)."""
    overrides, interval = {}, None
    for item in ([] if spec == "default" else spec.split(",")):
        key, _, value = item.partition("=")
        if key == "interval":
            lo, hi = (float(v) for v in value.split(":"))
            interval = (lo, hi)
        else:
            overrides[key] = value if key in ("guidance_mode", "solver") else (int(value) if key == "steps" else float(value))
    return overrides, interval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--photos", default="held-out", help='"held-out" or a folder of photos')
    ap.add_argument("--settings", nargs="+", default=["default"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write every video's row here")
    args = ap.parse_args()
    pipe = FlashI2VPipeline.from_pretrained(args.model)
    base, rows, summaries = dict(pipe.defaults), [], []
    with tempfile.TemporaryDirectory() as tmp:
        photos = evaluation_photos(args.photos, tmp)
        for spec in args.settings:
            overrides, interval = parse_setting(spec)
            pipe.defaults = {**base, **overrides}
            pipeline_module.conditioned_velocity = guided_inside(*interval) if interval else _plain_velocity
            drifts, correct = [], 0
            for photo in photos:
                for motion in DIRECTIONAL:
                    frames = pipe(str(photo), evaluation_prompt(motion), seed=args.seed, progress=False).frames.numpy()
                    motions = pair_motions(frames)
                    ok = classify_motion(frames, motions=motions)[0] == motion
                    drifts.append(colour_drift(frames, motions=motions))
                    correct += ok
                    rows.append({"setting": spec, "seed": args.seed, "photo": photo.name, "motion": motion,
                                 "colour_drift": drifts[-1], "correct": bool(ok)})
                    print(f"{spec}: {photo.stem} {motion}: drift {drifts[-1]:.2f} %, motion read right: {ok}", flush=True)
            summaries.append(f"{spec}, seed {args.seed}: drift max {max(drifts):.2f} % / mean {sum(drifts) / len(drifts):.2f} %, "
                             f"{sum(d <= 3 for d in drifts)}/{len(drifts)} within 3 %, motion read right {correct}/{len(drifts)}")
            print(summaries[-1], flush=True)
    pipeline_module.conditioned_velocity = _plain_velocity
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print("\n".join(summaries))


if __name__ == "__main__":
    main()
