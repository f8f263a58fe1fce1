"""Re-express a trained built-in transformer in the latent space of a refitted block-PCA codec.

Two fits of ``BlockPCACodec`` on the same clips span the same 16-dimensional space of blocks when they keep
the same components (a ``colour_channels=3`` fit only rotates the leading components so that three of them
are the block's mean colour), so their latents are an exact affine change of coordinates of each other:

    z_new = A z_old + b,   A = D_new^-1 B_new^T B_old D_old,   b = D_new^-1 B_new^T (m_old - m_new)

(B: basis, D: diag(std), m: mean; one map for frame 0 and one for the later 4-frame groups). The script
folds the groups' map into the layers that touch latent channels, so that the model sees, for the later
frames, what it saw before: the patch embedding takes A^-1 (x - b), the output head and the projection
phi's last layer return A v, and phi's first layer reads frame 0 through A0^-1 (s - b0). What stays
approximate, and is left to fine-tuning: frame 0 (the patch embedding shares one map for all frames), the
noise (A eps is not white), phi's zero padding, and the Fourier features (|high-pass(s)| is not linear).

    python scripts/builtin/map_codec.py --model src/flashi2v/builtin_model/transformer \\
        --old-codec src/flashi2v/builtin_model/vae --new-codec .kit/components/vae --out .kit/init/mapped
"""

from __future__ import annotations

import argparse

import torch

from flashi2v.encoders import BlockPCACodec
from flashi2v.errors import FlashI2VError
from flashi2v.model import FlashI2VTransformer


def codec_change(old: BlockPCACodec, new: BlockPCACodec, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, b) with z_new = A z_old + b for frame 0 (``first``) or for the later groups."""
    names = ("mean0", "basis0", "std0") if first else ("mean", "basis", "std")
    (m_o, b_o, d_o), (m_n, b_n, d_n) = ([getattr(c, n).double() for n in names] for c in (old, new))
    inside = (b_n.T @ b_o).norm(dim=1)
    if (inside - 1).abs().max() > 1e-3:
        raise FlashI2VError(f"the two codecs do not span the same blocks (norms {inside.min():.3f}..): refit the new "
                            "one on the same clips with the same channel count, or train from scratch")
    return (b_n.T @ b_o) * d_o / d_n[:, None], b_n.T @ (m_o - m_n) / d_n


@torch.no_grad()
def map_transformer(model: FlashI2VTransformer, old: BlockPCACodec, new: BlockPCACodec) -> FlashI2VTransformer:
    a, b = codec_change(old, new, first=False)
    a0, b0 = codec_change(old, new, first=True)
    a_inv, a0_inv = torch.linalg.inv(a), torch.linalg.inv(a0)

    def read_through(conv: torch.nn.Module, inv: torch.Tensor, offset: torch.Tensor) -> None:
        """conv(x) -> conv(inv (x - offset)) along the input channels."""
        w = conv.weight.double()
        conv.bias.copy_(conv.bias.double() - torch.einsum("oc...,c->o", w, inv @ offset))
        conv.weight.copy_(torch.einsum("oc...,cd->od...", w, inv))

    def write_through(weight: torch.Tensor, bias: torch.Tensor, channels_last: bool) -> None:
        """Output channels c -> A c (head rows are (patch position, channel), the channel fastest)."""
        w, bb = weight.double(), bias.double()
        if channels_last:
            w, bb = w.reshape(-1, a.shape[0], w.shape[-1]), bb.reshape(-1, a.shape[0])
            w, bb = torch.einsum("dc,pci->pdi", a, w), bb @ a.T
        else:
            w, bb = torch.einsum("dc,c...->d...", a, w), a @ bb
        weight.copy_(w.reshape(weight.shape))
        bias.copy_(bb.reshape(bias.shape))

    read_through(model.patch_embedding, a_inv, b)
    write_through(model.head.head.weight, model.head.head.bias, channels_last=True)
    phi = model.learnable_proj.proj
    read_through(phi[0], a0_inv, b0)
    write_through(phi[2].weight, phi[2].bias, channels_last=False)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="transformer folder trained with --old-codec")
    ap.add_argument("--old-codec", required=True)
    ap.add_argument("--new-codec", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model = FlashI2VTransformer.from_pretrained(args.model, dtype=torch.float32)
    old, new = BlockPCACodec.from_pretrained(args.old_codec), BlockPCACodec.from_pretrained(args.new_codec)
    map_transformer(model, old, new).save_pretrained(args.out)
    print(f"mapped transformer written to {args.out}")


if __name__ == "__main__":
    main()
