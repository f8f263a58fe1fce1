"""What the second edition's transformer training needs beside the kit: its components and its warm start.

``KIT/components-2``: the trained autoencoder as vae/ and the kit's caption table as text_encoder/.
``KIT/init``: a transformer folder to start from (float16, as the first edition ships), the first edition's weights
where they fit:

The second edition (preset ``builtin-2``) keeps the first one's token grid (16 x 16 tokens per latent frame at
128 x 128: one latent pixel of the 8x autoencoder per token, as one 2 x 2 patch of 4 x 4 blocks was) and its
blocks, text and time embeddings; only what reads or writes latent channels changes shape (patch embedding, head,
Fourier embedding, learnable projection). Those start from the preset's init; every other tensor is copied.

    python scripts/builtin/second_edition_kit.py --kit .kit --autoencoder AUTOENCODER \
        --source FIRST_EDITION/transformer    # the first edition: git archive 8b99dce src/flashi2v/builtin_model
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from flashi2v.config import preset
from flashi2v.encoders import CausalVideoAutoencoder
from flashi2v.model import FlashI2VTransformer

# read or write latent channels: their meaning changes with the codec, so they are never copied
LATENT_SIDE = ("patch_embedding.", "head.", "fourier_embedding.", "learnable_proj.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kit", default=".kit", help="folder from prepare_kit.py")
    ap.add_argument("--autoencoder", required=True,
                    help="the autoencoder's folder: trained (flashi2v train builtin-autoencoder), or with a linear "
                         "encoder its start (fit_linear_path.py --linear-encoder), whose latents are already final")
    ap.add_argument("--source", required=True, help="transformer folder of the first edition")
    ap.add_argument("--preset", default="builtin-2")
    ap.add_argument("--proj-kernel", default="1x3x3")
    args = ap.parse_args()
    kit = Path(args.kit)
    components = kit / "components-2"
    shutil.rmtree(components, ignore_errors=True)
    CausalVideoAutoencoder.from_pretrained(args.autoencoder).save_pretrained(components / "vae", dtype=torch.float16)
    shutil.copytree(kit / "components" / "text_encoder", components / "text_encoder")
    out = kit / "init"
    source = FlashI2VTransformer.from_pretrained(args.source).float().state_dict()
    model = FlashI2VTransformer.from_config(preset(args.preset, proj_kernel=args.proj_kernel))
    state = model.state_dict()
    copied = [k for k, v in state.items()
              if not k.startswith(LATENT_SIDE) and k in source and source[k].shape == v.shape]
    for k in copied:
        state[k].copy_(source[k])
    model.half().save_pretrained(out)  # the source is float16: nothing is lost, and the kit stays small
    fresh = sorted({k.split(".")[0] for k in state if k not in copied})
    print(f"{components}: the autoencoder and the caption table; {out}: {len(copied)} of {len(state)} tensors from {args.source}; fresh: {', '.join(fresh)}")


if __name__ == "__main__":
    main()
