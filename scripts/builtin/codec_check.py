"""What the built-in model's codec and the drift metric do on ground truth (no model involved).

Renders camera-motion clips from the held-out photos and prints, per clip: the colour drift of the true
clip over whole frames and aligned (``flashi2v.eval.motion.colour_drift``), the aligned drift after a
codec round trip, the codec's reconstruction PSNR for frame 0 and for the later frames, and the camera path
of the round trip from frame 0 to the last frame as the consecutive-pair reads sum it and as the direct fit
(``end_to_end_motion``) finds it.

    python scripts/builtin/codec_check.py --codec src/flashi2v/builtin_model/vae --photos held-out --clips 40

Several ``--codec`` folders (e.g. fits with more channels, ``prepare_kit.py --channels 32``) are checked on the
same clips one after the other.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from flashi2v.data.synthetic.camera_clips import CameraMotionClips, clip_video
from flashi2v.encoders import load_vae
from flashi2v.eval.motion import colour_drift, end_to_end_motion, pair_motions, psnr
from flashi2v.photos import evaluation_photos
from flashi2v.video import to_uint8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", nargs="+", default=["src/flashi2v/builtin_model/vae"])
    ap.add_argument("--photos", default="held-out", help='"held-out" (copied from their packages) or a folder')
    ap.add_argument("--clips", type=int, default=27)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        clips = CameraMotionClips(evaluation_photos(args.photos, scratch), args.clips, 17, 128, 128, seed=args.seed)
        for folder in args.codec:
            check(load_vae(folder), clips, folder)


def check(codec, clips: CameraMotionClips, name: str) -> None:
    rows, decode_s = [], []
    weights = sum(t.numel() for t in codec.state_dict().values() if t.is_floating_point())
    print(f"\n{name} ({type(codec).__name__}, {codec.latent_channels} channels, {weights:,} stored weights)\n")
    print("| motion | pace | drift, whole frames | drift, aligned | drift after codec | codec PSNR frame 0 / later "
          "| camera path after codec (dy, dx, log scale): pair sums / direct fit |")
    print("|---|---|---|---|---|---|---|")
    for i in range(len(clips)):
        frames, spec = clips.render(i)
        with torch.no_grad():
            latents = codec.encode(clip_video(frames)[None])
            started = time.perf_counter()
            decoded = codec.decode(latents)[0]
            decode_s.append(time.perf_counter() - started)
        back = to_uint8(decoded).permute(1, 2, 3, 0).numpy()
        motions = pair_motions(back)
        row = (colour_drift(frames, aligned=False), colour_drift(frames), colour_drift(back, motions=motions),
               psnr(back[0], frames[0]), psnr(back[1:], frames[1:]))
        rows.append((spec["motion"], row))
        sums, fit = motions.sum(axis=0), end_to_end_motion(back, motions)
        print(f"| {spec['motion']} | {spec['pace']} | {row[0]:.2f} | {row[1]:.2f} | {row[2]:.2f} | {row[3]:.1f} / {row[4]:.1f} "
              f"| {sums[0]:.1f}, {sums[1]:.1f}, {sums[2]:.3f} / {fit[0]:.1f}, {fit[1]:.1f}, {fit[2]:.3f} |")
    for label, keep in (("without rolls", lambda m: not m.startswith("roll")), ("all", lambda m: True)):
        r = np.array([x for m, x in rows if keep(m)])
        print(f"\n{name}, {label} ({len(r)} clips): whole-frame drift up to {r[:, 0].max():.1f} %, aligned up to "
              f"{r[:, 1].max():.2f} %, after the codec up to {r[:, 2].max():.2f} % (mean {r[:, 2].mean():.2f} %); "
              f"codec PSNR frame 0 {r[:, 3].mean():.1f} dB, later frames {r[:, 4].mean():.1f} dB (means)")
    print(f"decode of one clip on {torch.get_num_threads()} threads: median {statistics.median(decode_s):.3f} s, "
          f"first {decode_s[0]:.3f} s")


if __name__ == "__main__":
    main()
