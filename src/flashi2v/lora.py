"""LoRA adapters for the FlashI2V transformer, through peft (the ecosystem's library, not our own layers).

One home for: which layers get adapters (``DEFAULT_TARGETS``), putting adapters on a model for training
(``apply_lora``: base frozen in the compute dtype, adapters in float32), saving and reading adapter folders in
peft's layout (``adapter_config.json`` + ``adapter_model.safetensors``, keys ``base_model.model.<module>.
lora_A.weight``), loading one onto a model for sampling (``load_lora``, with a scale) and merging adapters into
the base weights (``merge_lora``) so sampling costs nothing extra.

An adapter folder also records the transformer config it was trained on (safetensors metadata
``flashi2v.transformer_config``): a LoRA is refused, with the differing key named, by a model of another
size, paradigm or projection kernel.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from .config import LORA_TARGETS, TransformerConfig
from .errors import FlashI2VError
from .jsonfile import read_json_object

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # peft's PeftModel.save_pretrained key prefix
CONFIG_METADATA = "flashi2v.transformer_config"
DEFAULT_TARGETS = LORA_TARGETS  # attention and FFN projections of every block, named relative to a block
# FlashI2V's own modules: new in the fine-tune's base model (zero-output init when started from Wan2.1-T2V),
# so a LoRA run may train them in full (saved as peft's modules_to_save) or keep them frozen.
FLASHI2V_MODULES = ("learnable_proj", "fourier_embedding")


def _peft():
    try:
        import peft
    except ImportError:
        raise FlashI2VError("LoRA needs the peft package: pip install 'flashi2v[lora]'") from None
    return peft


def target_names(transformer: nn.Module, targets) -> list[str]:
    """Full names of the Linear layers inside the blocks that ``targets`` (block-relative names such as
    ``self_attn.q``) select; every target must select one in each block."""
    targets = tuple(targets)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise FlashI2VError(f"lora.targets {list(targets)!r}: give block-relative layer names, e.g. "
                            f"{list(DEFAULT_TARGETS[:2])}")
    linears = {name for name, m in transformer.named_modules() if isinstance(m, nn.Linear)}
    names = []
    for i in range(len(transformer.blocks)):
        for target in targets:
            name = f"blocks.{i}.{target}"
            if name not in linears:
                choices = sorted({n.split(".", 2)[2] for n in linears if n.startswith("blocks.0.")})
                raise FlashI2VError(f"lora.targets: {target!r} is not a linear layer of a block: use some of {choices}")
            names.append(name)
    return names


def lora_config(transformer: nn.Module, rank: int, alpha: float, targets=DEFAULT_TARGETS,
                train_flashi2v_modules: bool = True):
    """peft's LoraConfig for this model. Targets are full module names (peft matches them exactly)."""
    peft = _peft()
    if not (isinstance(rank, int) and rank >= 1):
        raise FlashI2VError(f"lora.rank {rank!r} must be a positive integer (e.g. 32)")
    if not alpha > 0:
        raise FlashI2VError(f"lora.alpha {alpha!r} must be > 0 (e.g. the rank)")
    return peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_names(transformer, targets),
                           lora_dropout=0.0, bias="none", init_lora_weights=True,
                           modules_to_save=list(FLASHI2V_MODULES) if train_flashi2v_modules else None)


def has_lora(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in module.modules())


def inject_lora(transformer: nn.Module, config) -> None:
    """peft's adapters (of ``config``, a LoraConfig) on its target layers, in place (module names gain
    ``.base_layer`` / ``.lora_A.default``).
    modules_to_save stay out of the injected config: peft would wrap those modules in copies, while the
    model calls them directly; their weights are trained in place instead."""
    import copy

    peft = _peft()
    if has_lora(transformer):
        raise FlashI2VError("this transformer already carries a LoRA: merge it first (merge_lora) or load the "
                            "base model again")
    inject = copy.copy(config)
    inject.modules_to_save = None
    peft.inject_adapter_in_model(inject, transformer)


def apply_lora(transformer: nn.Module, rank: int, alpha: float, targets=DEFAULT_TARGETS,
               train_flashi2v_modules: bool = True, base_dtype: torch.dtype = torch.bfloat16):
    """Make ``transformer`` a LoRA fine-tune, in place; returns the peft LoraConfig.

    Trainable: the adapters (float32) and, with ``train_flashi2v_modules``, learnable_proj and
    fourier_embedding in full (float32). Everything else is frozen and cast to ``base_dtype`` (the compute
    dtype: bf16 halves the frozen weights' memory), except phi, which stays float32 (docs/method.md 4).
    Call before activation checkpointing, compile and FSDP, as the full model's setup does.
    """
    config = lora_config(transformer, rank, alpha, targets, train_flashi2v_modules)
    transformer.requires_grad_(False)
    inject_lora(transformer, config)
    trainable = FLASHI2V_MODULES if train_flashi2v_modules else ()
    for name, p in transformer.named_parameters():
        adapter = ".lora_A." in name or ".lora_B." in name
        full = name.split(".")[0] in trainable
        p.requires_grad_(adapter or full)
        keep_fp32 = adapter or full or name.startswith("learnable_proj.")
        p.data = p.data.float() if keep_fp32 else p.data.to(base_dtype)
    transformer.lora_config = config
    return config


