"""The ``convert`` and ``inspect`` subcommands: argument definitions and the calls they make.

Kept next to the weights code so ``flashi2v/cli.py`` only registers them; the work happens in
``convert.py`` and errors the user can fix arrive as FlashI2VError (one line, exit status 2).
"""

from __future__ import annotations

from ..config import PROJ_KERNELS
from .layouts import LAYOUTS


def add_convert_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert FlashI2V / Wan2.1 weights of any published layout to a flashi2v model folder",
        description="Write a flashi2v model folder (transformer/, vae/, text_encoder/, tokenizer/) from the released "
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
    p.add_argument("--max-shard-size", default="5GB", help="split components larger than this (default %(default)s)")
    p.set_defaults(func=run_convert)


def run_convert(args) -> None:
    from .convert import convert_checkpoint

    print(convert_checkpoint(args.src, args.dst, layout=args.layout, allow_partial=args.allow_partial, dtype=args.dtype,
                             vae=args.vae, text_encoder=args.text_encoder, tokenizer=args.tokenizer,
                             num_heads=args.num_heads, proj_kernel=args.proj_kernel, max_shard_size=args.max_shard_size))


def add_inspect_parser(sub) -> None:
    p = sub.add_parser(
        "inspect", help="show the layout, config, dtypes and key problems of a checkpoint",
        description="Print the detected layout, the config read from the shapes, the projection variant, dtypes, "
                    "parameters per module, and any missing / unexpected / shape-mismatched keys. Reads no weights.")
    p.add_argument("path", metavar="PATH", help="a weights file or folder, as for `flashi2v convert`")
    p.add_argument("--layout", choices=list(LAYOUTS), help="force the layout instead of detecting it")
    p.add_argument("--num-heads", type=int, default=None, help="attention heads, if no config.json tells")
    p.set_defaults(func=run_inspect)


def run_inspect(args) -> None:
    from .convert import inspect_checkpoint

    print(inspect_checkpoint(args.path, layout=args.layout, num_heads=args.num_heads))
