"""The original Wan2.1 VAE and umT5 files -> the diffusers / transformers classes our encoders use.

- ``Wan2.1_VAE.pth``: renamed by diffusers' own ``convert_wan_vae_to_diffusers`` (no second copy).
- ``models_t5_umt5-xxl-enc-bf16.pth``: neither transformers nor diffusers ships a converter for
  Wan's own T5 module names, so a rename table (below) maps them onto ``UMT5EncoderModel``.
Folders already in the diffusers / transformers layout are copied as they are.
Configs are read off the tensor shapes; defaults are those of the released files.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from ..errors import FlashI2VError
from .layouts import detect_layout
from .readers import read_weight_file

VAE_ORIGINAL_NAME = "Wan2.1_VAE.pth"
UMT5_ORIGINAL_NAME = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_SUBDIR = "google/umt5-xxl"

# Wan2.1 t5.py (T5Encoder, shared_pos=False) module path -> transformers UMT5EncoderModel path.
UMT5_MODULES: dict[str, str] = {
    "token_embedding": "shared",
    "norm": "encoder.final_layer_norm",
    "blocks.{}.norm1": "encoder.block.{}.layer.0.layer_norm",
    "blocks.{}.attn.q": "encoder.block.{}.layer.0.SelfAttention.q",
    "blocks.{}.attn.k": "encoder.block.{}.layer.0.SelfAttention.k",
    "blocks.{}.attn.v": "encoder.block.{}.layer.0.SelfAttention.v",
    "blocks.{}.attn.o": "encoder.block.{}.layer.0.SelfAttention.o",
    "blocks.{}.pos_embedding.embedding": "encoder.block.{}.layer.0.SelfAttention.relative_attention_bias",
    "blocks.{}.norm2": "encoder.block.{}.layer.1.layer_norm",
    "blocks.{}.ffn.gate.0": "encoder.block.{}.layer.1.DenseReluDense.wi_0",  # GELU branch
    "blocks.{}.ffn.fc1": "encoder.block.{}.layer.1.DenseReluDense.wi_1",  # linear branch
    "blocks.{}.ffn.fc2": "encoder.block.{}.layer.1.DenseReluDense.wo",
}
_INDEX = re.compile(r"^(blocks|encoder\.block)\.(\d+)\.")


def _rename(key: str, table: dict[str, str]) -> str:
    m = _INDEX.match(key)
    tmpl = f"{m.group(1)}.{{}}.{key[m.end():]}" if m else key
    module, _, param = tmpl.rpartition(".")
    module = table.get(module, module)
    return f"{module}.{param}".format(m.group(2)) if m else f"{module}.{param}"


def umt5_original_to_transformers(key: str) -> str:
    return _rename(key, UMT5_MODULES)


def umt5_transformers_to_original(key: str) -> str:
    if key == "encoder.embed_tokens.weight":
        return "token_embedding.weight"  # tied to shared.weight
    return _rename(key, {v: k for k, v in UMT5_MODULES.items()})


def _check_keys(expected: dict, state: dict, source: str, what: str) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    for kind, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
        if keys:
            raise FlashI2VError(f"{source}: {len(keys)} {kind} keys (first: {', '.join(keys[:3])}): "
                                f"this is not a complete original {what} file, re-download it")


def _read_single_state(path: Path, expect: str) -> dict:
    state = read_weight_file(path)[0].state
    layout = detect_layout(state, str(path))
    if layout != expect:
        raise FlashI2VError(f"'{path}' holds a {layout} checkpoint, not {expect}: check which file you passed")
    return state


# -- VAE -------------------------------------------------------------------------------------------


def infer_wan_vae_config(state: dict, source: str = "VAE") -> dict:
    """AutoencoderKLWan keyword arguments from the original VAE's shapes.

    The encoder's ``downsamples`` list is residual blocks separated by resample layers; each group's
    width gives dim_mult, its length num_res_blocks, and a ``time_conv`` marks a temporal downsample.
    """
    base = state["encoder.conv1.weight"].shape[0]
    indices = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.downsamples.")})
    groups, temporal = [[]], []
    for i in indices:
        prefix = f"encoder.downsamples.{i}."
        if prefix + "residual.2.weight" in state:
            groups[-1].append(state[prefix + "residual.2.weight"].shape[0])
        else:
            temporal.append(prefix + "time_conv.weight" in state)
            groups.append([])
    if any(".to_qkv." in k for k in state if k.startswith("encoder.downsamples.")):
        raise FlashI2VError(f"{source}: has attention inside the down blocks, which the Wan2.1 VAE does not: pass the Wan2.1_VAE.pth file")
    num_res = len(groups[0])
    if num_res != 2 or any(len(g) != num_res for g in groups):
        raise FlashI2VError(f"{source}: {num_res} residual blocks per level, but diffusers' Wan VAE converter "
                            "handles only the released layout (2): pass the Wan2.1_VAE.pth file")
    return {"base_dim": base, "z_dim": state["conv2.weight"].shape[0], "num_res_blocks": num_res,
            "dim_mult": [g[-1] // base for g in groups], "temperal_downsample": temporal, "attn_scales": []}


def load_wan_vae_original(path: str | Path):
    """``Wan2.1_VAE.pth`` -> diffusers AutoencoderKLWan, tensors kept in their stored dtype."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    path = Path(path)
    original = _read_single_state(path, "wan-vae-original")
    config = infer_wan_vae_config(original, str(path))
    state = convert_wan_vae_to_diffusers(dict(original))
    with torch.device("meta"):
        vae = AutoencoderKLWan(**config)
    _check_keys(vae.state_dict(), state, str(path), "Wan VAE")
    vae.load_state_dict(state, strict=True, assign=True)
    return vae.eval()


