"""The user-facing operations: load any published checkpoint, convert it to our format, inspect it.

Each takes plain arguments and returns a model or a text report, so the CLI stays a thin layer.
Where a checkpoint holds both EMA and raw weights, the EMA ones come first: that is what the
authors' inference loads, and what ``load_transformer_weights`` returns by default.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import FlashI2VError
from ..model import FlashI2VTransformer
from ..model.io import DEFAULT_SHARD_BYTES, is_our_folder, save_state_sharded, save_transformer, weights_path
from ..outputs import check_output, staged_folder
from . import components, layouts
from ..jsonfile import expect_type, read_json_object
from ..safetensors_files import shard_files
from .readers import PICKLE_SUFFIXES, WeightSet, as_meta, read_weight_file
from ..sizes import parse_size
from .transformer import (
    LoadReport,
    guess_heads,
    load_transformer_state,
    parse_dtype,
    to_our_names,
)

WAN_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.safetensors")
GPU_BRANCH_NAMES = (("ema_model_state_dict.pt", True), ("model_state_dict.pt", False))
_HINT_INTS = ("num_heads", "num_attention_heads", "text_len", "attention_head_dim")
_NOT_TRANSFORMER = (components.VAE_ORIGINAL_NAME, components.UMT5_ORIGINAL_NAME)


@dataclass
class Candidate:
    """One state dict a path offers: ``read`` loads it (lazily: a folder may hold two big ones)."""

    label: str
    ema: bool
    read: Callable[[bool], WeightSet]  # read(meta) -> WeightSet
    hints: dict


def _hints(folder: Path) -> dict:
    """A config.json beside the weights tells what shapes cannot (heads, text length); a damaged one is
    reported (naming the file) rather than ignored, since ignoring it could guess the heads wrong."""
    path = folder / "config.json"
    if not path.is_file():
        return {}
    hints = read_json_object(path)
    for key in _HINT_INTS:
        expect_type(hints, key, int, path, "a positive integer")
        if isinstance(hints.get(key), int) and hints[key] < 1:
            raise FlashI2VError(f"'{path}': key '{key}' must be a positive integer, got {hints[key]}; fix the value")
    expect_type(hints, "eps", (int, float), path, "a number")
    return hints


def _file_candidates(path: Path) -> list[Candidate]:
    """Every state dict in one file, best first (a MindSpeed save may hold ema_model and model)."""

    pickled = path.suffix in PICKLE_SUFFIXES

    @functools.cache
    def real() -> list[WeightSet]:
        return read_weight_file(path)

    def sets(meta: bool) -> list[WeightSet]:
        if meta and not pickled:
            return read_weight_file(path, meta=True)  # safetensors: header only
        return [as_meta(s) for s in real()] if meta else real()  # a pickle is mmapped: read it once

    labels = [(s.label, s.ema) for s in real()] if pickled else [("", False)]
    return [Candidate(f"{path.name}:{label}" if label else path.name, ema,
                      (lambda meta, i=i: sets(meta)[i]), _hints(path.parent)) for i, (label, ema) in enumerate(labels)]


def _folder_file(folder: Path) -> Path:
    """The transformer weights file of a folder of any known kind."""
    for name in (*WAN_WEIGHT_NAMES, "model.safetensors.index.json", "model.safetensors"):
        if (folder / name).is_file():
            return folder / name
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name not in _NOT_TRANSFORMER
             and (p.suffix in (*PICKLE_SUFFIXES, ".safetensors"))]
    if len(files) != 1:
        found = ", ".join(p.name for p in files[:4]) or "no weights files"
        raise FlashI2VError(f"folder '{folder}' holds {found}: pass the transformer weights file itself")
    return files[0]


def transformer_candidates(path: str | Path) -> list[Candidate]:
    """The transformer state dicts that ``path`` offers, EMA first.

    ``path`` may be a weights file (any layout), a shard index, a Wan2.1 download folder, a
    ``transformer/`` folder, a pipeline folder (``transformer/`` + optional ``transformer_ema/``),
    or an authors' GPU-branch ``iter_*`` folder (``model_state_dict.pt`` + ``ema_model_state_dict.pt``).
    """
    path = Path(path)
    if not path.exists():
        raise FlashI2VError(f"checkpoint '{path}' does not exist: check the path")
    if path.is_file():
        return _file_candidates(path)
    if (path / "transformer").is_dir():
        found = []
        for sub, ema in (("transformer_ema", True), ("transformer", False)):
            if (path / sub).is_dir():
                found += [Candidate(f"{sub}/{c.label}", ema, c.read, c.hints) for c in transformer_candidates(path / sub)]
        return found
    gpu = [(path / name, ema) for name, ema in GPU_BRANCH_NAMES if (path / name).is_file()]
    if gpu:
        return [Candidate(c.label, ema, c.read, c.hints) for file, ema in gpu for c in _file_candidates(file)]
    return _file_candidates(_folder_file(path))


def _pick(candidates: list[Candidate], ema: bool | None, source: str) -> Candidate:
    if ema is None:
        return candidates[0]
    for c in candidates:
        if c.ema == ema:
            return c
    raise FlashI2VError(f"{source}: has no {'EMA' if ema else 'non-EMA'} weights "
                        f"(it holds {', '.join(c.label for c in candidates)}): drop the EMA choice")


def _load_candidate(c: Candidate, source: str, meta: bool = False, **kwargs) -> tuple[FlashI2VTransformer, LoadReport]:
    ws = c.read(meta)
    model, report = load_transformer_state(ws.state, hints=c.hints, source=source, **kwargs)
    report.container = c.label
    report.dropped = len(ws.dropped)
    return model, report


def load_transformer_weights(path: str | Path, layout: str | None = None, allow_partial: bool = False,
                             dtype=None, num_heads: int | None = None, proj_kernel: str | None = None,
                             text_len: int | None = None, ema: bool | None = None, device="cpu") -> tuple[FlashI2VTransformer, LoadReport]:
    """Load a FlashI2VTransformer from any published checkpoint; the layout is detected from the keys.

    A T2V source (Wan2.1 original or diffusers) gives FlashI2V with its two new modules at their
    zero init (the report says so). Strict: any missing, unexpected or reshaped key raises
    FlashI2VError unless ``allow_partial`` (then a warning lists them all). ``ema``: None takes what
    inference uses (EMA when present), True/False picks explicitly.
    """
    candidates = transformer_candidates(path)
    chosen = _pick(candidates, ema, str(path))
    model, report = _load_candidate(chosen, str(path), layout=layout, allow_partial=allow_partial, dtype=dtype,
                                    num_heads=num_heads, proj_kernel=proj_kernel, text_len=text_len)
    return model.to(device), report


# -- convert ---------------------------------------------------------------------------------------


def _component_sources(src: Path) -> dict[str, Path]:
    """VAE / text encoder / tokenizer found inside a Wan2.1 or -Diffusers download folder."""
    if not src.is_dir():
        return {}
    options = {"vae": (src / "vae", src / components.VAE_ORIGINAL_NAME),
               "text_encoder": (src / "text_encoder", src / components.UMT5_ORIGINAL_NAME),
               "tokenizer": (src / "tokenizer", src / components.TOKENIZER_SUBDIR)}
    return {name: next(p for p in paths if p.exists()) for name, paths in options.items()
            if any(p.exists() for p in paths)}


def _weight_sets_to_write(candidates: list[Candidate]) -> list[tuple[str, Candidate]]:
    """transformer/ gets the raw weights, transformer_ema/ the EMA ones; a lone set goes to transformer/."""
    raw = next((c for c in candidates if not c.ema), None)
    ema = next((c for c in candidates if c.ema), None)
    if raw is None or ema is None:
        return [("transformer", candidates[0])]
    return [("transformer", raw), ("transformer_ema", ema)]


def check_destination(dst: Path, sources: dict[str, Path], overwrite: bool) -> None:
    """Refuse, before anything is read or written, a destination that is (or is inside, or holds) a source,
    is a file, or is a non-empty folder without ``overwrite``."""
    check_output(dst, [(what, path) for what, path in sources.items()], overwrite, folder=True)


def convert_checkpoint(src: str | Path, dst: str | Path, layout: str | None = None, allow_partial: bool = False,
                       dtype=None, vae: str | Path | None = None, text_encoder: str | Path | None = None,
                       tokenizer: str | Path | None = None, num_heads: int | None = None,
                       proj_kernel: str | None = None, text_len: int | None = None,
                       max_shard_size=DEFAULT_SHARD_BYTES, overwrite: bool = False, link_files: bool = False) -> str:
    """Write our pipeline folder ``dst`` (transformer/, [transformer_ema/], vae/, text_encoder/, tokenizer/).

    ``src`` is anything ``transformer_candidates`` accepts; VAE, text encoder and tokenizer are taken
    from the explicit arguments, else from inside a Wan2.1 / -Diffusers download folder. ``dtype``
    applies to the transformer and text encoder; otherwise every tensor keeps its stored dtype.
    ``dst`` must not overlap any source; an existing non-empty ``dst`` is replaced only with
    ``overwrite``. Everything is written to a temporary folder beside ``dst`` and renamed into place
    at the end, so a failure midway leaves no half model folder (and the old ``dst`` intact).
    ``link_files``: component folders already in the diffusers / transformers layout are hard-linked instead
    of copied where the file system allows (``flashi2v.hub`` does so for the files of its read-only Hub cache).
    Returns a human-readable report.
    """
    src, dst = Path(src), Path(dst)
    given = {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}
    sources = {"source checkpoint": src, **{name.replace("_", " "): Path(p) for name, p in given.items() if p}}
    check_destination(dst, sources, overwrite)
    max_shard_size = parse_size(max_shard_size, "--max-shard-size")
    dtype = parse_dtype(dtype)
    candidates = transformer_candidates(src)
    found = _component_sources(src)
    parts = {name: Path(p) for name, p in {**found, **{k: v for k, v in given.items() if v}}.items()}
    for name, path in parts.items():
        if not path.exists():
            raise FlashI2VError(f"{name.replace('_', ' ')} '{path}' does not exist: check the path")
    with staged_folder(dst) as tmp:
        lines = _convert_into(tmp, src, candidates, parts, layout=layout, allow_partial=allow_partial, dtype=dtype,
                              num_heads=num_heads, proj_kernel=proj_kernel, text_len=text_len,
                              max_shard_size=max_shard_size, link_files=link_files)
        absent = [name for name in ("vae", "text_encoder", "tokenizer") if not (tmp / name).is_dir()]
    if absent:
        lines.append(f"note: {dst} has no {', '.join(absent)} yet: pass --vae/--text-encoder/--tokenizer "
                     "before `flashi2v generate --model` can use it")
    lines.append(f"wrote {dst}")
    return "\n".join(lines)


def _convert_into(out: Path, src: Path, candidates: list[Candidate], parts: dict[str, Path], dtype,
                  max_shard_size: int, link_files: bool = False, **load_kwargs) -> list[str]:
    lines = []
    for folder, candidate in _weight_sets_to_write(candidates):
        model, report = _load_candidate(candidate, str(src), dtype=dtype, **load_kwargs)
        save_transformer(model, out / folder, max_shard_size)
        lines += [f"{folder}: from {candidate.label}", *("  " + line for line in report.summary().splitlines())]
        del model
    if "vae" in parts:
        lines.append(components.write_vae(parts["vae"], out / "vae", max_shard_size, link=link_files))
    if "text_encoder" in parts:
        lines.append(components.write_text_encoder(parts["text_encoder"], out / "text_encoder", dtype, max_shard_size,
                                                   link=link_files))
    if "tokenizer" in parts:
        lines.append(components.write_tokenizer(parts["tokenizer"], out / "tokenizer"))
    return lines


# -- export (our format -> a published layout) ------------------------------------------------------


def export_state_dict(model_or_state, layout: str) -> dict[str, torch.Tensor]:
    """Our state dict in ``layout``'s names. T2V layouts leave out the FlashI2V modules; MindSpeed's
    ``_extra_state`` entries (None) are not recreated, as its own converters also strip them."""
    layouts.check_layout_name(layout)
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    t2v = layouts.LAYOUTS[layout].t2v
    return {layouts.from_ours(k, layout): v for k, v in state.items() if not (t2v and layouts.is_flashi2v_key(k))}


def _source_files(src: Path) -> set[Path]:
    if src.is_dir():
        return {p.resolve() for p in src.rglob("*") if p.is_file()}
    if src.name.endswith((".safetensors", ".index.json")):
        try:
            return {p.resolve() for p in shard_files(src)} | {src.resolve()}
        except FlashI2VError:
            pass
    return {src.resolve()}


def _check_export_target(src: Path, dst_file: Path, overwrite: bool) -> None:
    """The writer replaces ``dst_file`` and deletes stale ``<stem>*.safetensors*`` shards beside it: none of
    them may be a file of the source, and an existing output is replaced only with ``overwrite``."""
    stem = dst_file.name[: -len(".safetensors")] if dst_file.suffix == ".safetensors" else None
    victims = {dst_file} | (set(dst_file.parent.glob(f"{stem}*.safetensors*")) if stem else set())
    hit = sorted({v.resolve() for v in victims if v.exists()} & _source_files(src))
    if hit:
        raise FlashI2VError(f"exporting to '{dst_file}' would overwrite the source file '{hit[0]}': "
                            "write the export to another file name or folder")
    if dst_file.exists() and not overwrite:
        raise FlashI2VError(f"'{dst_file}' already exists: pick a new file name, or pass overwrite=True to replace it")


def export_transformer(src: str | Path, dst_file: str | Path, layout: str, max_shard_size=None, overwrite: bool = False,
                       **load_kwargs) -> Path:
    """Write a transformer (any loadable checkpoint) as a ``layout`` file: ``.safetensors`` (sharded
    beside an index when over ``max_shard_size``) or ``.pt``. ``load_kwargs`` go to load_transformer_weights.
    A file of the source is never overwritten; an existing output only with ``overwrite``."""
    src, dst_file = Path(src), Path(dst_file)
    _check_export_target(src, dst_file, overwrite)
    model, _ = load_transformer_weights(src, **load_kwargs)
    state = export_state_dict(model, layout)
    dst_file.parent.mkdir(parents=True, exist_ok=True)
    if dst_file.suffix in PICKLE_SUFFIXES:
        torch.save({k: v.contiguous() for k, v in state.items()}, dst_file)
    else:
        save_state_sharded(state, dst_file.parent, max_shard_size or 2**62, weights_name=dst_file.name)
    return dst_file


# -- inspect ---------------------------------------------------------------------------------------


_MODULE_ORDER = ("patch_embedding", "text_embedding", "time_embedding", "time_projection", "blocks", "head",
                 "fourier_embedding", "learnable_proj")


def _param_counts(state: dict) -> list[str]:
    counts: dict[str, int] = {}
    order = {name: i for i, name in enumerate(_MODULE_ORDER)}
    for key, value in sorted(state.items(), key=lambda kv: order.get(kv[0].split(".")[0], len(order))):
        module = key.split(".")[0]
        counts[module] = counts.get(module, 0) + value.numel()
    layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    width = max(len(m) for m in counts) + 2 if counts else 0
    rows = [f"  {m:<{width}}{n:>15,}" + (f"  ({layers} layers)" if m == "blocks" else "") for m, n in counts.items()]
    return [f"parameters: {sum(counts.values()):,}", *rows]


def _inspect_component(ws: WeightSet, name: str) -> list[str]:
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in ws.state.values()})
    total = sum(v.numel() for v in ws.state.values())
    return [f"layout: {name}", f"tensors: {len(ws.state)}", f"parameters: {total:,}", f"dtypes: {', '.join(dtypes)}",
            "convert it with `flashi2v convert ... --" + ("vae" if "vae" in name else "text-encoder") + " PATH`"]


def _inspect_candidate(c: Candidate, path: Path, layout: str | None, num_heads: int | None) -> list[str]:
    ws = c.read(True)
    prefix = layouts.strip_wrapper_prefix(list(ws.state))
    detected = layout or layouts.detect_layout([k[len(prefix):] for k in ws.state], str(path))
    if detected in layouts.COMPONENT_LAYOUTS:
        return [f"weights: {c.label}", *_inspect_component(ws, detected)]
    ours, _ = to_our_names(ws.state, detected, str(path))
    if num_heads is not None and (isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1):
        raise FlashI2VError(f"num_heads {num_heads!r} must be a positive integer (12 for FlashI2V-1.3B, 40 for 14B)")
    heads = num_heads or guess_heads(ours, c.hints)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, report = load_transformer_state(ws.state, layout=detected, allow_partial=True, num_heads=heads or 2,
                                           hints=c.hints, source=str(path))
    report.heads_known = bool(heads)
    dropped = f", {len(ws.dropped)} non-tensor entries dropped" if ws.dropped else ""
    lines = [f"weights: {c.label}" + (" (EMA)" if c.ema else "") + dropped, *report.summary().splitlines()[1:]]
    return lines + _param_counts(ours)


def inspect_checkpoint(path: str | Path, layout: str | None = None, num_heads: int | None = None) -> str:
    """A text report: detected layout, config, projection variant, dtypes, parameters per module, and
    every missing / unexpected / shape-mismatched key. Reads shapes only (meta tensors), no weights."""
    path = Path(path)
    candidates = transformer_candidates(path)
    lines = [f"checkpoint: {path}"]
    if path.is_dir() and is_our_folder(path):
        lines.append(f"format: flashi2v (our own: config.json + {weights_path(path).name})")
    for c in candidates:
        lines += _inspect_candidate(c, path, layout, num_heads)
    return "\n".join(lines)
