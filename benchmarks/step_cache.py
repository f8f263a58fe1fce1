"""Step-cache guard: does skipping transformer blocks across steps keep image-to-video motion?

Known failure of step caching (FBCache / TeaCache) in image-to-video: the reused block outputs freeze or
slow the motion. So a threshold ships only if, on held-out photos and camera pan / tilt / zoom prompts,
the mean motion magnitude (``flashi2v.eval.motion.motion_magnitude``, px/frame) and the mean frame-0
PSNR against the photo (``psnr``, dB) both stay within ``--tolerance`` (5 %) of the uncached run, with the
same seeds, while the time per denoising step drops.

For each threshold (plus the uncached baseline "off") and each photo x prompt x seed: one generation at
the model's default settings. Reports per threshold: step time (the transformer forwards of a
generation, timed around the model and synchronised on a GPU, divided by its steps; median over the
videos) and its measured speedup; ``block_speedup``, the ratio of block evaluations (noise-free: what
the speedup approaches when the blocks dominate); steps computed / skipped; motion ratio
and PSNR ratio vs uncached (ratio of the means; the worst single video is reported too), pass / fail by the
means, and how many videos kept both within the tolerance on their own. Prints the table last, then the
recommended threshold: the largest that passes by the means, skips steps and measured faster, with every
smaller threshold passing too; and the largest that keeps every single video within the bound. (The guard is
on the means: single videos with little global motion, zooms above all, move by more than 5 % either way
under small changes of their trajectory; on the built-in model skipping 1-2 of 12 steps moved one by 7.7 %,
docs/performance.md "Step caching".)
JSON (and with --save-videos the mp4s) -> --out.

    python benchmarks/step_cache.py                                   # the built-in model, CPU or GPU
    python benchmarks/step_cache.py --model DIR --thresholds 0.05 0.1 0.2
    python benchmarks/step_cache.py --tiny --photos-limit 1 --motions pan_left zoom_in   # smoke test
    python benchmarks/step_cache.py --from-json seed0/step_cache.json seeds12/step_cache.json   # pool runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import device_info, out_dir, randomize_, save_json, table

from flashi2v import FlashI2VError, FlashI2VPipeline
from flashi2v.captions import motion_caption
from flashi2v.photos import evaluation_photos
from flashi2v.eval.motion import motion_magnitude, psnr
from flashi2v.step_cache import FirstBlockCache, apply_step_cache, remove_step_cache
from flashi2v.video import image_to_tensor, to_uint8, write_mp4

THRESHOLDS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
MOTIONS = ("pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="builtin", help="pipeline folder or 'builtin' (default %(default)s)")
    p.add_argument("--tiny", action="store_true", help="random tiny pipeline (every weight random): a smoke test")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS),
                   help="step-cache thresholds to try (default %(default)s); the uncached run is always the baseline")
    p.add_argument("--warmup-steps", type=int, default=1, help="leading steps never skipped (default %(default)s)")
    p.add_argument("--final-steps", type=int, default=1, help="final steps never skipped (default %(default)s)")
    p.add_argument("--photos", default="held-out", help="folder of photos, or 'held-out' (default): the photos the "
                   "built-in model never trained on")
    p.add_argument("--photos-limit", type=int, default=None, help="use only the first N photos")
    p.add_argument("--motions", nargs="+", default=list(MOTIONS), help="camera motions to prompt (default: all six)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="generation seeds (default %(default)s)")
    p.add_argument("--tolerance", type=float, default=0.05, help="allowed relative change (default %(default)s)")
    for name in ("num-frames", "height", "width", "steps"):
        p.add_argument(f"--{name}", type=int, default=None, help=f"{name} (default: the model's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default %(default)s)")
    p.add_argument("--fast", action="store_true", help="on a GPU, apply the fast path (compiled blocks)")
    p.add_argument("--save-videos", action="store_true", help="write every generated mp4 under --out/videos")
    p.add_argument("--out", default=None, help="output folder (default $OUT or outputs/bench)")
    p.add_argument("--from-json", nargs="+", default=None, metavar="JSON",
                   help="generate nothing: pool the videos of earlier runs' step_cache.json files (e.g. other seeds) "
                        "and print their table")
    return p.parse_args(argv)


def build(args, device) -> FlashI2VPipeline:
    if args.tiny:
        from flashi2v.random_components import random_tiny_pipeline

        pipe = random_tiny_pipeline(seed=0)
        randomize_(pipe.transformer)  # Wan's zero head would make the output independent of the blocks
        return pipe.to(device)
    try:
        pipe = FlashI2VPipeline.from_pretrained(args.model, device=device)
    except FlashI2VError as err:
        raise SystemExit(f"error: {err}") from None
    if args.fast and torch.device(device).type == "cuda":
        pipe.enable_fast_path()
    return pipe


class ForwardTimer:
    """Wall time of every transformer forward (synchronised on a GPU): the part a step cache can shorten."""

    def __init__(self, model, device):
        self.cuda = torch.device(device).type == "cuda"
        self.times: list[float] = []
        self.handles = [model.register_forward_pre_hook(self._start), model.register_forward_hook(self._stop)]

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _start(self, *_):
        self._sync()
        self._t0 = time.perf_counter()

    def _stop(self, *_):
        self._sync()
        self.times.append(time.perf_counter() - self._t0)


def generate(pipe, photo: Path, motion: str, seed: int, threshold: float | None, args, settings):
    """One video; returns (its row, the pipeline output)."""
    if threshold is None:
        remove_step_cache(pipe.transformer)
    else:
        apply_step_cache(pipe.transformer, threshold, args.warmup_steps, args.final_steps)
    timer = ForwardTimer(pipe.transformer, pipe.device)
    try:
        t0 = time.perf_counter()
        out = pipe(str(photo), motion_caption(motion, "normal", 0), seed=seed, progress=False, **settings)
        total = time.perf_counter() - t0
    finally:
        for h in timer.handles:
            h.remove()
    cache: FirstBlockCache | None = pipe.transformer.step_cache
    remove_step_cache(pipe.transformer)
    steps = settings["steps"]
    frames = out.frames.numpy()
    reference = to_uint8(image_to_tensor(str(photo), settings["height"], settings["width"]).permute(1, 2, 0)).numpy()
    row = {"threshold": "off" if threshold is None else threshold, "photo": photo.stem, "motion": motion, "seed": seed,
           "step_s": sum(timer.times) / steps, "call_s": total, "forwards": len(timer.times),
           "blocks": len(pipe.transformer.blocks), "computed": steps if cache is None else cache.computed, "skipped": 0 if cache is None else cache.skipped,
           "decisions": "" if cache is None else "".join("s" if d else "C" for d in cache.decisions),
           "motion_magnitude": float(motion_magnitude(frames)), "psnr_frame0": float(psnr(frames[0], reference))}
    return row, out


def summarise(rows: list[dict], thresholds: list, tolerance: float) -> list[dict]:
    def of(th):
        return [r for r in rows if r["threshold"] == th]

    base_by_key = {(r["photo"], r["motion"], r["seed"]): r for r in of("off")}
    summary = []
    for th in ["off", *thresholds]:
        rs = of(th)
        base = [base_by_key[(r["photo"], r["motion"], r["seed"])] for r in rs]  # the same videos, uncached
        base_motion = np.mean([r["motion_magnitude"] for r in base])
        base_psnr = np.mean([r["psnr_frame0"] for r in base])
        base_step = np.median([r["step_s"] for r in base])
        motion = float(np.mean([r["motion_magnitude"] for r in rs]))
        quality = float(np.mean([r["psnr_frame0"] for r in rs]))
        step = float(np.median([r["step_s"] for r in rs]))  # median over videos: robust to a busy machine
        per_video_motion = [r["motion_magnitude"] / max(b["motion_magnitude"], 1e-9) for r, b in zip(rs, base)]
        per_video_psnr = [r["psnr_frame0"] / b["psnr_frame0"] for r, b in zip(rs, base)]
        within = [abs(m - 1) <= tolerance and abs(p - 1) <= tolerance for m, p in zip(per_video_motion, per_video_psnr)]
        motion_ratio, psnr_ratio = motion / max(base_motion, 1e-9), quality / base_psnr
        motion_ok, psnr_ok = abs(motion_ratio - 1) <= tolerance, abs(psnr_ratio - 1) <= tolerance
        skipped = float(np.mean([r["skipped"] for r in rs]))
        steps = float(np.mean([r["computed"] + r["skipped"] for r in rs]))
        blocks = rs[0]["blocks"]
        block_runs = float(np.mean([r["computed"] * blocks + r["skipped"] for r in rs]))
        summary.append({
            "threshold": th, "step_ms": 1000 * step, "speedup": base_step / step,
            "block_speedup": steps * blocks / block_runs, "skipped": skipped,
            "videos": len(rs), "skip_pct": 100 * skipped / steps, "motion_px": motion, "motion_ratio": motion_ratio,
            "worst_video_motion_ratio": float(max(per_video_motion, key=lambda x: abs(x - 1))),
            "video_motion_ratio_min": float(min(per_video_motion)), "video_motion_ratio_max": float(max(per_video_motion)),
            "psnr_db": quality, "psnr_ratio": psnr_ratio, "motion_ok": motion_ok, "psnr_ok": psnr_ok,
            "pass": bool(motion_ok and psnr_ok), "videos_within": f"{sum(within)}/{len(within)}",
            "every_video_ok": all(within),
        })
    return summary


def recommend(summary: list[dict], key: str = "pass") -> float | None:
    """Largest threshold that passes (``key``: by the means, or "every_video_ok"), skips steps and is faster,
    with every smaller threshold passing too."""
    best = None
    for s in sorted((s for s in summary if s["threshold"] != "off"), key=lambda s: s["threshold"]):
        if not s[key]:
            break
        if s["skipped"] > 0 and s["speedup"] > 1:
            best = s["threshold"]
    return best


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.from_json:
        rows, thresholds = pooled(args.from_json)
        report(rows, thresholds, args.tolerance, f"step cache, {len(args.from_json)} runs pooled", out_dir(args.out),
               {"pooled_from": [p if not Path(p).is_absolute() else Path(p).name for p in args.from_json]})
        return
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    out = out_dir(args.out)
    pipe = build(args, device)
    settings = {k: getattr(args, k) for k in ("num_frames", "height", "width", "steps")}
    settings = {k: v if v is not None else pipe.defaults.get(k) for k, v in settings.items()}
    if None in settings.values():
        raise SystemExit(f"the model has no default for {[k for k, v in settings.items() if v is None]}: pass it")
    thresholds = sorted(set(args.thresholds))
    with tempfile.TemporaryDirectory() as tmp:
        photos = evaluation_photos(args.photos, tmp)
        photos = photos[: args.photos_limit] if args.photos_limit else photos
        print(f"{len(photos)} photos x {len(args.motions)} motions x {len(args.seeds)} seeds x "
              f"{1 + len(thresholds)} settings at {settings} on {device}", flush=True)
        generate(pipe, photos[0], args.motions[0], args.seeds[0], None, args, settings)  # warm-up, not counted
        rows = []
        for photo in photos:
            for motion in args.motions:
                for seed in args.seeds:
                    for th in [None, *thresholds]:  # interleaved: every setting sees the same machine state
                        row, video = generate(pipe, photo, motion, seed, th, args, settings)
                        rows.append(row)
                        print(f"  {photo.stem:>10} {motion:>9} seed {seed} threshold {row['threshold']!s:>5}: "
                              f"{1000 * row['step_s']:7.1f} ms/step, skipped {row['skipped']:2d} {row['decisions']}, "
                              f"motion {row['motion_magnitude']:.3f} px/frame, frame-0 {row['psnr_frame0']:.2f} dB",
                              flush=True)
                        if args.save_videos:
                            write_mp4(video.frames, out / "videos" / f"{photo.stem}_{motion}_s{seed}_t{row['threshold']}.mp4")
    model = "tiny-random" if args.tiny else args.model
    report(rows, thresholds, args.tolerance, f"step cache on {model} ({device})", out, {
        "model": model, "device": device_info(device), "settings": settings, "photos": [p.stem for p in photos],
        "motions": args.motions, "seeds": args.seeds, "warmup_steps": args.warmup_steps,
        "final_steps": args.final_steps})


def report(rows: list[dict], thresholds: list, tolerance: float, title: str, out: Path, meta: dict) -> None:
    """Summary table (printed last) and recommendation; JSON with every row to out / step_cache.json."""
    summary = summarise(rows, thresholds, tolerance)
    best, best_per_video = recommend(summary), recommend(summary, key="every_video_ok")
    save_json(out / "step_cache.json", {**meta, "tolerance": tolerance, "summary": summary,
                                        "recommended_threshold": best, "largest_passing_per_video": best_per_video,
                                        "rows": rows})
    print(f"\n{title}; JSON: {out / 'step_cache.json'}")
    cols = ["threshold", "videos", "step_ms", "speedup", "block_speedup", "skipped", "skip_pct", "motion_px",
            "motion_ratio", "worst_video_motion_ratio", "video_motion_ratio_min", "video_motion_ratio_max", "psnr_db",
            "psnr_ratio", "motion_ok", "psnr_ok", "pass", "videos_within", "every_video_ok"]
    print(table(summary, cols))
    guard = f"the mean motion and frame-0 PSNR within {100 * tolerance:.0f} % of the uncached run"
    if best is None:
        print(f"recommended threshold: none (no threshold kept {guard} while skipping steps): leave the step cache "
              f"off for this model")
    else:
        print(f"recommended threshold: {best} (largest keeping {guard}, all smaller ones too)")
    print(f"largest keeping every single video within the bound too: {best_per_video}")


def pooled(paths: list[str]) -> tuple[list[dict], list]:
    """Rows of several step_cache.json files (videos told apart by photo, motion and seed) and their thresholds."""
    rows, seen = [], set()
    for path in paths:
        for r in json.loads(Path(path).read_text())["rows"]:
            key = (r["photo"], r["motion"], r["seed"], r["threshold"])
            if key in seen:
                raise SystemExit(f"error: {path} repeats {key}: pool runs of different seeds, photos or motions")
            seen.add(key)
            rows.append(r)
    return rows, sorted({r["threshold"] for r in rows if r["threshold"] != "off"})


if __name__ == "__main__":
    main()
