"""The ``convert`` and ``inspect`` subcommands: argument definitions and the calls they make.

Kept next to the weights code; ``flashi2v/cli.py`` registers the two commands and adds these arguments
only when one of them runs (importing this package imports torch). Errors the user can fix arrive as
FlashI2VError (one line, exit status 2).
"""

from __future__ import annotations

import argparse

from ..config import PROJ_KERNELS
from ..errors import FlashI2VError
from ..sizes import parse_size
from .layouts import LAYOUTS


def shard_size(text: str) -> int:
    """--max-shard-size: bytes, or N followed by KB, MB or GB (e.g. 5GB, 500MB), checked as it is parsed."""
    try:
        return parse_size(text, "")
    except FlashI2VError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Write a flashi2v model folder (transformer/, vae/, text_encoder/, tokenizer/) from the released "
                     "FlashI2V-1.3B .pt, Wan2.1 (original or -Diffusers) downloads, or the authors' GPU-branch "
                     "checkpoints. The layout is detected from the keys.")
    p.add_argument("src", metavar="SRC", help="transformer weights: a file (.pt/.pth/.safetensors/shard index) or a "
                   "folder (Wan2.1 download, -Diffusers download, transformer/ folder, GPU-branch iter_* folder)")
    p.add_argument("dst", metavar="DST", help="output model folder")
    p.add_argument("--layout", choices=list(LAYOUTS), help="force the transformer layout instead of detecting it")
    p.add_argument("--allow-partial", action="store_true",
                   help="load what matches and warn about missing / unexpected / mismatched keys instead of failing")
    p.add_argument("--dtype", default=None, help="save the transformer and text encoder in this dtype: bfloat16, "
                   "float16, float32 (default: as stored)")
    p.add_argument("--vae", help="Wan2.1_VAE.pth or a diffusers vae/ folder (default: found inside SRC)")
    p.add_argument("--text-encoder", help="models_t5_umt5-xxl-enc-bf16.pth or a text_encoder/ folder (default: found inside SRC)")
    p.add_argument("--tokenizer", help="the google/umt5-xxl or tokenizer/ folder (default: found inside SRC)")
    p.add_argument("--proj-kernel", choices=PROJ_KERNELS, default=None,
                   help="learnable projection for a T2V source (FlashI2V modules start at zero); default 1x3x3. "
                        "A FlashI2V source always keeps its own")
    p.add_argument("--num-heads", type=int, default=None,
                   help="attention heads when neither a config.json nor a 128-wide head tells (real models need none)")
    p.add_argument("--max-shard-size", type=shard_size, default="5GB",
                   help="split components larger than this: bytes, or N KB / MB / GB (default %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing, non-empty DST (never one that is, holds or lies inside a source)")
    p.set_defaults(func=run_convert)


def add_convert_parser(sub) -> None:
    """Register ``convert`` on an argparse subparsers object (for callers building their own parser)."""
    add_convert_arguments(sub.add_parser("convert", help="convert weights to a flashi2v model folder"))


def run_convert(args) -> None:
    from .convert import convert_checkpoint

    print(convert_checkpoint(args.src, args.dst, layout=args.layout, allow_partial=args.allow_partial, dtype=args.dtype,
                             vae=args.vae, text_encoder=args.text_encoder, tokenizer=args.tokenizer,
                             num_heads=args.num_heads, proj_kernel=args.proj_kernel, max_shard_size=args.max_shard_size,
                             overwrite=args.overwrite))


def add_inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Print the detected layout, the config read from the shapes, the projection variant, dtypes, "
                     "parameters per module, and any missing / unexpected / shape-mismatched keys. Reads no weights.")
    p.add_argument("path", metavar="PATH", help="a weights file or folder, as for `flashi2v convert`")
    p.add_argument("--layout", choices=list(LAYOUTS), help="force the layout instead of detecting it")
    p.add_argument("--num-heads", type=int, default=None, help="attention heads, if no config.json tells")
    p.set_defaults(func=run_inspect)


def add_inspect_parser(sub) -> None:
    """Register ``inspect`` on an argparse subparsers object (for callers building their own parser)."""
    add_inspect_arguments(sub.add_parser("inspect", help="show the layout, config, dtypes and key problems"))


def run_inspect(args) -> None:
    from .convert import inspect_checkpoint

    print(inspect_checkpoint(args.path, layout=args.layout, num_heads=args.num_heads))
