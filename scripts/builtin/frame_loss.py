"""Where the built-in model's velocity error sits, per latent frame and noise level, and how much of frame 0's
the Fourier features s_high remove: the training signal that would teach the detail knob.

For camera-motion clips of the held-out photos (ground truth, rendered like the training data): the flow loss
|| v - (eps - x) ||^2 of latent frame 0 and of the later frames at each sigma, with s_high at two cutoffs and
with s_high zeroed. If zeroing s_high barely changes frame 0's error, the model does not read frame 0 from it.
Second table: the same predictions as images, the one-step estimate x0 = z - sigma v of the clip decoded and frame 0's
PSNR against the decoded clean latent (pixels weigh the latent channels unequally, the loss does not).

    python scripts/builtin/frame_loss.py [--model builtin] [--sigmas 0.05 0.15 0.3 0.5 0.8] [--rho 0.05 0.6]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from flashi2v import FlashI2VPipeline, flow, fourier
from flashi2v.captions import motion_caption, motion_speed
from flashi2v.data.synthetic.camera_clips import clip_video
from flashi2v.data.synthetic.render import render_camera_clip
from flashi2v.photos import evaluation_photos, load_photo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--photos", default="held-out")
    ap.add_argument("--motions", nargs="+", default=["pan_left", "tilt_up", "zoom_in", "zoom_out"])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.05, 0.15, 0.3, 0.5, 0.8])
    ap.add_argument("--rho", type=float, nargs="+", default=[0.05, 0.6])
    ap.add_argument("--draws", type=int, default=2, help="noise draws per clip and sigma")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pipe = FlashI2VPipeline.from_pretrained(args.model)
    d = pipe.defaults
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        photos = [load_photo(p) for p in evaluation_photos(args.photos, scratch)]
    clips, captions = [], []
    for photo in photos:
        for motion in args.motions:
            frames = render_camera_clip(photo, motion, motion_speed(motion, "normal"), d["num_frames"], d["height"],
                                        d["width"], rng)
            clips.append(clip_video(frames))
            captions.append(motion_caption(motion))
    pixels = torch.stack(clips)
    with torch.no_grad():
        x = pipe.vae.encode(pixels).float()
        s = pipe.vae.encode(pixels[:, :, :1]).float()
        context = pipe.encode_prompt(captions)
        frames = x.shape[2]
        phi_s = pipe.transformer.learnable_proj(s, frames)
        g = torch.Generator().manual_seed(args.seed)
        variants = {f"rho {r}": fourier.fourier_features(s, r, frames, signed=pipe.signed_fourier) for r in args.rho}
        variants["s_high = 0"] = torch.zeros_like(next(iter(variants.values())))
        clean = pipe.vae.decode(x)[:, :, 0]
        loss_rows, psnr_rows = [], []
        for sigma in args.sigmas:
            errs = {k: [[], []] for k in variants}
            psnrs = {k: [] for k in variants}
            for _ in range(args.draws):
                eps = torch.randn(x.shape, generator=g)
                sig = torch.full((x.shape[0],), sigma)
                z = flow.interpolation(x, eps, sig) - phi_s
                for k, s_high in variants.items():
                    v = pipe.transformer(z, 1000.0 * sig, context, s_high).float()
                    e = (v - (eps - x)) ** 2
                    errs[k][0].append(e[:, :, 0].mean().item())
                    errs[k][1].append(e[:, :, 1:].mean().item())
                    frame0 = pipe.vae.decode(z + phi_s - sigma * v)[:, :, 0]  # pixels in [-1, 1]
                    mse = ((frame0.clamp(-1, 1) - clean) ** 2).mean(dim=(1, 2, 3))
                    psnrs[k].append((10 * torch.log10(4.0 / mse)).mean().item())
            loss_rows.append(f"| {sigma} | " + " | ".join(f"{np.mean(a):.4f} / {np.mean(b):.4f}" for a, b in errs.values()) + " |")
            psnr_rows.append(f"| {sigma} | " + " | ".join(f"{np.mean(p):.2f}" for p in psnrs.values()) + " |")
            print(loss_rows[-1], psnr_rows[-1], flush=True)
        print(f"\nflow loss\n| sigma | {' | '.join(f'{k}: frame 0 / later' for k in variants)} |")
        print("|---|" + "---|" * len(variants))
        print("\n".join(loss_rows))
        print(f"\none-step estimate of frame 0, PSNR (dB) against the clean latent decoded\n| sigma | {' | '.join(variants)} |")
        print("|---|" + "---|" * len(variants))
        print("\n".join(psnr_rows))


if __name__ == "__main__":
    main()