# -- umT5 ------------------------------------------------------------------------------------------


def infer_umt5_config(state: dict, **overrides):
    """UMT5Config of an original umT5 encoder from its shapes (umt5-xxl: 4096 wide, 24 layers, 64 heads)."""
    from transformers import UMT5Config

    buckets, heads = state["blocks.0.pos_embedding.embedding.weight"].shape
    vocab, d_model = state["token_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    kwargs = {"vocab_size": vocab, "d_model": d_model, "num_heads": heads, "num_layers": layers,
              "d_kv": state["blocks.0.attn.q.weight"].shape[0] // heads, "d_ff": state["blocks.0.ffn.fc1.weight"].shape[0],
              "relative_attention_num_buckets": buckets, "relative_attention_max_distance": 128,
              "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-6, "tie_word_embeddings": False,
              "is_encoder_decoder": False, "use_cache": False, **overrides}
    return UMT5Config(**kwargs)


def load_umt5_original(path: str | Path, **config_overrides):
    """``models_t5_umt5-xxl-enc-bf16.pth`` -> transformers UMT5EncoderModel, dtype as stored (bf16)."""
    from transformers import UMT5EncoderModel

    path = Path(path)
    original = _read_single_state(path, "umt5-original")
    config = infer_umt5_config(original, **config_overrides)
    state = {umt5_original_to_transformers(k): v for k, v in original.items()}
    if "shared.weight" in state:
        state["encoder.embed_tokens.weight"] = state["shared.weight"]
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    _check_keys(model.state_dict(), state, str(path), "umT5 encoder")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


# -- writing our pipeline folder -------------------------------------------------------------------


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link to the file (symlinks followed, as in a Hub snapshot) where the file system allows, else a copy."""
    try:
        os.link(os.path.realpath(src), dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_folder(src: Path, dst: Path, link: bool = False) -> None:
    """Copy ``src`` to ``dst``; ``link``: hard-link the files instead (no second copy of a multi-GB download
    that is never modified in place, e.g. a Hub cache's blobs)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=_link_or_copy if link else shutil.copy2)


def write_vae(src: str | Path, dst: str | Path, max_shard_size: str = "5GB", link: bool = False) -> str:
    """A diffusers ``vae/`` folder is copied (hard-linked with ``link``); an original ``Wan2.1_VAE.pth`` is converted."""
    src, dst = Path(src), Path(dst)
    if src.is_dir():
        if not (src / "config.json").is_file():
            raise FlashI2VError(f"VAE folder '{src}' has no config.json: pass the vae/ folder of a -Diffusers repo or {VAE_ORIGINAL_NAME}")
        copy_folder(src, dst, link)
        return f"vae: copied diffusers folder {src}"
    load_wan_vae_original(src).save_pretrained(dst, safe_serialization=True, max_shard_size=max_shard_size)
    return f"vae: converted {src.name} (original Wan layout) with diffusers' converter"


def write_text_encoder(src: str | Path, dst: str | Path, dtype: torch.dtype | None = None,
                       max_shard_size: str = "5GB", link: bool = False) -> str:
    """A transformers ``text_encoder/`` folder is copied (hard-linked with ``link``; re-saved in ``dtype`` when
    given); the original .pth is converted."""
    from transformers import UMT5EncoderModel

    src, dst = Path(src), Path(dst)
    if src.is_dir():
        if not (src / "config.json").is_file():
            raise FlashI2VError(f"text encoder folder '{src}' has no config.json: pass the text_encoder/ folder "
                                f"of a -Diffusers repo or {UMT5_ORIGINAL_NAME}")
        if dtype is None:
            copy_folder(src, dst, link)
            return f"text_encoder: copied transformers folder {src}"
        model = UMT5EncoderModel.from_pretrained(src, dtype=dtype, local_files_only=True)
        what = f"re-saved {src} in {dtype}"
    else:
        model = load_umt5_original(src)
        what = f"converted {src.name} (original Wan umT5 layout)"
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(dst, safe_serialization=True, max_shard_size=max_shard_size)
    return f"text_encoder: {what}"


def write_tokenizer(src: str | Path, dst: str | Path) -> str:
    """The umT5 tokenizer folder (``google/umt5-xxl`` or ``tokenizer/``), re-saved by transformers."""
    from transformers import AutoTokenizer

    src = Path(src)
    if not src.is_dir():
        raise FlashI2VError(f"tokenizer folder '{src}' does not exist: pass the google/umt5-xxl folder of "
                            "Wan2.1-T2V-1.3B or the tokenizer/ folder of its -Diffusers repo")
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
    except (OSError, ValueError) as err:
        raise FlashI2VError(f"cannot read a tokenizer from '{src}': {err} (re-download the folder)") from err
    tokenizer.save_pretrained(dst)
    return f"tokenizer: {src}"
