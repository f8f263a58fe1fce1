"""Moving weights between the GPU and (pinned) CPU memory, applied from outside: ``stream_from_cpu`` copies
each layer in just before it runs (frozen encoders), ``offload_to_cpu`` / ``load_to_device`` move a whole
module (e.g. the transformer while the VAE decodes)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

def _move(obj, device: torch.device):
    """Tensors anywhere in tuples, lists and dicts (a transformers ModelOutput too) -> ``device``."""
    if isinstance(obj, torch.Tensor):
        # non_blocking only towards the GPU: a non-blocking copy to the CPU could be read unfinished
        return obj.to(device, non_blocking=device.type != "cpu")
    if isinstance(obj, Mapping):
        if hasattr(obj, "__setitem__"):
            for key in list(obj.keys()):
                obj[key] = _move(obj[key], device)
            return obj
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_move(v, device) for v in obj)
    return obj


CPU_EMBEDDING_BYTES = 256 * 2**20


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def stream_from_cpu(module: nn.Module, device: torch.device | str) -> nn.Module:
    """Keep ``module``'s weights in (pinned) CPU memory and copy each layer's weights to ``device`` only
    for the duration of that layer's forward.

    The module then looks like a CPU module to its caller: inputs are moved to ``device`` on the way
    in and outputs back to the CPU on the way out. GPU memory holds one layer's weights at a time
    (for umT5-XXL: one 0.4 GB block instead of 11 GB), and the time is about one pass of the weights over
    PCIe. Embedding tables of ``CPU_EMBEDDING_BYTES`` (256 MiB) or more are not copied at all: the
    lookup runs on the CPU and only its output travels. Meant for frozen encoders used once per generation.
    """
    device = torch.device(device)
    module.to("cpu")
    pin = device.type == "cuda" and torch.cuda.is_available()
    pinned: dict[int, torch.Tensor] = {}

    def cpu_copy(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in pinned:
            pinned[id(t)] = t.data.pin_memory() if pin else t.data
        return pinned[id(t)]

    for sub in module.modules():
        tensors = [t for _, t in sub.named_parameters(recurse=False)] + [t for _, t in sub.named_buffers(recurse=False)]
        if not tensors:
            continue
        if isinstance(sub, nn.Embedding) and device.type != "cpu" and _nbytes(sub.weight) >= CPU_EMBEDDING_BYTES:
            # a large table (umT5-XXL's: 2.1 GB, a fifth of its weights) is looked up where it lies, unpinned:
            # only the looked-up rows travel to the GPU (same values, less PCIe traffic and GPU memory)
            sub.register_forward_pre_hook(lambda _mod, args: _move(args, torch.device("cpu")))
            sub.register_forward_hook(lambda _mod, _args, out: _move(out, module._flashi2v_streamed_to))
            continue
        homes = [cpu_copy(t) for t in tensors]
        for t, home in zip(tensors, homes):
            t.data = home

        def load(_mod, _args, tensors=tensors, homes=homes):
            target = module._flashi2v_streamed_to
            for t, home in zip(tensors, homes):
                t.data = home.to(target, non_blocking=True)

        def unload(_mod, _args, _out, tensors=tensors, homes=homes):
            for t, home in zip(tensors, homes):
                t.data = home

        sub.register_forward_pre_hook(load)
        sub.register_forward_hook(unload)

    def inputs_in(_mod, args, kwargs):
        target = module._flashi2v_streamed_to
        return _move(args, target), _move(kwargs, target)

    def outputs_out(_mod, _args, out):
        return _move(out, torch.device("cpu"))

    module._flashi2v_streamed_to = device  # where the layers run; may be changed later
    module.register_forward_pre_hook(inputs_in, with_kwargs=True, prepend=True)
    module.register_forward_hook(outputs_out)
    return module


# -- whole-module offload (e.g. the transformer while the VAE decodes) ------------------------------


def _storage_groups(module: nn.Module) -> list[tuple[torch.UntypedStorage, list[torch.Tensor]]]:
    """The module's parameters and buffers grouped by the storage they live in (fused QKV: the q/k/v
    parameters and the fused weight share one), in a fixed order."""
    seen, groups = set(), {}
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        st = t.untyped_storage()
        groups.setdefault((str(st.device), st.data_ptr()), (st, []))[1].append(t)
    return list(groups.values())


def _rebind(tensors: list[torch.Tensor], storage: torch.UntypedStorage, byte_offset: int = 0) -> None:
    """Point each tensor's ``.data`` at ``storage``, ``byte_offset`` further than its current storage offset,
    with its shape and strides (views of one storage stay views of one storage)."""
    for t in tensors:
        view = torch.empty(0, dtype=t.dtype, device=storage.device)
        t.data = view.set_(storage, t.storage_offset() + byte_offset // t.element_size(), t.size(), t.stride())


def _as_bytes(storage: torch.UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


def _check_no_cuda_graphs(module: nn.Module) -> None:
    if getattr(module, "_cuda_graphs", None) is not None:
        raise RuntimeError("this module replays CUDA graphs (apply_cuda_graphs), which read its weights at fixed "
                           "addresses: moving the weights would make the graphs read freed memory")


_ALIGN = 256  # bytes: every storage starts aligned in the flat buffers (any dtype's element size divides it)


def offload_to_cpu(module: nn.Module, non_blocking: bool = False, force: bool = False) -> nn.Module:
    """Move ``module``'s parameters and buffers into one flat pinned CPU buffer, freeing their GPU memory.

    The Parameter objects stay the same (only their ``.data`` changes) and views stay views of one storage
    (fused QKV). The pinned buffer is kept on the module and reused by the next offload: pinning is slow,
    one copy over PCIe is not (docs/performance.md, "Use it").
    ``load_to_device`` brings the weights back as one GPU allocation with the same layout, so the next
    offload is again one copy. ``non_blocking``: the copies are queued on the current CUDA stream; their
    GPU memory is reusable by later work on that stream at once, but read the weights on the CPU only
    after synchronising. ``force`` copies tensors that already are on the CPU too (tests). Not for
    modules under ``apply_cuda_graphs``.
    """
    _check_no_cuda_graphs(module)
    groups = [(st, ts) for st, ts in _storage_groups(module) if st.device.type != "cpu" or force]
    if not groups:
        return module
    offsets, total = [], 0
    for storage, _ in groups:
        offsets.append(total)
        total += -(-storage.nbytes() // _ALIGN) * _ALIGN
    flat = module.__dict__.get("_flashi2v_cpu_flat")
    if (flat is None or flat.numel() != total
            or any(st.data_ptr() == flat.untyped_storage().data_ptr() for st, _ in groups)):
        flat = torch.empty(total, dtype=torch.uint8, pin_memory=torch.cuda.is_available())
        module.__dict__["_flashi2v_cpu_flat"] = flat
    for (storage, tensors), offset in zip(groups, offsets):
        flat[offset:offset + storage.nbytes()].copy_(_as_bytes(storage), non_blocking=non_blocking)
        _rebind(tensors, flat.untyped_storage(), offset)
    return module


def load_to_device(module: nn.Module, device: torch.device | str, non_blocking: bool = False,
                   force: bool = False) -> nn.Module:
    """Inverse of ``offload_to_cpu``: copy the weights to ``device``, one allocation and one copy per
    storage (after an offload: one for the whole module), keeping the Parameter objects, views and the
    pinned CPU buffer (for the next offload). ``non_blocking``: queued on the current stream, which is
    all later GPU work needs. A no-op for tensors already on ``device`` (unless ``force``)."""
    _check_no_cuda_graphs(module)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    for storage, tensors in _storage_groups(module):
        if storage.device == device and not force:
            continue
        copy = torch.empty(storage.nbytes(), dtype=torch.uint8, device=device)
        copy.copy_(_as_bytes(storage), non_blocking=non_blocking)
        _rebind(tensors, copy.untyped_storage())
    return module
