"""The video autoencoder's starting point alone: its linear path fitted on rendered clips, convolutions at zero.

What `flashi2v train builtin-autoencoder` does before its first step (``CausalVideoAutoencoder.fit_linear``), on
clips rendered from the kit's photos as the trainer renders them, plus the latent statistics, saved as a codec
folder; ``codec_check.py`` then measures it against other codecs:

    python scripts/builtin/fit_linear_path.py --photos .kit/photos --out outputs/ae-linear     # CPU, ~1.5 min
    python scripts/builtin/codec_check.py --codec outputs/ae-linear src/flashi2v/builtin_model/vae --photos .kit/held_out

With ``--linear-encoder`` the folder is the start of the preset's run (``autoencoder.init=``): its encoder and latent
statistics are final, so ``second_edition_kit.py`` can give the DiT the same latents before the decoder has trained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from flashi2v.data.synthetic.camera_clips import CameraMotionClips
from flashi2v.encoders import CausalVideoAutoencoder
from flashi2v.train.autoencoder import AutoencoderSection


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", required=True, help="folder of training photos (the kit's photos/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--clips", type=int, default=256, help="the preset's recipe.linear_fit_clips")
    ap.add_argument("--linear-encoder", action="store_true",
                    help="no encoder convolutions: the start of an autoencoder.linear_encoder=true run (and the latent "
                         "space a DiT can train on meanwhile)")
    args = ap.parse_args()
    a = AutoencoderSection()
    photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    rendered = CameraMotionClips(photos, args.clips, 17, 128, 128, seed=0, colour_jitter=0.2, vertical_flip=True)
    videos = torch.stack([rendered[i]["video"] for i in range(len(rendered))])
    model = CausalVideoAutoencoder(a.channels, a.features, a.trunk, tuple(a.encoder_widths), tuple(a.renderer_widths),
                                   linear_encoder=args.linear_encoder)
    model.fit_linear(videos).fit_statistics(videos.split(32))
    model.save_pretrained(args.out)
    print(f"{args.out}: linear path fitted on {len(videos)} clips")


if __name__ == "__main__":
    main()
