"""Procedural "photos" for the built-in model's training set: random colour fields, gradients and shapes.

The twelve real photos give the model a colour prior: later frames drift towards what a camera move reveals
in them (a tilt up brightens, as skies do). Pictures drawn from random palettes, with a
brightness gradient in a random direction and random shapes over 1/f noise, reveal brighter or darker,
warmer or colder content with equal odds, so that the only colour a clip can keep is its first frame's.
They are written as PNG files beside the real photos (``CameraMotionClips`` samples every photo of the
folder alike).

    python scripts/builtin/procedural_photos.py --out .kitp/photos --count 12 --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def noise_field(rng: np.random.Generator, h: int, w: int, octaves: int = 6) -> np.ndarray:
    """3 x h x w, 1/f-like noise: octaves of upsampled random grids, each half the amplitude of the coarser."""
    field = np.zeros((3, h, w))
    for o in range(octaves):
        cells = 2 ** (o + 1)
        grid = rng.standard_normal((3, cells + 1, cells + 1)).astype(np.float32)
        up = np.stack([np.asarray(Image.fromarray(g).resize((w, h), Image.BICUBIC)) for g in grid])
        field += up * 0.5**o
    return field / np.abs(field).max()


def procedural_photo(rng: np.random.Generator, h: int = 480, w: int = 640) -> Image.Image:
    palette = rng.uniform(0, 255, (2, 3))  # the two ends of a gradient in a random direction
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5)) + 0.5
    image = (1 - t)[..., None] * palette[0] + t[..., None] * palette[1]
    mix = rng.uniform(-1, 1, (3, 3)) * rng.uniform(20, 70)
    image += np.einsum("cd,dhw->hwc", mix, noise_field(rng, h, w))
    picture = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(rng.integers(8, 30)):
        x0, y0 = rng.uniform(-0.1, 1.0) * w, rng.uniform(-0.1, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.03, 0.4) * w, y0 + rng.uniform(0.03, 0.4) * h
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    # texture over the shapes, so that no region is flat (flat regions show no motion)
    detail = np.asarray(picture).astype(np.float32) + 12 * noise_field(rng, h, w, octaves=8).transpose(1, 2, 0)
    return Image.fromarray(np.clip(detail, 0, 255).astype(np.uint8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in range(args.count):
        procedural_photo(rng).save(out / f"procedural_{i:03d}.png")
    print(f"{args.count} procedural photos written to {out}")


if __name__ == "__main__":
    main()
