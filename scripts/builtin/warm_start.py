"""A transformer folder to start the built-in model's second edition from: the first edition's weights where they fit.

The second edition (preset ``builtin-2``) keeps the first one's token grid (16 x 16 tokens per latent frame at
128 x 128: one latent pixel of the 8x autoencoder per token, as one 2 x 2 patch of 4 x 4 blocks was) and its
blocks, text and time embeddings; only what reads or writes latent channels changes shape (patch embedding, head,
Fourier embedding, learnable projection). Those start from the preset's init; every other tensor is copied.

    python scripts/builtin/warm_start.py --source /path/to/first-edition/transformer --out .kit/init
"""

from __future__ import annotations

import argparse

from flashi2v.config import preset
from flashi2v.model import FlashI2VTransformer

# read or write latent channels: their meaning changes with the codec, so they are never copied
LATENT_SIDE = ("patch_embedding.", "head.", "fourier_embedding.", "learnable_proj.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="transformer folder of the first edition")
    ap.add_argument("--preset", default="builtin-2")
    ap.add_argument("--proj-kernel", default="1x3x3")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    source = FlashI2VTransformer.from_pretrained(args.source).float().state_dict()
    model = FlashI2VTransformer.from_config(preset(args.preset, proj_kernel=args.proj_kernel))
    state = model.state_dict()
    copied = [k for k, v in state.items()
              if not k.startswith(LATENT_SIDE) and k in source and source[k].shape == v.shape]
    for k in copied:
        state[k].copy_(source[k])
    model.save_pretrained(args.out)
    fresh = sorted({k.split(".")[0] for k in state if k not in copied})
    print(f"{args.out}: {len(copied)} of {len(state)} tensors from {args.source}; fresh: {', '.join(fresh)}")


if __name__ == "__main__":
    main()
