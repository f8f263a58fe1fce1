"""Pick the built-in model's sampling defaults: measure the quality bars for a grid of settings.

For every combination of steps x guidance x shift x cutoff, ``flashi2v.eval.quality.evaluate_motion_model`` runs
on the held-out photos (frame-0 PSNR, prompt-following accuracy, colour drift, still vs pan motion, the
cutoff knob). The best setting is the one that passes the most bars, then has the highest accuracy, then
PSNR; it is measured again with frame strips saved, and written as ``best.json`` (the pipeline defaults).
``grid.json`` keeps every setting's summary and per-video rows; ``--final-seeds`` measures the best setting at
more seeds and pools their videos (``seeds.json``).

    python scripts/builtin/tune_sampling.py --model src/flashi2v/builtin_model --photos .kit/held_out \
        --text-encoder .kit/components/text_encoder --out outputs/tune --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from flashi2v.encoders import load_text_encoder
from flashi2v.eval.quality import evaluate_motion_model, seeds_table, summarise_seeds
from flashi2v.pipeline import FlashI2VPipeline
from flashi2v.sampling import GUIDANCE_MODES
from flashi2v.photos import photos_in


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="assembled pipeline folder")
    ap.add_argument("--photos", required=True, help="folder of held-out photos")
    ap.add_argument("--text-encoder", help="use this text encoder folder instead (e.g. the kit's precomputed table)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, nargs="+", default=[12, 20])
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0, 5.0])
    ap.add_argument("--shift", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    ap.add_argument("--cutoff", type=float, nargs="+", default=[0.1], help="Fourier cutoff rho of the default")
    ap.add_argument("--guidance-mode", nargs="+", default=["cfg"], choices=GUIDANCE_MODES,
                    help="how CFG combines its branches (flashi2v.sampling.GUIDANCE)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--final-seeds", type=int, nargs="*", default=[],
                    help="also measure the best setting at these seeds and pool them (seeds.json, the drift bar over many videos)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # e.g. on a GPU machine without the MiniLM package: the kit's copy of the text encoder. The folder's
    # pipeline.json (signed or modulus Fourier features, defaults) applies either way.
    text_encoder = (load_text_encoder(args.text_encoder, args.text_encoder, device=args.device)
                    if args.text_encoder else None)
    pipe = FlashI2VPipeline.from_pretrained(args.model, device=args.device, dtype=torch.float32, text_encoder=text_encoder)
    photos = photos_in(args.photos)
    base = dict(pipe.defaults)
    rows = []
    grid = itertools.product(args.steps, args.guidance, args.shift, args.cutoff, args.guidance_mode)
    for steps, guidance, shift, cutoff, mode in grid:
        pipe.defaults = {**base, "steps": steps, "guidance": guidance, "shift": shift, "cutoff": cutoff, "guidance_mode": mode}
        report = evaluate_motion_model(pipe, photos, None, seed=args.seed)
        s = report.summary
        rows.append({"seed": args.seed, "steps": steps, "guidance": guidance, "shift": shift, "cutoff": cutoff, "guidance_mode": mode,
                     "bars": sum(report.bars().values()), **s, "videos": report.rows})
        print(f"steps {steps} guidance {guidance} ({mode}) shift {shift} cutoff {cutoff}: bars {rows[-1]['bars']}/{len(report.bars())}, psnr {s['psnr_frame0']:.2f}, "
              f"accuracy {s['direction_accuracy']:.2f}, drift {s['colour_drift_max']:.2f}, still/pan "
              f"{s['still_motion']:.2f}/{s['pan_motion']:.2f}, rho {s['psnr_rho_low']:.2f}/{s['psnr_rho_high']:.2f}, "
              f"aligned {s.get('aligned_psnr_mean', float('nan')):.2f}/{s.get('aligned_psnr_min', float('nan')):.2f}", flush=True)
    # most bars met, then the camera prompts followed, then later frames that keep the photo, then frame 0
    best = max(rows, key=lambda r: (r["bars"], r["direction_accuracy"], r.get("aligned_psnr_mean", 0.0),
                                    r["psnr_frame0"], -r["steps"]))
    pipe.defaults = {**base, **{k: best[k] for k in ("steps", "guidance", "shift", "cutoff", "guidance_mode")}}
    report = evaluate_motion_model(pipe, photos, out / "best", seed=args.seed)
    (out / "grid.json").write_text(json.dumps(rows, indent=1))
    (out / "best.json").write_text(json.dumps(pipe.defaults, indent=1))
    print("| steps | guidance | mode | shift | cutoff | bars | PSNR | accuracy | drift | still / pan | PSNR rho low / high | aligned mean / min |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['steps']} | {r['guidance']} | {r['guidance_mode']} | {r['shift']} | {r['cutoff']} | {r['bars']} | {r['psnr_frame0']:.2f} | "
              f"{r['direction_accuracy']:.2f} | {r['colour_drift_max']:.2f} | {r['still_motion']:.2f} / {r['pan_motion']:.2f} | "
              f"{r['psnr_rho_low']:.2f} / {r['psnr_rho_high']:.2f} | {r.get('aligned_psnr_mean', float('nan')):.2f} / "
              f"{r.get('aligned_psnr_min', float('nan')):.2f} |")
    print(f"\nbest: {json.dumps(pipe.defaults)}\n{report.table()}")
    if args.final_seeds:
        reports = {args.seed: report}
        for seed in args.final_seeds:
            if seed not in reports:
                reports[seed] = evaluate_motion_model(pipe, photos, out / f"seed{seed}", seed=seed)
        pooled = summarise_seeds(reports)
        (out / "seeds.json").write_text(json.dumps(pooled, indent=1))
        print(seeds_table(pooled))


if __name__ == "__main__":
    main()
