"""Pool ``tune_sampling.py`` grids run at several seeds: one row per sampling setting over every seed's videos.

Each folder is one seed's ``--out`` of ``tune_sampling.py`` (its ``grid.json`` keeps the per-video rows). A setting's
row gives the largest drift per seed, then ``flashi2v.eval.quality.summarise_seeds`` over all of them: mean drift,
videos within the 3 % bar, prompt following, frame-0 PSNR, still / pan motion and the knob's gain; ``--by-photo``
adds each photo's largest and mean drift.

    for S in 0 1 2 3 4; do python scripts/builtin/tune_sampling.py ... --seed $S --out outputs/sweep/s$S; done
    python scripts/builtin/pool_seeds.py outputs/sweep/s0 outputs/sweep/s1 outputs/sweep/s2 outputs/sweep/s3 outputs/sweep/s4
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from flashi2v.eval.quality import DIRECTIONAL, DRIFT_BAR, QualityReport, summarise_seeds

SETTING = ("steps", "guidance", "shift", "cutoff", "guidance_mode")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="tune_sampling.py output folders, one per seed")
    ap.add_argument("--json", help="write the pooled rows here")
    ap.add_argument("--by-photo", action="store_true", help="also each photo's drift and motions, per setting")
    args = ap.parse_args()
    by_setting: dict[tuple, dict[int, QualityReport]] = defaultdict(dict)
    for folder in args.folders:
        for row in json.loads((Path(folder) / "grid.json").read_text()):
            summary = {k: v for k, v in row.items() if k not in ("videos", "bars", "seed", *SETTING)}
            seed = row.get("seed", Path(folder).name)  # grids written before the seed was recorded: the folder's name
            by_setting[tuple(row[k] for k in SETTING)][seed] = QualityReport(row["videos"], summary)
    print("| steps | guidance | mode | shift | cutoff | drift max per seed | drift mean | videos within 3 % | seeds meeting the bar "
          "| accuracy | frame-0 PSNR | still / pan | knob gain (dB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    pooled_rows = []
    for setting, reports in sorted(by_setting.items()):
        pooled = summarise_seeds(dict(sorted(reports.items(), key=lambda item: str(item[0]))))
        pooled_rows.append({**dict(zip(SETTING, setting)), **pooled})
        still, pan = pooled["still_motion"], pooled["pan_motion"]
        steps, guidance, shift, cutoff, mode = setting
        maxima = " / ".join(f"{s['colour_drift_max']:.2f}" for s in pooled["per_seed"].values())
        print(f"| {steps} | {guidance} | {mode} | {shift} | {cutoff} | {maxima} | {pooled['colour_drift_mean']:.2f} | "
              f"{pooled['within_bar']}/{pooled['videos']} | {len(pooled['seeds_bar_met'])} of {len(reports)} | "
              f"{100 * pooled['direction_accuracy']:.0f} % | {pooled['psnr_frame0']:.2f} | {still:.2f} / {pan:.2f} | "
              f"{pooled['knob_gain_db']:+.2f} |")
    if args.by_photo:
        print("\n| steps | guidance | mode | shift | cutoff | photo | drift max / mean % | videos within 3 % | motions read right |")
        print("|---|---|---|---|---|---|---|---|---|")
        for setting, reports in sorted(by_setting.items()):
            videos = [r for report in reports.values() for r in report.rows if not r.get("knob") and r["motion"] in DIRECTIONAL]
            for photo in sorted({r["photo"] for r in videos}):
                drift = [r["colour_drift"] for r in videos if r["photo"] == photo]
                correct = sum(r["correct"] for r in videos if r["photo"] == photo)
                steps, guidance, shift, cutoff, mode = setting
                print(f"| {steps} | {guidance} | {mode} | {shift} | {cutoff} | {photo} | {max(drift):.2f} / {np.mean(drift):.2f} | "
                      f"{sum(d <= DRIFT_BAR for d in drift)}/{len(drift)} | {correct}/{len(drift)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(pooled_rows, indent=1))


if __name__ == "__main__":
    main()
