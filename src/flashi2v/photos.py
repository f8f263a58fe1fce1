"""Photos: the real photos bundled in installed PyPI packages (scikit-image, matplotlib, scikit-learn), the
held-out split the built-in model never trained on, and folders of photos named on a command line.

Shared by the synthetic training set (flashi2v.data.synthetic) and the evaluation (flashi2v.eval, ``flashi2v
eval motion --photos``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import FlashI2VError

# scikit-image's bundled colour photos (files in skimage/data; nothing is downloaded).
SKIMAGE_COLOUR = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "ihc": "ihc.png",
}
# Left out: "color.png" is a drawn hue wheel, not a photo. Its smooth radial gradients hide a zoom or roll
# about the wheel's centre (the motion metrics call such clips static), so its captions would be wrong.
# Real grayscale photos, included as RGB: more scenes and textures for the camera to move over.
SKIMAGE_GRAY = {"camera": "camera.png", "coins": "coins.png", "moon": "moon.png"}
MATPLOTLIB_PHOTOS = {"grace_hopper": ("mpl-data", "sample_data", "grace_hopper.jpg")}
SKLEARN_PHOTOS = {"china": ("datasets", "images", "china.jpg"), "flower": ("datasets", "images", "flower.jpg")}

# Never trained on: a portrait (the README demo photo), a tabletop close-up and an outdoor scene.
HELD_OUT = ("astronaut", "coffee", "rocket")

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it (importing scikit-learn takes seconds)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def bundled_photo_files(include_gray: bool = True) -> dict[str, Path]:
    """name -> source file of every bundled photo that exists on this machine (missing ones are left out)."""
    found: dict[str, Path] = {}
    skimage_dir = package_dir("skimage")
    if skimage_dir is not None:
        files = {**SKIMAGE_COLOUR, **(SKIMAGE_GRAY if include_gray else {})}
        found.update({name: skimage_dir / "data" / f for name, f in files.items()})
    for package, photos in (("matplotlib", MATPLOTLIB_PHOTOS), ("sklearn", SKLEARN_PHOTOS)):
        root = package_dir(package)
        if root is not None:
            found.update({name: root.joinpath(*parts) for name, parts in photos.items()})
    return {name: path for name, path in found.items() if path.is_file()}


def load_photo(path: str | os.PathLike) -> np.ndarray:
    """Any image file -> uint8 H x W x 3 (grayscale and RGBA become RGB)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB")).copy()
    except (OSError, ValueError) as err:
        raise FlashI2VError(f"cannot read photo {path} ({err}); remove it or replace it with a PNG/JPEG") from None


def collect_photos(dest_dir: str | os.PathLike, include_gray: bool = True) -> list[Path]:
    """Copy the real photos bundled in installed packages into ``dest_dir`` as ``<name>.png``; no network.

    Colour: scikit-image astronaut, chelsea, coffee, rocket, motorcycle_left/right, hubble_deep_field,
    retina, ihc; matplotlib grace_hopper; scikit-learn china, flower. Grayscale, as RGB
    (``include_gray``): camera, coins, moon. Photos whose package is missing are skipped.
    Returns the written paths sorted by name.
    """
    sources = bundled_photo_files(include_gray)
    if not sources:
        raise FlashI2VError("no bundled photos found; pip install scikit-image matplotlib scikit-learn")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, source in sorted(sources.items()):
        path = dest / f"{name}.png"
        Image.fromarray(load_photo(source)).save(path, format="PNG", compress_level=1)  # lossless, fast
        paths.append(path)
    return paths


def photo_name(path: str | os.PathLike) -> str:
    return Path(path).stem


def split_photos(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(train, held_out) by file stem: held-out photos (``HELD_OUT``) are kept for evaluation only."""
    paths = sorted(Path(p) for p in paths)
    held = [p for p in paths if photo_name(p) in HELD_OUT]
    return [p for p in paths if photo_name(p) not in HELD_OUT], held


def evaluation_photos(spec: str | os.PathLike, scratch: str | os.PathLike) -> list[Path]:
    """The photos a command line names: "held-out" (the built-in model's held-out photos, copied from their
    packages into ``scratch``) or a folder of photos."""
    if str(spec) == "held-out":
        held = split_photos(collect_photos(scratch))[1]
        if not held:
            raise FlashI2VError(f"none of the held-out photos ({', '.join(HELD_OUT)}) is installed: "
                                "pip install scikit-image, or pass a folder of photos")
        return held
    return photos_in(spec)


def photos_in(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder``, sorted by name; an error when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FlashI2VError(f"photo folder {folder} does not exist; pass a folder of PNG/JPEG photos")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not photos:
        raise FlashI2VError(f"photo folder {folder} holds no images ({', '.join(PHOTO_SUFFIXES)}); "
                            "put PNG/JPEG photos in it or pass another folder")
    return photos
