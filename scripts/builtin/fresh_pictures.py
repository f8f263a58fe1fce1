"""Pictures the built-in model never saw, neither in training nor when its sampling defaults were chosen.

The three held-out photos (astronaut, coffee, rocket) also picked the defaults (``tune_sampling.py``), so their
numbers carry that choice. These six pictures, bundled with scikit-image and matplotlib but not among the
built-in model's photos, check a choice on images that played no part in it: scikit-image's colour wheel
(``color.png``), motion-blurred clock, brick, gravel and scanned page (grayscale, written as RGB), and
matplotlib's gift-box icon. They are further from the training photos than the held-out ones (a synthetic
wheel on black, an icon on white), so their absolute numbers are worse; what they are for is comparing two
settings on the same videos.

    python scripts/builtin/fresh_pictures.py --out outputs/fresh
    python scripts/builtin/tune_sampling.py --model src/flashi2v/builtin_model --photos outputs/fresh ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from flashi2v.errors import FlashI2VError

# name -> (package, file inside its data folder)
PICTURES = {"color": ("skimage", "data/color.png"), "clock": ("skimage", "data/clock_motion.png"),
            "brick": ("skimage", "data/brick.png"), "gravel": ("skimage", "data/gravel.png"),
            "page": ("skimage", "data/page.png"),
            "present": ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png")}


def write_fresh_pictures(out: str | Path) -> list[Path]:
    """Copy the pictures into ``out`` as RGB PNG files; returns their paths."""
    import importlib

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (package, relative) in PICTURES.items():
        try:
            source = Path(importlib.import_module(package).__file__).parent / relative
        except ImportError:
            raise FlashI2VError(f"{package} is not installed; pip install scikit-image matplotlib") from None
        if not source.is_file():
            raise FlashI2VError(f"{source} is missing from the installed {package}; reinstall it")
        paths.append(out / f"{name}.png")
        Image.open(source).convert("RGB").save(paths[-1])  # the icon's alpha is dropped: its background is white
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    for path in write_fresh_pictures(args.out):
        print(path)


if __name__ == "__main__":
    main()
