"""Foreign state dict -> FlashI2VTransformer: rename, infer the config from shapes, load strictly.

The config is read off the tensors (widths, depth, projection kernel) because foreign checkpoints
rarely ship a config we can trust; only what shapes cannot tell (attention heads, text length, eps)
comes from a ``config.json`` beside the weights, an explicit argument, or Wan's head_dim of 128.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from ..config import TransformerConfig
from ..errors import FlashI2VError
from ..model import FlashI2VTransformer
from . import layouts

WAN_HEAD_DIM = 128
_KERNELS = {(1, 3, 3): "1x3x3", (3, 3, 3): "3x3x3"}
# Names other configs use for the fields shapes cannot tell (Wan, diffusers, ours).
_HINT_NAMES = {"num_heads": ("num_heads", "num_attention_heads"), "text_len": ("text_len",), "eps": ("eps",)}


def parse_dtype(dtype) -> torch.dtype | None:
    """None, a torch.dtype or a name ('bf16', 'bfloat16', 'fp32', ...) -> torch.dtype or None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if str(dtype) not in table:
        raise FlashI2VError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    return table[str(dtype)]


def to_our_names(state: dict, layout: str | None = None, source: str = "checkpoint") -> tuple[dict, str]:
    """Rename a transformer state dict of any known layout to ours; returns (state, layout name)."""
    prefix = layouts.strip_wrapper_prefix(list(state))
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items()}
    name = layouts.check_layout_name(layout) if layout else layouts.detect_layout(state, source)
    if name in layouts.COMPONENT_LAYOUTS:
        raise FlashI2VError(f"{source}: holds a {name} checkpoint, not a transformer: pass it with "
                            f"--{'vae' if 'vae' in name else 'text-encoder'} instead")
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or key.endswith(layouts.EXTRA_STATE_SUFFIX):
            continue  # Megatron's `_extra_state` entries are None: no weights in them
        new = layouts.to_ours(key, name)
        if new in out:
            raise FlashI2VError(f"{source}: two keys map to {new!r}: this is not a {name} checkpoint, pass --layout")
        out[new] = value
    return out, name


