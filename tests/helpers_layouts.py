"""Synthetic checkpoints in every published layout, with key names taken from the shared key tables.

Names come from tests/data/keys/*.tsv (Wan original, diffusers) and from the tables of
mindspeed_flashi2v_1.3b.md (MindSpeed-MM); nothing here retypes a key name. Shapes are tiny.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers_tiny import REPO_ROOT as REPO
from wan_keys import (
    KEYS_DIR,
    original_keys_1_3b,
    original_to_diffusers_rules,
    to_diffusers,
)

from flashi2v import FlashI2VTransformer

MINDSPEED_DOC = "mindspeed_flashi2v_1.3b.md"
_ROW1 = re.compile(r"^\| (\d+) \| `([^`]+)` \| (.+?) \|$")
_ROW2 = re.compile(r"^\| `([^`]+)` \| (`[^`]+`|\(none\)) \| (.+?) \| (.+?) \|$")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")

__all__ = ["KEYS_DIR", "original_keys_1_3b", "original_to_diffusers_rules", "to_diffusers"]


# -- tables ----------------------------------------------------------------------------------------


def mindspeed_doc() -> Path:
    """The MindSpeed layout doc: a copy under tests/data/keys, else shared/ beside the repo."""
    for path in (KEYS_DIR / MINDSPEED_DOC, REPO.parent / "shared" / "docs" / "keys" / MINDSPEED_DOC):
        if path.is_file():
            return path
    pytest.skip(f"{MINDSPEED_DOC} not found (copy it to tests/data/keys/)")


def _tmpl(key: str) -> tuple[str, str | None]:
    m = _BLOCK.match(key)
    return (f"blocks.{{}}.{key[m.end():]}", m.group(1)) if m else (key, None)


def _fill(tmpl: str, index: str | None) -> str:
    return tmpl.format(index) if index is not None else tmpl


def mindspeed_rows() -> list[tuple[str, tuple[int, ...] | None]]:
    """Section 1: (MindSpeed key template, shape or None for ``_extra_state``), in state_dict order."""
    rows = []
    for line in mindspeed_doc().read_text().splitlines():
        m = _ROW1.match(line.strip())
        if m:
            shape = tuple(int(n) for n in re.findall(r"\d+", m.group(3))) if m.group(3).startswith("(") else None
            rows.append((_tmpl(m.group(2))[0], shape))
    assert len(rows) == 58, "mindspeed doc table changed"
    return rows


def mindspeed_to_original() -> dict[str, str | None]:
    """Section 2: MindSpeed key template -> Wan original key template (None: dropped)."""
    rules = {}
    for line in mindspeed_doc().read_text().splitlines():
        m = _ROW2.match(line.strip())
        if m and m.group(1) != "MindSpeed key (npu)":
            rules[_tmpl(m.group(1))[0]] = _tmpl(m.group(2).strip("`"))[0] if m.group(2) != "(none)" else None
    return rules


def _expand(rows, layers):
    """Section-1 rows in state_dict order: 12 non-block rows, the block rows per layer, then the rest."""
    for key, shape in rows[:12]:
        yield (key, None), shape
    for i in layers:
        for key, shape in (r for r in rows if r[0].startswith("blocks.")):
            yield (key, str(i)), shape
    for key, shape in (r for r in rows[12:] if not r[0].startswith("blocks.")):
        yield (key, None), shape


def mindspeed_keys_1_3b(num_layers: int = 30) -> dict[str, tuple[int, ...] | None]:
    """Every MindSpeed key of FlashI2V-1.3B (3x3x3 projection as documented), blocks expanded."""
    return {_fill(key, index): shape for (key, index), shape in _expand(mindspeed_rows(), range(num_layers))}


def to_mindspeed(state: dict) -> dict:
    """Our (Wan original) state dict -> MindSpeed names in MindSpeed order, with ``_extra_state`` None."""
    rules = mindspeed_to_original()
    layers = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.")})
    out = {}
    for (key, index), shape in _expand(mindspeed_rows(), layers):
        out[_fill(key, index)] = None if shape is None else state[_fill(rules[key], index)]
    assert sum(v is not None for v in out.values()) == len(state)
    return out


def from_diffusers(state: dict) -> dict:
    """Diffusers names -> Wan original names, through the tsv table."""
    inverse = {v: k for k, v in original_to_diffusers_rules().items()}
    out = {}
    for key, value in state.items():
        tmpl, index = _tmpl(key)
        out[_fill(inverse[tmpl], index)] = value
    return out


def original_templates() -> set[str]:
    return {_tmpl(k)[0] for k in original_keys_1_3b()}


def is_flashi2v(key: str) -> bool:
    return key.startswith(("fourier_embedding.", "learnable_proj."))


# -- tiny models -----------------------------------------------------------------------------------


def randomized_tiny(seed: int = 0, proj_kernel: str = "1x3x3", t2v: bool = False, **overrides) -> FlashI2VTransformer:
    """Tiny model, every weight random (Wan's init zeroes the head, which would hide errors); t2v: the FlashI2V
    modules at their init instead (their outputs are then zero: the model is the T2V backbone). ``overrides``
    go to the tiny preset (e.g. patch_size)."""
    torch.manual_seed(seed)
    model = FlashI2VTransformer.from_config("tiny", proj_kernel=proj_kernel, **overrides)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not (t2v and is_flashi2v(name)):
                p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def tiny_inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 3, 4, 6, generator=g)
    t = torch.tensor([500.0])
    context = torch.randn(1, 5, 32, generator=g)
    fourier = torch.randn(1, 16, 3, 4, 6, generator=g)
    s = torch.randn(1, 16, 1, 4, 6, generator=g)
    return x, t, context, fourier, s


@torch.no_grad()
def outputs(model: FlashI2VTransformer, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(velocity with Fourier features, phi(s)): both FlashI2V modules and the backbone in play."""
    x, t, context, fourier, s = tiny_inputs(seed)
    return model(x, t, context, fourier), model.learnable_proj(s, 3)


# -- MindSpeed container ---------------------------------------------------------------------------


class _Boom:
    """Unpickling this would run a shell command: the restricted unpickler must not."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def save_mindspeed(path: Path, model_state: dict, ema_state: dict | None = None, marker: Path | None = None) -> None:
    """A Megatron-style save: args Namespace holding a MindSpeed-MM config object (from a module
    that will not exist at load time), checkpoint_version, iteration, model and ema_model."""
    names = ("mindspeed_mm", "mindspeed_mm.configs", "mindspeed_mm.configs.config")
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    module = sys.modules[names[-1]]
    cls = type("MMConfig", (), {"__module__": module.__name__})
    module.MMConfig = cls
    try:
        mm = cls()
        mm.predictor = {"conv3x3x3_proj": True}
        args = argparse.Namespace(mm=mm, bf16=True, lr=1e-5, hook=_Boom(str(marker)) if marker else None)
        payload = {"args": args, "checkpoint_version": 3.0, "iteration": 100, "model": to_mindspeed(model_state),
                   "num_floating_point_operations_so_far": 0}
        if ema_state is not None:
            payload["ema_model"] = to_mindspeed(ema_state)
        torch.save(payload, path)
    finally:
        for name in names:
            del sys.modules[name]


# -- Wan VAE original names --------------------------------------------------------------------------

_RES = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2", "norm2.gamma": "residual.3.gamma",
        "conv2": "residual.6", "conv_shortcut": "shortcut"}


def _res(rest: str) -> str:
    for theirs, ours in _RES.items():
        if rest.startswith(theirs):
            return ours + rest[len(theirs):]
    return rest


def vae_diffusers_to_original(key: str) -> str:
    """diffusers AutoencoderKLWan key -> the original Wan2.1 VAE key (inverse of diffusers' converter,
    for the released structure: 2 residual blocks per level)."""
    simple = {"quant_conv.": "conv1.", "post_quant_conv.": "conv2.", "encoder.conv_in.": "encoder.conv1.",
              "decoder.conv_in.": "decoder.conv1.", "encoder.norm_out.": "encoder.head.0.",
              "encoder.conv_out.": "encoder.head.2.", "decoder.norm_out.": "decoder.head.0.",
              "decoder.conv_out.": "decoder.head.2."}
    for theirs, ours in simple.items():
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    m = re.match(r"^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d)\.(.*)$", key)
    if m:
        index = {("resnets", "0"): 0, ("attentions", "0"): 1, ("resnets", "1"): 2}[(m.group(2), m.group(3))]
        return f"{m.group(1)}.middle.{index}.{_res(m.group(4)) if m.group(2) == 'resnets' else m.group(4)}"
    m = re.match(r"^encoder\.down_blocks\.(\d+)\.(.*)$", key)
    if m:
        return f"encoder.downsamples.{m.group(1)}.{_res(m.group(2))}"
    m = re.match(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", key)
    if m:
        return f"decoder.upsamples.{4 * int(m.group(1)) + int(m.group(2))}.{_res(m.group(3))}"
    m = re.match(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)$", key)
    if m:
        return f"decoder.upsamples.{4 * int(m.group(1)) + 3}.{m.group(2)}"
    raise KeyError(key)


def make_released_like_vae(seed: int = 0):
    """AutoencoderKLWan with the released structure (dim_mult 1,2,4,4; 2 res blocks) but 8 base channels."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                           temperal_downsample=[False, True, True])
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return vae.eval()


def make_umt5(vocab_size: int, seed: int = 0):
    """Tiny UMT5 encoder with umT5's bucket settings (32 buckets, max distance 128)."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
                        feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    return UMT5EncoderModel(config).eval()
