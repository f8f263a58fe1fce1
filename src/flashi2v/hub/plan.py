"""Which files of a Hub repository make a model, read from its file list alone (before anything is downloaded).

The kinds are the layouts ``flashi2v convert`` reads, told apart by file names the way ``convert`` tells
folders apart: our own pipeline folder (used as it is), a diffusers pipeline (``transformer/`` with
``diffusion_pytorch_model*``), a Wan2.1 original download (``diffusion_pytorch_model*`` at the top), an
authors' GPU-branch ``iter_*`` folder, or a single weights file (the released MindSpeed ``flashi2v_1_3B.pt``).
The layout of the tensors inside is detected later, from the keys, by ``convert``. Only the files the model
needs are fetched: a repository may hold examples, other variants, or optimizer states.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass, field

from ..encoders import PrecomputedTextEncoder, SentenceTextEncoder
from ..errors import FlashI2VError
from ..weights.components import TOKENIZER_SUBDIR, UMT5_ORIGINAL_NAME, VAE_ORIGINAL_NAME
from ..weights.convert import GPU_BRANCH_NAMES, WAN_WEIGHT_NAMES

COMPONENTS = ("vae", "text_encoder", "tokenizer")
GPU_BRANCH_FILES = tuple(name for name, _ in GPU_BRANCH_NAMES)
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")
_SHARD = re.compile(r"^(?P<stem>.+)-\d{5}-of-\d{5}\.safetensors$")
_COMPONENT_DIRS = ("vae", "text_encoder", "tokenizer", "transformer", "transformer_ema", "google", "image_encoder",
                   "image_processor", "scheduler")


@dataclass
class RepoPlan:
    """kind: flashi2v | diffusers | wan-original | gpu-branch | weights-file. ``transformer`` and the
    ``components`` values are paths inside the snapshot ('' is its top); ``missing`` components come from the
    companion repository."""

    kind: str
    transformer: str
    patterns: list[str]
    components: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def direct(self) -> bool:
        """Our own complete folder: loaded from the download as it is, nothing converted."""
        return self.kind == "flashi2v" and not self.missing

    def files(self, listing: dict[str, int | None]) -> list[str]:
        return [f for f in listing if any(fnmatch.fnmatch(f, p) for p in self.patterns)]


def _join(*parts: str) -> str:
    return posixpath.join(*[p for p in parts if p])


def _has_dir(files: set[str], folder: str) -> bool:
    prefix = _join(folder) + "/"
    return any(f.startswith(prefix) for f in files)


def _components_at(base: str, files: set[str]) -> tuple[dict[str, str], list[str]]:
    """Components beside the transformer (diffusers folders or the original Wan files), and their patterns."""
    found, patterns = {}, []
    options = {"vae": ((_join(base, "vae"), True), (_join(base, VAE_ORIGINAL_NAME), False)),
               "text_encoder": ((_join(base, "text_encoder"), True), (_join(base, UMT5_ORIGINAL_NAME), False)),
               "tokenizer": ((_join(base, "tokenizer"), True), (_join(base, TOKENIZER_SUBDIR), True))}
    for name, paths in options.items():
        for path, is_dir in paths:
            if (is_dir and _has_dir(files, path)) or (not is_dir and path in files):
                found[name] = path
                patterns.append(f"{path}/*" if is_dir else path)
                break
    return found, patterns


def _missing(found: dict[str, str], files: set[str]) -> list[str]:
    """Components to take from the companion. A text encoder and its tokenizer come from the same place; a
    sentence-encoder reference (the built-in kind) needs no tokenizer."""
    missing = [name for name in ("vae", "text_encoder") if name not in found]
    text_encoder = found.get("text_encoder", "")
    self_contained = any(_join(text_encoder, name) in files
                         for name in (SentenceTextEncoder.SOURCE, PrecomputedTextEncoder.FILE))
    if "text_encoder" in missing or ("tokenizer" not in found and not self_contained):
        missing.append("tokenizer")
    return missing


def _weight_files(files: set[str]) -> list[str]:
    """Transformer weight candidates: single files and shard indexes (not their shards), no components."""
    candidates = []
    for f in sorted(files):
        name = posixpath.basename(f)
        parts = f.split("/")
        if any(p in _COMPONENT_DIRS for p in parts[:-1]) or name in (VAE_ORIGINAL_NAME, UMT5_ORIGINAL_NAME):
            continue
        if name.endswith(".safetensors.index.json") or (name.endswith(WEIGHT_SUFFIXES) and not _SHARD.match(name)):
            candidates.append(f)
    return candidates


def _weights_patterns(path: str) -> list[str]:
    """The file, its shards when it is an index, and a config.json beside it (heads, text length)."""
    folder = posixpath.dirname(path)
    patterns = [path, _join(folder, "config.json")]
    if path.endswith(".safetensors.index.json"):
        stem = path[: -len(".safetensors.index.json")]
        patterns.append(f"{stem}-*-of-*.safetensors")
    return patterns


def plan_repo(listing: dict[str, int | None], repo: str, subpath: str = "") -> RepoPlan:
    """The plan for ``repo`` (its file list: path -> size) or for the file / folder ``subpath`` inside it."""
    files = set(listing)
    if subpath:
        if subpath in files:
            files = {subpath}
        else:
            files = {f for f in files if f.startswith(subpath + "/")}
        if not files:
            raise FlashI2VError(f"'{subpath}' is not a file or folder of the Hub repository {repo}: check the path")
    base = subpath if subpath and subpath not in listing else ""
    t = _join(base, "transformer")
    ours = any(_join(t, n) in files for n in ("model.safetensors", "model.safetensors.index.json"))
    if ours and _join(t, "config.json") in files:
        found, patterns = _components_at(base, files)
        extra = [_join(base, "pipeline.json"), f"{t}/*", f"{_join(base, 'transformer_ema')}/*"]
        return RepoPlan("flashi2v", base, extra + patterns, found, _missing(found, files))
    if any(_join(t, n) in files for n in WAN_WEIGHT_NAMES):
        found, patterns = _components_at(base, files)
        return RepoPlan("diffusers", base, [f"{t}/*", *patterns], found, _missing(found, files))
    if any(_join(base, n) in files for n in WAN_WEIGHT_NAMES):
        found, patterns = _components_at(base, files)
        weights = [_join(base, "diffusion_pytorch_model*"), _join(base, "config.json")]
        return RepoPlan("wan-original", base, weights + patterns, found, _missing(found, files))
    gpu = sorted({posixpath.dirname(f) for f in files if posixpath.basename(f) in GPU_BRANCH_FILES})
    if len(gpu) == 1:
        found, patterns = _components_at(gpu[0], files)
        weights = [_join(gpu[0], name) for name in GPU_BRANCH_FILES] + [_join(gpu[0], "config.json")]
        return RepoPlan("gpu-branch", gpu[0], weights + patterns, found, _missing(found, files))
    candidates = _weight_files(files) if not gpu else [f"{g}/" for g in gpu]
    if len(candidates) != 1:
        where = f"hf://{repo}/{subpath}" if subpath else repo
        if not candidates:
            raise FlashI2VError(f"the Hub repository {where} holds no model weights (.safetensors, .pt, .pth) that "
                                "flashi2v reads: check the repository id")
        shown = ", ".join(candidates[:4]) + (f" and {len(candidates) - 4} more" if len(candidates) > 4 else "")
        raise FlashI2VError(f"the Hub repository {where} holds several weights ({shown}): pick one as "
                            f"hf://{repo}/PATH, e.g. hf://{repo}/{candidates[0].rstrip('/')}")
    path = candidates[0]
    found, patterns = _components_at(posixpath.dirname(path), files)
    return RepoPlan("weights-file", path, _weights_patterns(path) + patterns, found, _missing(found, files))


def companion_patterns(missing: list[str]) -> list[str]:
    """What to fetch from the diffusers companion repository (Wan2.1-T2V-1.3B-Diffusers)."""
    return [f"{name}/*" for name in COMPONENTS if name in missing]


def download_size(listing: dict[str, int | None], patterns: list[str]) -> int:
    return sum(size or 0 for f, size in listing.items() if any(fnmatch.fnmatch(f, p) for p in patterns))
