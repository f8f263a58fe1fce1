"""The published transformer key layouts, as data, and how to tell them apart from the keys alone.

Our transformer uses the Wan2.1 original names (plus ``fourier_embedding.*`` and
``learnable_proj.proj.*``), so every foreign layout is a rename table onto those names. Tables are
written per module with ``{}`` standing for the block index; the parameter name (``weight``,
``bias``) is carried over unchanged. A key no table mentions keeps its name, so anything unknown
surfaces later as an "unexpected key" instead of being silently dropped.

Layouts:
- ``wan-original``   Wan2.1 T2V (``diffusion_pytorch_model*.safetensors``): our names, no FlashI2V modules.
- ``flashi2v-gpu``   the authors' GPU-branch FlashI2V checkpoints: our names exactly.
- ``wan-diffusers``  diffusers ``WanTransformer3DModel`` (``transformer/`` of the -Diffusers repos).
- ``mindspeed``      MindSpeed-MM (npu branch), the released ``flashi2v_1_3B.pt``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ..errors import FlashI2VError

FLASHI2V_PREFIXES = ("fourier_embedding.", "learnable_proj.")
EXTRA_STATE_SUFFIX = "._extra_state"
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
# Wrappers that prepend a prefix to every key (DDP, torch.compile, ComfyUI-style single files).
WRAPPER_PREFIXES = ("model.diffusion_model.", "module.", "_orig_mod.")


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    t2v: bool  # True: a text-to-video layout; the FlashI2V modules are not part of it.


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("wan-original", "Wan2.1 original transformer (T2V)", True),
        Layout("wan-diffusers", "Wan2.1 diffusers WanTransformer3DModel (T2V)", True),
        Layout("flashi2v-gpu", "Wan2.1 original names + FlashI2V modules: the authors' GPU-branch checkpoints "
               "and our own format", False),
        Layout("mindspeed", "FlashI2V MindSpeed-MM checkpoint (released flashi2v_1_3B.pt)", False),
    )
}

# MindSpeed-MM module path -> Wan original module path (mindspeed_flashi2v_1.3b.md, section 2).
MINDSPEED_MODULES: dict[str, str] = {
    "text_embedding.linear_1": "text_embedding.0",
    "text_embedding.linear_2": "text_embedding.2",
    "learnable_proj.0": "learnable_proj.proj.0",
    "learnable_proj.2": "learnable_proj.proj.2",
    **{
        f"blocks.{{}}.{attn}.{theirs}": f"blocks.{{}}.{attn}.{ours}"
        for attn in ("self_attn", "cross_attn")
        for theirs, ours in (("proj_q", "q"), ("proj_k", "k"), ("proj_v", "v"), ("proj_out", "o"),
                             ("q_norm", "norm_q"), ("k_norm", "norm_k"))
    },
}


def template(key: str) -> tuple[str, str | None]:
    """'blocks.7.ffn.0.weight' -> ('blocks.{}.ffn.0.weight', '7'); other keys -> (key, None)."""
    m = _BLOCK.match(key)
    return (f"blocks.{{}}.{key[m.end():]}", m.group(1)) if m else (key, None)


def _rename_modules(key: str, table: dict[str, str]) -> str:
    """Rename the module path of ``key`` through a module table, keeping its parameter name."""
    tmpl, index = template(key)
    module, _, param = tmpl.rpartition(".")
    module = table.get(module, module)
    return f"{module}.{param}".format(index) if index is not None else f"{module}.{param}"


@functools.cache
def _inverse(table_name: str) -> dict[str, str]:
    table = {"mindspeed": MINDSPEED_MODULES}[table_name]
    return {v: k for k, v in table.items()}


@functools.cache
def _our_templates() -> tuple[str, ...]:
    """Our key templates, read off a meta-device model so they follow the model code, not a copy."""
    import torch

    from ..model import FlashI2VTransformer

    with torch.device("meta"):
        model = FlashI2VTransformer.from_config("tiny")
    return tuple(dict.fromkeys(template(k)[0] for k in model.state_dict()))


@functools.cache
def diffusers_table() -> dict[str, str]:
    """Our key template -> diffusers key template, computed with diffusers' own Wan converter.

    diffusers ships ``convert_wan_transformer_to_diffusers`` (original -> diffusers), a pure
    renaming; running it over our key names gives the table without a second hand-written copy.
    The FlashI2V modules have no diffusers counterpart and keep their names.
    """
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    backbone = [t for t in _our_templates() if not t.startswith(FLASHI2V_PREFIXES)]
    converted = convert_wan_transformer_to_diffusers({t: t for t in backbone})
    table = {ours: theirs for theirs, ours in converted.items()}
    if len(table) != len(backbone):
        raise FlashI2VError("diffusers' Wan converter no longer maps our keys one to one: pin diffusers to a tested version")
    return table


@functools.cache
def _diffusers_inverse() -> dict[str, str]:
    return {v: k for k, v in diffusers_table().items()}


def _rename_keys(key: str, table: dict[str, str]) -> str:
    tmpl, index = template(key)
    tmpl = table.get(tmpl, tmpl)
    return tmpl.format(index) if index is not None else tmpl


def to_ours(key: str, layout: str) -> str:
    """One key of ``layout`` -> our (Wan original) name."""
    if layout == "mindspeed":
        return _rename_modules(key, MINDSPEED_MODULES)
    if layout == "wan-diffusers":
        return _rename_keys(key, _diffusers_inverse())
    return key


def from_ours(key: str, layout: str) -> str:
    """One of our keys -> its name in ``layout`` (the inverse of ``to_ours``)."""
    if layout == "mindspeed":
        return _rename_modules(key, _inverse("mindspeed"))
    if layout == "wan-diffusers":
        return _rename_keys(key, diffusers_table())
    return key


def strip_wrapper_prefix(keys: list[str]) -> str:
    """The wrapper prefix every key shares ('' if none), e.g. 'module.' from a DDP save."""
    for prefix in WRAPPER_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def is_flashi2v_key(key: str) -> bool:
    return key.startswith(FLASHI2V_PREFIXES)


# Keys that identify a layout; the first rule that matches wins.
_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mindspeed", ("text_embedding.linear_1.weight", "blocks.0.self_attn.proj_q.weight")),
    ("wan-diffusers", ("condition_embedder.time_embedder.linear_1.weight", "blocks.0.attn1.to_q.weight")),
    ("wan-original", ("text_embedding.0.weight", "blocks.0.self_attn.q.weight")),
    ("wan-vae-original", ("decoder.middle.0.residual.0.gamma",)),
    ("diffusers-vae", ("decoder.mid_block.resnets.0.norm1.gamma",)),
    ("umt5-original", ("token_embedding.weight", "blocks.0.attn.q.weight")),
    ("transformers-umt5", ("encoder.block.0.layer.0.SelfAttention.q.weight",)),
)
COMPONENT_LAYOUTS = ("wan-vae-original", "diffusers-vae", "umt5-original", "transformers-umt5")


def detect_layout(keys, source: str = "checkpoint") -> str:
    """Name the layout of a state dict from its keys (wrapper prefix already stripped).

    Any one signature key is enough, so a checkpoint missing some tensors is still recognised and
    then reported key by key instead of as 'unknown layout'.
    """
    keys = set(keys)
    for name, signature in _SIGNATURES:
        if any(k in keys for k in signature):
            if name == "wan-original" and any(is_flashi2v_key(k) for k in keys):
                return "flashi2v-gpu"
            return name
    if any(k.endswith(EXTRA_STATE_SUFFIX) for k in keys):
        return "mindspeed"
    first = ", ".join(sorted(keys)[:3]) or "no keys at all"
    raise FlashI2VError(f"{source}: cannot tell the weight layout from its keys (first: {first}): "
                        f"pass --layout, one of {', '.join(LAYOUTS)}")


def check_layout_name(name: str) -> str:
    if name not in LAYOUTS:
        raise FlashI2VError(f"unknown layout {name!r}: use one of {', '.join(LAYOUTS)}")
    return name