def _shape(state: dict, key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise FlashI2VError(f"{source}: cannot infer the model size, '{key}' is missing: is this a Wan/FlashI2V transformer checkpoint?")
    return tuple(state[key].shape)


def _hint(hints: dict, field_name: str):
    for name in _HINT_NAMES[field_name]:
        if hints.get(name) is not None:
            return hints[name]
    return None


def guess_heads(state: dict, hints: dict | None) -> int | None:
    """Heads from a config.json beside the weights, else Wan's head_dim of 128, else None."""
    hinted = _hint(hints or {}, "num_heads")
    if hinted:
        return int(hinted)
    dim = state["patch_embedding.weight"].shape[0] if "patch_embedding.weight" in state else 0
    return dim // WAN_HEAD_DIM if dim and dim % WAN_HEAD_DIM == 0 else None


def infer_config(state: dict, hints: dict | None = None, num_heads: int | None = None,
                 proj_kernel: str | None = None, source: str = "checkpoint") -> TransformerConfig:
    """The transformer config of a state dict in our names, read from its tensor shapes.

    num_heads: the argument, else the hints (a config.json beside the weights), else dim / 128.
    proj_kernel: the learnable_proj weights' kernel when present, else the argument, else 1x3x3.
    """
    hints = hints or {}
    if num_heads is not None and (isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1):
        raise FlashI2VError(f"num_heads {num_heads!r} must be a positive integer (12 for FlashI2V-1.3B, 40 for 14B)")
    dim, in_dim, *patch = _shape(state, "patch_embedding.weight", source)
    heads = num_heads or guess_heads(state, hints)
    if not heads:
        raise FlashI2VError(f"{source}: cannot tell the number of attention heads of a {dim}-wide model: "
                            "pass num_heads (or put a config.json with num_heads beside the weights)")
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
    kernel = proj_kernel
    if "learnable_proj.proj.0.weight" in state:
        found = _KERNELS.get(_shape(state, "learnable_proj.proj.0.weight", source)[2:])
        if proj_kernel and found and proj_kernel != found:
            raise FlashI2VError(f"{source}: the projection kernel is {found}, not the requested {proj_kernel}: drop the override")
        kernel = found or kernel
    return TransformerConfig(
        dim=dim, in_dim=in_dim, patch_size=tuple(patch), num_heads=int(heads),
        num_layers=max(blocks) + 1 if blocks else 0,
        ffn_dim=_shape(state, "blocks.0.ffn.0.weight", source)[0],
        out_dim=_shape(state, "head.head.weight", source)[0] // math.prod(patch),
        text_dim=_shape(state, "text_embedding.0.weight", source)[1],
        freq_dim=_shape(state, "time_embedding.0.weight", source)[1],
        text_len=int(_hint(hints, "text_len") or 512), eps=float(_hint(hints, "eps") or 1e-6),
        cross_attn_norm="blocks.0.norm3.weight" in state, proj_kernel=kernel or "1x3x3",
    )


@dataclass
class LoadReport:
    """What a load did: layout, which tensors loaded, and what was missing, unexpected or reshaped."""

    source: str
    layout: str
    config: TransformerConfig
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    zero_init: list[str] = field(default_factory=list)  # FlashI2V modules absent from a T2V source
    container: str = ""
    dropped: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)
    heads_known: bool = True  # False: inspect could not tell the head count (it does not change any shape)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self, limit: int | None = 3) -> str:
        """'2 missing (first: a, b); 1 unexpected (first: c)'; limit=None lists every key."""
        parts = []
        for what, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("shape-mismatched", self.mismatched)):
            if keys:
                listed = f" (first: {', '.join(keys[:limit])})" if limit else f": {', '.join(keys)}"
                parts.append(f"{len(keys)} {what}{listed}")
        return "; ".join(parts)

    def summary(self) -> str:
        lines = [f"source: {self.source}", f"layout: {self.layout} ({layouts.LAYOUTS[self.layout].description})"
                 if self.layout in layouts.LAYOUTS else f"layout: {self.layout}"]
        if self.container:
            lines.append(f"container: {self.container}" + (f" ({self.dropped} non-tensor entries dropped)" if self.dropped else ""))
        c = self.config
        heads = c.num_heads if self.heads_known else "? (pass num_heads)"
        lines.append(f"config: dim {c.dim}, ffn {c.ffn_dim}, heads {heads}, layers {c.num_layers}, "
                     f"text_dim {c.text_dim}, freq_dim {c.freq_dim}, text_len {c.text_len}, patch {list(c.patch_size)}")
        lines.append(f"projection: {c.proj_kernel}")
        lines.append("dtypes: " + ", ".join(f"{k} x{n}" for k, n in sorted(self.dtypes.items())))
        lines.append(f"loaded: {self.loaded} tensors")
        if self.zero_init:
            lines.append("initialised from T2V: " + ", ".join(self.zero_init) + " left at their zero init "
                         "(the model starts exactly as the T2V backbone)")
        lines.append("problems: " + (self.problems(limit=None) or "none"))
        return "\n".join(lines)


def _flashi2v_modules(keys) -> list[str]:
    return sorted({k.split(".")[0] for k in keys if layouts.is_flashi2v_key(k)})


def compare_state(expected: dict, state: dict, report: LoadReport) -> None:
    """Fill report.missing / unexpected / mismatched; absent FlashI2V modules of a T2V source are zero-init."""
    flashi2v = [k for k in expected if layouts.is_flashi2v_key(k)]
    t2v = not any(k in state for k in flashi2v)
    report.missing = [k for k in expected if k not in state and not (t2v and k in flashi2v)]
    report.unexpected = [k for k in state if k not in expected]
    report.mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                         if k in state and tuple(state[k].shape) != tuple(v.shape)]
    report.zero_init = _flashi2v_modules(flashi2v) if t2v else []
    dtypes: dict[str, int] = {}
    for v in state.values():
        name = str(v.dtype).replace("torch.", "")
        dtypes[name] = dtypes.get(name, 0) + 1
    report.dtypes = dtypes


