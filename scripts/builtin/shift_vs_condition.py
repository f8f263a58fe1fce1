"""How much of the condition latent s the learned shift phi(s) already hands the model, against what the
Fourier features s_high carry at two cutoffs: the evidence behind the detail-knob finding in docs/builtin.md.

For each photo: ||phi(s) - s|| / ||s||, cos(phi(s), s), the least-squares scale k of phi(s) ~ k s, and
||s_high|| / ||s|| at rho low / high. The DiT input is z_sigma - phi(s); with
phi(s) ~ k s, frame 0 (whose clean latent is s itself) is readable from the input at every sigma.

    python scripts/builtin/shift_vs_condition.py [--model builtin] [--photos held-out] [--rho 0.05 0.6]
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from flashi2v import FlashI2VPipeline, fourier
from flashi2v.photos import evaluation_photos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--photos", default="held-out", help="'held-out' or a folder of photos")
    ap.add_argument("--rho", type=float, nargs=2, default=[0.05, 0.6])
    args = ap.parse_args()
    pipe = FlashI2VPipeline.from_pretrained(args.model)
    d = pipe.defaults
    print("| photo | phi(s) vs s: relative difference | cosine | best scale k | "
          f"s_high / s at rho {args.rho[0]} | at rho {args.rho[1]} |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch, torch.no_grad():
        for photo in evaluation_photos(args.photos, scratch):
            s = pipe.encode_image([str(photo)], d["height"], d["width"])
            phi = pipe.transformer.learnable_proj(s, 1)
            k = float((phi * s).sum() / (s * s).sum())
            rel = lambda a, b: float((a - b).norm() / b.norm())
            cos = float(torch.nn.functional.cosine_similarity(phi.flatten(), s.flatten(), dim=0))
            high = [float(fourier.fourier_features(s, rho, 1).norm() / s.norm()) for rho in args.rho]
            print(f"| {photo.name} | {rel(phi, s):.3f} | {cos:.3f} | {k:.3f} | "
                  f"{high[0]:.3f} | {high[1]:.3f} |")


if __name__ == "__main__":
    main()
