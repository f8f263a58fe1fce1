"""Shared helpers of the benchmarks: timing, FLOP counts, the matmul ceiling, random 1.3B models, tables."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # wan_keys.to_diffusers: the tested key mapping
sys.path.insert(0, str(ROOT / "src"))


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device) -> int:
    """Synchronise, return cached blocks and restart the peak counter, so the next peak belongs to what runs
    next; returns the bytes allocated now (0 off CUDA)."""
    if torch.device(device).type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def bench(fn, device, warmup: int = 3, reps: int = 10) -> list[float]:
    """Milliseconds of each of ``reps`` calls after ``warmup`` calls (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    cuda = torch.device(device).type == "cuda"
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    return times


def graphed(fn, times: int):
    """A CUDA graph of ``times`` calls of ``fn`` (warmed up first): its replay runs them without host overhead."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(times):
            fn()
    return graph.replay


def events_ms(run, samples: int, per: int = 1) -> float:
    """Median over ``samples`` calls of ``run`` of its CUDA-event time in ms, divided by ``per`` (the calls of
    the timed kernel that one ``run`` makes)."""
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / per)
    return median(times)


def median(xs) -> float:
    return float(statistics.median(xs))


def matmul_ceiling(device, n: int = 8192, dtype=torch.bfloat16, reps: int = 20) -> float:
    """Measured bf16 n^3 matmul rate in TFLOP/s on random data (median of ``reps``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = median(bench(lambda: a @ b, device, warmup=5, reps=reps))
    return 2 * n**3 / (ms * 1e-3) / 1e12


def dit_flops(cfg, batch: int, grid: tuple[int, int, int], text_len: int | None = None, fourier: bool = True) -> float:
    """Multiply-add FLOPs (2 per MAC) of one FlashI2V / Wan DiT forward: matmuls, attention, embeddings."""
    d, ffn, layers = cfg.dim, cfg.ffn_dim, cfg.num_layers
    lc = text_len or cfg.text_len
    L = math.prod(grid)
    patch = math.prod(cfg.patch_size) * cfg.in_dim
    per_block = (
        2 * L * d * d * 4            # self-attention q, k, v, o
        + 4 * L * L * d              # self-attention QK^T and PV
        + 2 * L * d * d * 2          # cross-attention q, o
        + 2 * lc * d * d * 2         # cross-attention k, v (text tokens)
        + 4 * L * lc * d             # cross-attention QK^T and PV
        + 2 * L * d * ffn * 2        # FFN
    )
    extra = 2 * L * patch * d + 2 * L * d * patch * cfg.out_dim // cfg.in_dim  # patch embedding + head
    extra += 2 * lc * (cfg.text_dim * d + d * d)                              # text embedding
    if fourier:
        extra += 2 * L * patch * d + 2 * L * d * d                            # fourier_embedding
    return batch * (layers * per_block + extra)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Wan's init, then random values for the zero-initialised parts (head, FlashI2V branches), so that
    no output is trivially zero and every weight matters for the comparisons."""
    torch.manual_seed(seed)
    model.reset_parameters()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("head.head.weight", "fourier_embedding.1.weight", "learnable_proj.proj.2.weight"):
                fan_in = p[0].numel()
                p.normal_(0.0, 1.0 / math.sqrt(fan_in))
    return model


def diffusers_wan(cfg, device, dtype):
    """diffusers' WanTransformer3DModel with the same configuration (weights still random)."""
    from diffusers import WanTransformer3DModel

    with torch.device(device):
        ref = WanTransformer3DModel(
            patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
            in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
            ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=cfg.cross_attn_norm, eps=cfg.eps,
        )
    return ref.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_into_diffusers(ref, state: dict) -> None:
    from wan_keys import to_diffusers

    ref.load_state_dict(to_diffusers(state), strict=True)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def table(rows: list[dict], columns: list[str]) -> str:
    """Markdown table of ``rows`` (dicts) restricted to ``columns``."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def out_dir(arg: str | None) -> Path:
    path = Path(arg or os.environ.get("OUT") or ROOT / "outputs" / "bench")  # outputs/ is git-ignored
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def device_info(device) -> dict:
    info = {"torch": torch.__version__}
    if torch.device(device).type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version())
    else:
        info.update(cpu_threads=torch.get_num_threads())
    return info
