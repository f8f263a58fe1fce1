"""Before / after: the frame strips of two models' runs of `flashi2v eval motion`, same photos, prompts and seed.

Each row pair is one video (photo and camera prompt): the first model's strip above the second's, labelled. The
strips are the PNGs that ``flashi2v eval motion --out DIR`` writes (8 evenly spaced frames of each video).

    flashi2v eval motion --model OLD --seed 0 --out outputs/eval-old
    flashi2v eval motion --seed 0 --out outputs/eval-new
    python scripts/builtin/before_after.py outputs/eval-old outputs/eval-new --labels "first edition" "second edition" \
        --videos astronaut_pan_left coffee_zoom_in --out docs/builtin/before_after.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", help="folder of strips (an eval motion --out folder, or its seedN/)")
    ap.add_argument("after")
    ap.add_argument("--videos", nargs="+", required=True, help="strip names without .png, e.g. astronaut_pan_left")
    ap.add_argument("--labels", nargs=2, default=["before", "after"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    label_width, rows = 150, []
    for name in args.videos:
        for folder, label in zip((args.before, args.after), args.labels):
            path = Path(folder) / f"{name}.png"
            if not path.is_file():
                print(f"error: no strip {path}: run flashi2v eval motion with --out {folder} first", file=sys.stderr)
                sys.exit(2)
            strip = Image.open(path).convert("RGB")
            row = Image.new("RGB", (label_width + strip.width, strip.height), "white")
            row.paste(strip, (label_width, 0))
            draw = ImageDraw.Draw(row)
            draw.text((6, strip.height // 2 - 14), name.replace("_", " "), fill="black")
            draw.text((6, strip.height // 2 + 2), label, fill="black")
            rows.append(row)
    gap = 6
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + gap * (len(rows) // 2 - 1)), "white")
    y = 0
    for i, row in enumerate(rows):
        sheet.paste(row, (0, y))
        y += row.height + (gap if i % 2 else 0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, format="PNG", optimize=True)
    print(f"{args.out}: {len(args.videos)} videos, {args.labels[0]} above {args.labels[1]}")


if __name__ == "__main__":
    main()