def _enforce(report: LoadReport, allow_partial: bool) -> None:
    """Strict by default: any problem is a one-line error; with allow_partial, a warning listing all."""
    if report.ok:
        return
    if not allow_partial:
        raise FlashI2VError(f"{report.source}: {report.problems()}: the weights do not match a FlashI2V transformer "
                            "of this shape (pass --allow-partial to load the rest)")
    warnings.warn(f"{report.source}: loading partially, {report.problems(limit=None)}", stacklevel=3)


def _materialize_unloaded(model: FlashI2VTransformer, names: list[str], dtype: torch.dtype) -> None:
    """Give real storage to parameters no tensor will fill, initialised as a fresh model would be.

    The model is still on the meta device here, so ``reset_parameters`` is free for every other
    parameter and only initialises these (zeros first: parameters it does not touch stay zero).
    """
    if not names:
        return
    for name in names:
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner)
        module._parameters[attr] = torch.nn.Parameter(torch.zeros(module._parameters[attr].shape))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same file always converts to the same bytes; the caller's RNG is untouched
        model.reset_parameters()
    for name in names:
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner)
        module._parameters[attr] = torch.nn.Parameter(module._parameters[attr].detach().to(dtype))


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """A copy when the data is not 64-byte aligned (safetensors packs tensors at 8-byte offsets):
    CPU kernels pick different vector paths by alignment, so the same weights would otherwise give
    results differing in the last bits from a model built in memory."""
    return t if t.is_meta or t.data_ptr() % 64 == 0 else t.clone()


def _common_dtype(state: dict) -> torch.dtype:
    floats = [v.dtype for v in state.values() if v.is_floating_point()]
    return max(set(floats), key=floats.count) if floats else torch.float32


def load_transformer_state(state: dict, layout: str | None = None, allow_partial: bool = False,
                           dtype=None, num_heads: int | None = None, proj_kernel: str | None = None,
                           text_len: int | None = None, hints: dict | None = None, source: str = "checkpoint"
                           ) -> tuple[FlashI2VTransformer, LoadReport]:
    """Build a FlashI2VTransformer from an in-memory state dict of any layout.

    Works on meta tensors too (then the model is on the meta device): that is how full-size
    checkpoints are checked without the memory. Tensors are assigned, not copied, and keep their
    dtype unless ``dtype`` is given. ``num_heads`` / ``text_len`` override what the shapes cannot
    tell (defaults: config.json hints, else head_dim 128 and 512 tokens, as every released model).
    """
    dtype = parse_dtype(dtype)
    hints = {**(hints or {}), **({"text_len": text_len} if text_len else {})}
    ours, name = to_our_names(state, layout, source)
    config = infer_config(ours, hints, num_heads, proj_kernel, source)
    with torch.device("meta"):
        model = FlashI2VTransformer.from_config(config)
    expected = model.state_dict()
    report = LoadReport(source, name, config)
    compare_state(expected, ours, report)
    _enforce(report, allow_partial)
    bad = {m.split(" ")[0] for m in report.mismatched}
    usable = {k: _aligned(v.to(dtype) if dtype and v.is_floating_point() else v)
              for k, v in ours.items() if k in expected and k not in bad}
    on_meta = any(v.is_meta for v in usable.values())
    if not on_meta:
        _materialize_unloaded(model, [k for k in expected if k not in usable], dtype or _common_dtype(usable))
    model.load_state_dict(usable, strict=False, assign=True)
    report.loaded = len(usable)
    return model, report
