"""Moving weights between the GPU and (pinned) CPU memory, applied from outside: ``stream_from_cpu`` copies
each layer in just before it runs (frozen encoders), ``offload_to_cpu`` / ``load_to_device`` move a whole
module (e.g. the transformer while the VAE decodes), ``apply_block_swap`` keeps a few transformer blocks on
the GPU at a time while denoising."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager

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


def _extent(t: torch.Tensor) -> int:
    """Elements from a tensor's storage offset to one past its last element."""
    return 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride())) if t.numel() else 0


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


# -- block swapping (denoising with a few transformer blocks on the GPU at a time) -------------------------


class BlockSwap:
    """Transformer blocks whose weights live in pinned CPU memory and visit the GPU one at a time.

    Each swapped block has one flat pinned CPU buffer (its home). ``slots`` GPU buffers, each the size of
    the largest block, take turns: while block j runs from one slot, block j+1 is already being copied into
    another on a side stream, so the copies overlap the compute. A block's parameters point into
    its slot only while it runs (``resident``) and back at its home otherwise. ``FlashI2VTransformer.call_block``
    calls ``resident`` around each block, outside any compiled region, so compiled blocks keep one graph.

    Same function as the plain model: the weights are copied, never converted. On a CPU the copies are plain
    synchronous copies (the tests check the bookkeeping there).
    """

    def __init__(self, blocks: list[nn.Module], device: torch.device, slots: int = 2):
        if slots < 2:
            raise ValueError("block swapping needs at least 2 slots: one runs while the next is copied in")
        self.blocks = list(blocks)
        self.device = device
        self.cuda = device.type == "cuda"
        self.index = {id(b): j for j, b in enumerate(self.blocks)}
        self.tensors, self.homes = [], []  # per swapped block: its parameters and buffers, its home buffer
        for block in self.blocks:
            # Per storage, only the bytes this block's tensors span: after ``load_to_device`` the whole model
            # shares one storage, which must not be copied once per block.
            spans, total = [], 0
            for storage, tensors in _storage_groups(block):
                start = min(t.storage_offset() * t.element_size() for t in tensors)
                end = max((t.storage_offset() + _extent(t)) * t.element_size() for t in tensors)
                spans.append((storage, tensors, start, end, total))
                total += -(-(end - start) // _ALIGN) * _ALIGN
            home = torch.empty(total, dtype=torch.uint8, pin_memory=self.cuda)
            for storage, tensors, start, end, offset in spans:
                home[offset:offset + end - start].copy_(_as_bytes(storage)[start:end])
                _rebind(tensors, home.untyped_storage(), offset - start)
            self.tensors.append([t for _, tensors, *_ in spans for t in tensors])
            self.homes.append(home)
        size = max((h.numel() for h in self.homes), default=0)
        n_slots = min(slots, len(self.blocks))
        self.slots = [torch.empty(size, dtype=torch.uint8, device=device) for _ in range(n_slots)]
        self.in_slot = [None] * n_slots  # which block each slot holds (or is receiving)
        self.next_slot = 0  # where the next copy goes
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.ready = [torch.cuda.Event() if self.cuda else None for _ in range(n_slots)]  # copy into slot done
        self.free = [torch.cuda.Event() if self.cuda else None for _ in range(n_slots)]  # slot's last user done
        self.copies = 0  # blocks copied in so far (tests; docs)

    @property
    def nbytes(self) -> int:
        """GPU bytes the slots take."""
        return sum(s.numel() for s in self.slots)

    def _bind(self, j: int, storage: torch.UntypedStorage) -> None:
        """Block j's tensors onto ``storage``, which has its home's layout (their offsets are already home offsets)."""
        _rebind(self.tensors[j], storage)

    def _fetch(self, j: int, avoid: int | None = None) -> int:
        """Make sure block j is in (or on its way into) a slot; returns the slot. A new copy goes to the slots in
        turn, never into ``avoid`` (the slot of the block that is running)."""
        if j in self.in_slot:
            return self.in_slot.index(j)
        s = self.next_slot if self.next_slot != avoid else (self.next_slot + 1) % len(self.slots)
        self.next_slot = (s + 1) % len(self.slots)
        n = self.homes[j].numel()
        if self.cuda:
            self.stream.wait_event(self.free[s])  # the slot's previous block has finished with it
            with torch.cuda.stream(self.stream):
                self.slots[s][:n].copy_(self.homes[j], non_blocking=True)
                self.ready[s].record(self.stream)
        else:
            self.slots[s][:n].copy_(self.homes[j])
        self.in_slot[s] = j
        self.copies += 1
        return s

    @contextmanager
    def resident(self, block: nn.Module):
        """Block's weights on the device for the duration (a block not swapped: nothing happens)."""
        j = self.index.get(id(block))
        if j is None:
            yield
            return
        s = self._fetch(j)
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_event(self.ready[s])
        self._bind(j, self.slots[s].untyped_storage())
        self._fetch((j + 1) % len(self.blocks), avoid=s)  # the next one, while this one computes
        try:
            yield
        finally:
            if self.cuda:
                self.free[s].record(torch.cuda.current_stream(self.device))
            self._bind(j, self.homes[j].untyped_storage())

    def restore(self) -> None:
        """Every swapped block's weights back on the device as ordinary tensors (one allocation per block)."""
        if self.cuda:  # a prefetch may still be writing into a slot, which is freed with this object
            self.stream.synchronize()
            torch.cuda.current_stream(self.device).synchronize()
        for j, home in enumerate(self.homes):
            copy = torch.empty_like(home, device=self.device)
            copy.copy_(home)
            self._bind(j, copy.untyped_storage())


def apply_block_swap(model: nn.Module, blocks_on_device: int = 0, slots: int = 2) -> BlockSwap | None:
    """Keep the first ``blocks_on_device`` transformer blocks on the model's device and swap the rest in from
    pinned CPU memory, one at a time, while denoising (``BlockSwap``). GPU memory for the blocks drops from
    all of them to ``blocks_on_device + slots`` blocks; the time is that of the plain model as long as a block's
    copy (1.3B: 88 MiB) is faster than its compute. Everything else of the model stays where it is. Returns
    the ``BlockSwap`` (also ``model.block_swap``); None when no block is left to swap. Not together with CUDA
    graphs (``apply_cuda_graphs``), which read the weights at fixed addresses.
    """
    _check_no_cuda_graphs(model)
    remove_block_swap(model)
    device = next(model.blocks[0].parameters()).device
    swapped = list(model.blocks)[max(0, blocks_on_device):]
    if not swapped:
        return None
    model.block_swap = BlockSwap(swapped, device, slots)
    swapped_ids = {id(t) for block in swapped for t in (*block.parameters(), *block.buffers())}
    _compact([t for t in (*model.parameters(), *model.buffers()) if id(t) not in swapped_ids])
    return model.block_swap


def _compact(tensors: list[torch.Tensor]) -> None:
    """Give tensors that share a larger storage one of their own, of just the bytes they span (views kept).

    After ``load_to_device`` the whole model is one storage; once the swapped blocks point at their pinned homes,
    the blocks that stay (and the embeddings and head) would still hold all of it on the GPU: measured on the H100,
    3.3 GiB held by a 1.3B whose every block was swapped out."""
    groups: dict[int, tuple[torch.UntypedStorage, list[torch.Tensor]]] = {}
    for t in {id(t): t for t in tensors}.values():
        st = t.untyped_storage()
        groups.setdefault(st.data_ptr(), (st, []))[1].append(t)
    for storage, group in groups.values():
        # overlapping byte ranges (views of one weight, e.g. fused QKV) stay together; the gaps (swapped blocks) go
        spans = sorted(((t.storage_offset() * t.element_size(), (t.storage_offset() + _extent(t)) * t.element_size(), t)
                        for t in group), key=lambda span: span[:2])
        runs: list[list] = []
        for start, end, t in spans:
            if runs and start < runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], end)
                runs[-1][2].append(t)
            else:
                runs.append([start, end, [t]])
        if len(runs) == 1 and runs[0][1] - runs[0][0] >= storage.nbytes():
            continue  # the storage is theirs alone
        for start, end, members in runs:
            own = torch.empty(end - start, dtype=torch.uint8, device=storage.device)
            own.copy_(_as_bytes(storage)[start:end])
            _rebind(members, own.untyped_storage(), -start)


def remove_block_swap(model: nn.Module) -> nn.Module:
    """Undo ``apply_block_swap``: every block's weights back on the device."""
    swap = getattr(model, "block_swap", None)
    if swap is not None:
        swap.restore()
        model.block_swap = None
    return model
