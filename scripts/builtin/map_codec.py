"""Re-express a trained built-in transformer in the latent space of a refitted or wider block-PCA codec.

Two fits of ``BlockPCACodec`` on the same clips span the same blocks in their leading components (a
``colour_channels=3`` fit only rotates them so that three are the block's mean colour; a fit with more
channels keeps the old components and adds the next ones), so the old latent is an exact affine function of
the new one:

    z_new = A z_old + b,   A = D_new^-1 B_new^T B_old D_old,   b = D_new^-1 B_new^T (m_old - m_new)

(B: basis, D: diag(std), m: mean; one map for frame 0 and one for the later 4-frame groups; A is square for a
refit and tall for a wider codec, and z_old = A^+ (z_new - b) either way). The script folds the groups' map
into the layers that touch latent channels, so that the model sees, for the later frames, what it saw
before: the patch embedding reads A^+ (x - b), the output head and the projection phi's last layer return
A v, and phi's first layer reads frame 0 through A0^+ (s - b0). For a wider codec the model gets the new
channel count: the added channels start with zero weights into the patch and Fourier embeddings and zero
output rows, and phi's added hidden units start at the usual init on the way in and zero on the way out,
so the widened model computes exactly what the old one did on the old channels and learns the new ones by
fine-tuning. What stays approximate, and is left to fine-tuning: frame 0 (the patch embedding shares one
map for all frames), the noise (A eps is not white for a rotation), phi's zero padding, and the Fourier
features (|high-pass(s)| is not linear, and its cutoff averages the spectrum over all channels).

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
    inside = (b_n.T @ b_o).norm(dim=0)  # how much of each old component the new basis holds
    if (inside - 1).abs().max() > 1e-3:
        raise FlashI2VError(f"the new codec does not hold the old one's blocks (norms {inside.min():.3f}..): refit it on "
                            "the same clips with at least as many channels, or train from scratch")
    return (b_n.T @ b_o) * d_o / d_n[:, None], b_n.T @ (m_o - m_n) / d_n


@torch.no_grad()
def map_transformer(model: FlashI2VTransformer, old: BlockPCACodec, new: BlockPCACodec) -> FlashI2VTransformer:
    """A transformer for ``new``'s latents that computes what ``model`` computed on ``old``'s."""
    a, b = codec_change(old, new, first=False)
    a0, b0 = codec_change(old, new, first=True)
    a_inv, a0_inv = torch.linalg.pinv(a), torch.linalg.pinv(a0)
    out = FlashI2VTransformer.from_config(model.config, in_dim=new.channels, out_dim=new.channels)
    own = dict(out.named_parameters())
    for name, p in model.named_parameters():
        if own[name].shape == p.shape:
            own[name].copy_(p)

    def read_through(src: torch.nn.Module, dst: torch.nn.Module, inv: torch.Tensor, offset: torch.Tensor) -> None:
        """dst(x) = src(inv (x - offset)) along the input channels."""
        w = src.weight.double()
        dst.bias[: w.shape[0]] = src.bias.double() - torch.einsum("oc...,c->o", w, inv @ offset)
        dst.weight[: w.shape[0]] = torch.einsum("oc...,cd->od...", w, inv)  # phi's added hidden units keep their init

    def write_through(weight: torch.Tensor, bias: torch.Tensor, dst_w: torch.Tensor, dst_b: torch.Tensor,
                      channels_last: bool) -> None:
        """Output channels c -> A c (head rows are (patch position, channel), the channel fastest)."""
        w, bb = weight.double(), bias.double()
        if channels_last:
            w, bb = w.reshape(-1, a.shape[1], w.shape[-1]), bb.reshape(-1, a.shape[1])
            w, bb = torch.einsum("dc,pci->pdi", a, w).reshape(-1, w.shape[-1]), bb @ a.T
        else:
            w, bb = torch.einsum("dc,c...->d...", a, w), a @ bb
        dst_w.zero_()  # phi's added hidden units: zero on the way out
        dst_w[:, : w.shape[1]] = w
        dst_b.copy_(bb.reshape(dst_b.shape))

    read_through(model.patch_embedding, out.patch_embedding, a_inv, b)
    write_through(model.head.head.weight, model.head.head.bias, out.head.head.weight, out.head.head.bias,
                  channels_last=True)
    phi, new_phi = model.learnable_proj.proj, out.learnable_proj.proj
    read_through(phi[0], new_phi[0], a0_inv, b0)
    write_through(phi[2].weight, phi[2].bias, new_phi[2].weight, new_phi[2].bias, channels_last=False)
    if new.channels != old.channels:  # the old channels keep their Fourier weights, the added ones start at zero
        fourier = out.fourier_embedding[0].weight
        fourier.zero_()
        fourier[:, : old.channels] = model.fourier_embedding[0].weight
    return out


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
    print(f"mapped transformer ({old.channels} -> {new.channels} latent channels) written to {args.out}")


if __name__ == "__main__":
    main()