# ---- adapter files ---------------------------------------------------------------------------------------

def adapter_state_dict(transformer: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapters (and fully trained FlashI2V modules) in peft's saved layout, float32 CPU tensors.
    ``state``: the transformer's full state dict to take them from (e.g. EMA weights), else its own."""
    peft = _peft()
    config = transformer.lora_config
    state = {k: v for k, v in (state if state is not None else transformer.state_dict()).items()}
    out = peft.get_peft_model_state_dict(transformer, state_dict=state)  # strips the adapter name
    for name in config.modules_to_save or ():
        out.update({k: v for k, v in state.items() if k.startswith(name + ".")})
    return {PEFT_PREFIX + k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def save_lora(transformer: nn.Module, folder: str | os.PathLike, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``folder/adapter_config.json`` (peft's LoraConfig) and ``adapter_model.safetensors`` (peft's key
    layout; the transformer config in its metadata). Atomic: the folder appears complete or not at all."""
    from safetensors.torch import save_file

    from .outputs import staged_folder

    config = transformer.lora_config
    tensors = adapter_state_dict(transformer, state)
    folder = Path(folder)
    with staged_folder(folder) as tmp:
        config.save_pretrained(str(tmp))
        metadata = {"format": "pt", CONFIG_METADATA: json.dumps(transformer.config.to_dict())}
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata=metadata)
    return folder


def _adapter_files(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    folder = path.parent if path.name == ADAPTER_WEIGHTS else path
    if not folder.is_dir():
        raise FlashI2VError(f"LoRA '{path}' does not exist: give a folder with {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} "
                            "(written by `flashi2v train` with lora.rank set)")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise FlashI2VError(f"LoRA folder '{folder}' has no {name}: is it a peft LoRA folder?")
    return folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS


def read_lora(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], TransformerConfig | None]:
    """(adapter config, tensors, the transformer config it was trained on or None) of an adapter folder,
    checked: a LoRA adapter, a positive rank, tensors of that rank. One-line errors, no code executed."""
    from .safetensors_files import load_safetensors, safetensors_metadata

    config_path, weights_path = _adapter_files(path)
    config = read_json_object(config_path)
    if config.get("peft_type") != "LORA":
        raise FlashI2VError(f"'{config_path}' is a {config.get('peft_type')!r} adapter, not a LoRA: give a LoRA folder")
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise FlashI2VError(f"'{config_path}': key 'r' must be a positive integer, got {rank!r}: fix or re-save it")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise FlashI2VError(f"'{config_path}': key 'lora_alpha' must be a positive number, got {alpha!r}")
    if config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise FlashI2VError(f"'{config_path}' uses DoRA or per-layer ranks, which flashi2v does not load")
    metadata = safetensors_metadata(weights_path)
    tensors = load_safetensors(weights_path)
    bad = [k for k in tensors if not k.startswith(PEFT_PREFIX)]
    if bad or not tensors:
        raise FlashI2VError(f"'{weights_path}' is not in peft's layout (key {bad[0] if bad else 'none'!r}, expected "
                            f"'{PEFT_PREFIX}...'): save it with peft or flashi2v")
    for key, t in tensors.items():
        r = t.shape[0] if ".lora_A." in key else t.shape[1] if ".lora_B." in key else rank
        if t.ndim != 2 and (".lora_A." in key or ".lora_B." in key) or r != rank:
            raise FlashI2VError(f"'{weights_path}': {key} has rank {r} but {ADAPTER_CONFIG} says r={rank}: the two "
                                "files come from different adapters; save them together again")
    base = None
    if CONFIG_METADATA in metadata:
        try:
            base = TransformerConfig.from_dict(json.loads(metadata[CONFIG_METADATA]), source=f"'{weights_path}' metadata")
        except json.JSONDecodeError:
            raise FlashI2VError(f"'{weights_path}': its {CONFIG_METADATA} metadata is not JSON; re-save it") from None
    return config, tensors, base


def check_base(config: TransformerConfig, trained_on: TransformerConfig | None, where: str) -> None:
    """A LoRA fits only the model it was trained on: same size, paradigm and projection kernel."""
    if trained_on is None:
        return  # a peft folder from elsewhere: the tensor shapes are checked when loading
    mine, theirs = config.to_dict(), trained_on.to_dict()
    differ = [k for k in mine if mine[k] != theirs[k]]
    if differ:
        detail = "; ".join(f"{k}={theirs[k]!r} there, {mine[k]!r} here" for k in differ[:3])
        raise FlashI2VError(f"LoRA '{where}' was trained for another model ({detail}): load it onto the model it "
                            "was trained on")


def load_lora(transformer: nn.Module, path: str | os.PathLike, scale: float = 1.0, adapter_dtype: torch.dtype | None = None):
    """Put the adapter folder ``path`` onto ``transformer`` (unmerged; ``merge_lora`` folds it in), its update
    multiplied by ``scale`` (0: the base model, 1: as trained). Adapters go to the model's device and dtype
    (``adapter_dtype``: another one, e.g. float32 to merge into bf16 weights with one rounding). Returns the
    peft LoraConfig."""
    peft = _peft()
    if not (isinstance(scale, (int, float)) and -10 <= scale <= 10):
        raise FlashI2VError(f"LoRA scale {scale!r}: use a number such as 1.0 (0 turns the LoRA off)")
    raw, tensors, trained_on = read_lora(path)
    check_base(transformer.config, trained_on, str(path))
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in tensors.items()}
    full = [k for k in state if ".lora_A." not in k and ".lora_B." not in k]
    allowed = set(FLASHI2V_MODULES)
    if any(k.split(".")[0] not in allowed for k in full):
        bad = next(k for k in full if k.split(".")[0] not in allowed)
        raise FlashI2VError(f"LoRA '{path}' carries the full weight {bad!r}, which flashi2v does not load from an "
                            f"adapter (only {', '.join(FLASHI2V_MODULES)})")
    own = transformer.state_dict()
    for k in full:
        if k not in own or own[k].shape != state[k].shape:
            raise FlashI2VError(f"LoRA '{path}' was trained for another model ({k} is "
                                f"{list(state[k].shape)} there, {list(own[k].shape) if k in own else 'absent'} here)")
    modules = sorted({k.split(".lora_")[0] for k in state if k not in full})
    names = {n for n, m in transformer.named_modules() if isinstance(m, nn.Linear)}
    missing = [m for m in modules if m not in names]
    if missing:
        raise FlashI2VError(f"LoRA '{path}' adapts {missing[0]!r}, which this model does not have: it was trained "
                            "for another model")
    config = peft.LoraConfig(r=raw["r"], lora_alpha=raw["lora_alpha"], target_modules=modules, lora_dropout=0.0,
                             bias="none", modules_to_save=raw.get("modules_to_save"))
    dtype, device = _dtype_device(transformer)
    inject_lora(transformer, config)
    adapters = {}
    for k in state:
        if k not in full:
            module, _, rest = k.partition(".lora_")
            adapters[f"{module}.lora_{rest.replace('.weight', '.default.weight')}"] = state[k]
    mine = transformer.state_dict()
    for k, v in adapters.items():
        if k not in mine:
            raise FlashI2VError(f"LoRA '{path}': {k} does not fit this model: it was trained for another model")
        if mine[k].shape != v.shape:
            raise FlashI2VError(f"LoRA '{path}' was trained for another model ({k} is {list(v.shape)} there, "
                                f"{list(mine[k].shape)} here)")
    with torch.no_grad():
        for k, v in {**adapters, **{k: state[k] for k in full}}.items():
            target = transformer.get_parameter(k)
            target.copy_(v.to(target.dtype))
    transformer.to(device=device)
    for name, p in transformer.named_parameters():
        if ".lora_" in name:
            p.data = p.data.to(adapter_dtype or dtype)
    transformer.requires_grad_(False)
    set_lora_scale(transformer, scale)
    transformer.lora_config = config
    return config


def _dtype_device(transformer: nn.Module) -> tuple[torch.dtype, torch.device]:
    w = transformer.blocks[0].self_attn.q
    w = getattr(w, "base_layer", w).weight
    return w.dtype, w.device


def set_lora_scale(transformer: nn.Module, scale: float) -> None:
    """Scale every adapter's update by ``scale`` (on top of alpha / r)."""
    from peft.tuners.lora import LoraLayer

    for m in transformer.modules():
        if isinstance(m, LoraLayer):
            for adapter in m.lora_A:
                m.set_scale(adapter, scale)


def merge_lora(transformer: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer (peft's merge) and put the plain layer back, in place: the model
    is an ordinary FlashI2VTransformer again (same keys, same speed as the base). Returns it."""
    from peft.tuners.lora import LoraLayer

    found = [(name, m) for name, m in transformer.named_modules() if isinstance(m, LoraLayer)]
    if not found:
        raise FlashI2VError("this transformer carries no LoRA to merge: load one first (load_lora)")
    for name, module in found:
        module.merge(safe_merge=True)
        parent, _, child = name.rpartition(".")
        setattr(transformer.get_submodule(parent) if parent else transformer, child, module.get_base_layer())
    transformer.__dict__.pop("lora_config", None)
    return transformer
