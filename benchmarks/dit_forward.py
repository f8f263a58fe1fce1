"""DiT forward: FlashI2V's transformer vs diffusers' WanTransformer3DModel, one process, one GPU.

Same 1.3B configuration, same random weights (mapped with tests/wan_keys.py), same inputs, same dtype.
Variants:
  diffusers-default   WanTransformer3DModel as shipped (torch's default SDPA choice, eager)
  diffusers-best      + set_attention_backend("_native_cudnn") + compile_repeated_blocks(fullgraph=True)
  ours-plain          FlashI2VTransformer as shipped (eager, torch's default SDPA choice)
  ours+...            one speed-up added at a time (LADDER below), up to
  ours-fast           flashi2v.fast_path.recipe.apply_fast_path (cuDNN attention, GELU in the matmul epilogue,
                      Triton norm kernels, fused QKV, compiled blocks)
  ours-fast+fa4       apply_fast_path(attention="fa4"): FlashAttention-4 kernels (needs flash-attn-4)
  ours-fast+fa4+plain-norms  the same without the Triton norm kernels (fuse_norms)
  ours-fast+fa4+no-qkv       the same with q, k, v as three matmuls (fuse_qkv off)
  ours-fast+fa4+no-defer     the same with each block adding its own FFN update (defer_residuals off)
  ours-fast+fa4+conv-embed   the same with the patch embeddings run as convs (a transposed copy after them)
  ours-fast+fa4+no-wave-split  the same with FA4 self-attention as one call (set_fa4_wave_split(False))
  ours-fast+fa4+cdtune / +multikernel / +autotune / +autotune-tma   Inductor options (CDTUNE ... below)
  ours-fast+fa4+graphs + apply_cuda_graphs (opt-in: keeps activation memory reserved)
  ours-fast+fa4+quack-up      the FFN up-projection (bias + GELU epilogue) by quack's Hopper GEMM (quack_gemm.py;
                              measured slower in the forward, not in the library)
  ours-fast+fa4+quack-others  every other block matmul (q/k/v/o, FFN down) by quack's Hopper GEMM
  ours-fast+fa4+quack         both
  ours-fast+fa3       apply_fast_path(attention="fa3"): FlashAttention-3 kernels (needs flash_attn_3, build_fa3.sh)
  ours-fast+fa3+graphs + apply_cuda_graphs
Ours is timed on its real FlashI2V input (the Fourier features branch included, ~0.1 % more FLOPs).

Variants are timed in rounds (``--rounds``, the order reversed every other round), so that a GPU clock
that drifts over the run does not favour the variants timed last. Reports median ms per forward, MFU against a bf16 matmul ceiling measured in the same run, peak
memory (weights + the forward's peak extra), ratios ours/diffusers, and the relative errors of every
variant against a float32 run of ours-plain. The table is printed last.

    python benchmarks/dit_forward.py                     # GPU: 49 and 81 frames at 480x832
    python benchmarks/dit_forward.py --tiny              # CPU smoke test of the whole script
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from common import (bench, reset_memory, device_info, diffusers_wan, dit_flops, load_into_diffusers, matmul_ceiling, median,
                    out_dir, param_bytes, randomize_, rel_err, save_json, table)

from flashi2v import FlashI2VTransformer, preset
from flashi2v.model.attention import fa3_available, fa4_available, set_fa4_wave_split
from flashi2v.fast_path.compile import apply_cuda_graphs
from flashi2v.fast_path.fusion import fuse_ffn_gelu
from flashi2v.fast_path.recipe import apply_fast_path
from flashi2v.model.attention import set_attention_backend
from quack_gemm import use_quack_gemm


def make_inputs(cfg, frames: int, height: int, width: int, device, dtype, seed: int = 0, batch: int = 1):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, cfg.in_dim, (frames - 1) // 4 + 1, height // 8, width // 8)
    x = torch.randn(shape, generator=g)
    t = torch.full((batch,), 700.0)
    context = torch.randn(batch, cfg.text_len, cfg.text_dim, generator=g)
    s_high = torch.randn(shape, generator=g).abs()
    return [v.to(device=device, dtype=dtype if v.is_floating_point() and v.ndim > 1 else None) for v in (x, t, context, s_high)]


# Inductor options tried on top of the fast path: coordinate-descent tuning of the Triton kernels'
# launch configs; reductions compiled both persistent and looped, the faster picked at run time;
# Triton GEMM templates with fused epilogues autotuned against cuBLAS.
CDTUNE = {"coordinate_descent_tuning": True}
MULTI_KERNEL = {"triton.multi_kernel": 1}
AUTOTUNE = {"max_autotune": True, "coordinate_descent_tuning": True}
AUTOTUNE_TMA = {**AUTOTUNE, "triton.enable_persistent_tma_matmul": True}

def without_deferred_residuals(model):
    """The fast path as in the fifth session: each block adds its own FFN update (one more pass per block)."""
    model.defer_residuals = False
    return model


def with_conv_embedding(model):
    """The patch embeddings run as the convs they are stored as (before the sixth session): their B x dim x L
    output then needs a transposed copy into B x L x dim."""
    def embed_patches(x, fourier_features=None):
        w = model.patch_embedding.weight
        tokens = model.patch_embedding(x.to(w.dtype))
        if fourier_features is not None:
            tokens = tokens + model.fourier_embedding(fourier_features.to(w.dtype))
        return tokens.flatten(2).transpose(1, 2)

    model.embed_patches = embed_patches
    return model


# Variants whose FA4 self-attention runs as one call (flashi2v.model.attention.set_fa4_wave_split, a
# process-wide switch read at each call: set before each variant runs).
WAVE_SPLIT_OFF = {"ours-fast+fa4+no-wave-split"}


# Ours: (name, attention backend, how to build it from a copy of the plain model). Up to "ours-fast" each
# row adds one thing to the one before ("ours-fast" is exactly flashi2v.fast_path.recipe.apply_fast_path); the
# "ours-fast+fa4+..." rows change one thing of "ours-fast+fa4".
LADDER = [
    ("ours-plain", "auto", None),
    ("ours+cudnn", "cudnn", None),
    ("ours+cudnn+gelu", "cudnn", lambda m: fuse_ffn_gelu(m)),
    ("ours-fast", "cudnn", lambda m: apply_fast_path(m, attention="cudnn")),  # = + compiled blocks
    ("ours-fast+fa4+plain-norms", "fa4", lambda m: apply_fast_path(m, attention="fa4", norms=False)),
    ("ours-fast+fa4+no-qkv", "fa4", lambda m: apply_fast_path(m, attention="fa4", qkv=False)),
    ("ours-fast+fa4+no-defer", "fa4", lambda m: without_deferred_residuals(apply_fast_path(m, attention="fa4"))),
    ("ours-fast+fa4+no-wave-split", "fa4", lambda m: apply_fast_path(m, attention="fa4")),  # see WAVE_SPLIT_OFF
    ("ours-fast+fa4+conv-embed", "fa4", lambda m: with_conv_embedding(apply_fast_path(m, attention="fa4"))),
    ("ours-fast+fa4", "fa4", lambda m: apply_fast_path(m, attention="fa4")),
    ("ours-fast+fa4+cdtune", "fa4", lambda m: apply_fast_path(m, attention="fa4", compile_options=CDTUNE)),
    ("ours-fast+fa4+multikernel", "fa4", lambda m: apply_fast_path(m, attention="fa4", compile_options=MULTI_KERNEL)),
    ("ours-fast+fa4+autotune", "fa4", lambda m: apply_fast_path(m, attention="fa4", compile_options=AUTOTUNE)),
    ("ours-fast+fa4+autotune-tma", "fa4", lambda m: apply_fast_path(m, attention="fa4", compile_options=AUTOTUNE_TMA)),
    ("ours-fast+fa4+graphs", "fa4", lambda m: apply_fast_path(m, attention="fa4", cuda_graphs=True)),
    ("ours-fast+fa4+quack-up", "fa4", lambda m: use_quack_gemm(apply_fast_path(m, attention="fa4"), others=False)),
    ("ours-fast+fa4+quack-others", "fa4", lambda m: use_quack_gemm(apply_fast_path(m, attention="fa4"), ffn_up=False)),
    ("ours-fast+fa4+quack", "fa4", lambda m: use_quack_gemm(apply_fast_path(m, attention="fa4"))),
    ("ours-fast+fa3", "fa3", lambda m: apply_fast_path(m, attention="fa3")),
    ("ours-fast+fa3+graphs", "fa3", lambda m: apply_fast_path(m, attention="fa3", cuda_graphs=True)),
    ("ours-fast+fa4+quack-others+graphs", "fa4",
     lambda m: apply_cuda_graphs(use_quack_gemm(apply_fast_path(m, attention="fa4"), ffn_up=False))),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[49, 81])
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--reps", type=int, default=12, help="timed forwards per variant, over all rounds")
    ap.add_argument("--rounds", type=int, default=3,
                    help="timing rounds over all variants (the order reversed every other round); medians over all")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="tiny config on the CPU (tests the script, times nothing real)")
    ap.add_argument("--only", nargs="*", default=None, help="variants to run (default: all)")
    ap.add_argument("--no-fp32", action="store_true", help="skip the float32 reference (errors vs it)")
    ap.add_argument("--profile", action="store_true", help="print the top CUDA kernels of one forward of each of --profile-variants")
    ap.add_argument("--profile-variants", nargs="+", default=["ours-fast", "ours-fast+fa4", "diffusers-best"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    torch._dynamo.config.automatic_dynamic_shapes = False  # new size -> static recompile, for both models
    torch._dynamo.config.cache_size_limit = 64
    out = out_dir(args.out)
    if args.tiny:
        device, dtype, cfg = torch.device("cpu"), torch.bfloat16, preset("tiny", text_len=32, text_dim=32)
        args.frames, args.height, args.width = [5, 9], 32, 48
        args.reps, args.warmup, args.rounds = 2, 1, 2
    else:
        device, dtype, cfg = torch.device("cuda"), torch.bfloat16, preset("flashi2v-1.3b")
    cuda = device.type == "cuda"
    info = device_info(device)
    print("device:", info, flush=True)
    ladder = [v for v in LADDER if args.only is None or v[0] in args.only]
    if not cuda:
        ladder = [v for v in ladder if "graphs" not in v[0]]
    for flash, available, package in (("fa4", fa4_available, "flash-attn-4"),
                                      ("fa3", fa3_available, "flash_attn_3 (benchmarks/build_fa3.sh)")):
        if not (cuda and available()):
            print(f"ours-fast+{flash} skipped: needs a CUDA GPU and {package}", flush=True)
            ladder = [v for v in ladder if v[1] != flash]
    run_diffusers = args.only is None or any(n.startswith("diffusers") for n in args.only)

    ceiling = matmul_ceiling(device, n=512 if args.tiny else 8192)
    print(f"bf16 matmul ceiling: {ceiling:.0f} TFLOP/s", flush=True)

    # -- models: one set of random weights, one copy per variant ----------------------------------
    t0 = time.perf_counter()
    with torch.device(device):
        plain = FlashI2VTransformer.from_config(cfg)
    randomize_(plain)
    plain = plain.to(dtype).eval().requires_grad_(False)
    ours = {}
    for name, _, make in ladder:
        ours[name] = plain if make is None else copy.deepcopy(plain)
    refs = {}
    if run_diffusers:
        for name in ("diffusers-default", "diffusers-best"):
            refs[name] = diffusers_wan(cfg, device, dtype)
            load_into_diffusers(refs[name], plain.state_dict())
    for name, _, make in ladder:
        if make is not None:
            make(ours[name])
    if "diffusers-best" in refs:
        refs["diffusers-best"].set_attention_backend("_native_cudnn" if cuda else "native")
        refs["diffusers-best"].compile_repeated_blocks(fullgraph=True, dynamic=False)
    print(f"models built in {time.perf_counter() - t0:.1f}s; {param_bytes(plain) / 1e9:.2f} GB bf16 each", flush=True)

    backend = {name: be for name, be, _ in ladder}
    variants = [(n, m, True) for n, m in refs.items()] + [(n, m, False) for n, m in ours.items()]
    results, errors, compile_s, outs = [], {}, {}, {}

    with torch.no_grad():
        for f in args.frames:
            x, t, c, s = make_inputs(cfg, f, args.height, args.width, device, dtype)
            grid = (x.shape[2], x.shape[3] // 2, x.shape[4] // 2)
            fl_d, fl_o = dit_flops(cfg, 1, grid, fourier=False), dit_flops(cfg, 1, grid, fourier=True)
            print(f"{f} frames, grid {grid} = {grid[0] * grid[1] * grid[2]} tokens, {fl_o / 1e12:.1f} TFLOP per forward, "
                  f"floor {fl_o / ceiling / 1e9:.0f} ms at the ceiling", flush=True)
            def call(name, model, is_diffusers):
                """The variant's forward, with ours' process-wide attention settings set for it."""
                if not is_diffusers:
                    set_attention_backend(backend[name])
                    set_fa4_wave_split(name not in WAVE_SPLIT_OFF)
                return (lambda m=model: m(x, t, c, return_dict=False)) if is_diffusers else (lambda m=model: m(x, t, c, s))

            per_round = max(1, args.reps // args.rounds)
            timed, times, peaks = [], {}, {}
            for name, model, is_diffusers in variants:  # round 1: first call (compile), memory, outputs, profile
                fn = call(name, model, is_diffusers)
                base = reset_memory(device)
                t0 = time.perf_counter()
                try:
                    fn()  # first call: compiles / captures where the variant does
                    if cuda:
                        torch.cuda.synchronize()
                    compile_s[f"{name}@{f}f"] = time.perf_counter() - t0
                    times[name] = bench(fn, device, warmup=args.warmup, reps=per_round)
                except Exception as err:  # report and go on with the other variants
                    import traceback

                    print("".join(traceback.format_exception(err)[-6:])[-3000:], flush=True)
                    print(f"  {name:20s} FAILED: {type(err).__name__}: {str(err)[:500]}", flush=True)
                    errors[f"{name}@{f}f FAILED"] = 1.0
                    continue
                peaks[name] = (torch.cuda.max_memory_allocated() - base + param_bytes(model)) / 2**30 if cuda else None
                timed.append((name, model, is_diffusers))
                if f == args.frames[0]:
                    if is_diffusers:
                        outs[name] = fn()[0].float()
                    else:
                        outs[name] = fn()
                        if name in ("ours-plain", "ours-fast"):
                            outs[name + "-nofourier"] = model(x, t, c, None)
                    if args.profile and cuda and name in args.profile_variants:
                        profile(fn, out / f"profile_{name.replace('+', '_')}.txt")
            # later rounds, alternately backwards: a clock drift over the run then favours no variant
            for r in range(1, args.rounds):
                for name, model, is_diffusers in (timed[::-1] if r % 2 else timed):
                    times[name] += bench(call(name, model, is_diffusers), device, warmup=1, reps=per_round)
            for name, model, is_diffusers in timed:
                ms, peak = median(times[name]), peaks[name]
                flops = fl_d if is_diffusers else fl_o
                row = dict(frames=f, variant=name, ms=ms, spread_ms=max(times[name]) - min(times[name]),
                           first_call_s=compile_s[f"{name}@{f}f"], tflops=flops / (ms * 1e-3) / 1e12,
                           mfu=flops / (ms * 1e-3) / 1e12 / ceiling, peak_gib=peak)
                results.append(row)
                print(f"  {name:20s} {ms:8.1f} ms  (min {min(times[name]):.1f}, max {max(times[name]):.1f})  "
                      f"MFU {row['mfu']:.2f}  peak {peak or 0:.2f} GiB  first call {row['first_call_s']:.1f}s", flush=True)
            if f == args.frames[0] and not args.no_fp32:
                set_attention_backend("auto")
                ref32 = copy.deepcopy(plain).float()
                outs["fp32"] = ref32(x.float(), t, c.float(), s.float())
                outs["fp32-nofourier"] = ref32(x.float(), t, c.float(), None)
                del ref32
        for name, o in outs.items():
            if not torch.isfinite(o).all():
                errors[f"{name} NON-FINITE"] = 1.0
            if name.startswith("fp32") or "fp32" not in outs:
                continue
            target = outs["fp32-nofourier" if name.startswith("diffusers") or name.endswith("nofourier") else "fp32"]
            errors[f"{name} vs fp32"] = rel_err(o, target)
        for name in outs:
            if name.startswith("ours") and not name.endswith("nofourier") and name != "ours-plain" and "ours-plain" in outs:
                errors[f"{name} vs ours-plain"] = rel_err(outs[name], outs["ours-plain"])
        if "diffusers-default" in outs and "ours-plain-nofourier" in outs:
            errors["diffusers-default vs ours-plain"] = rel_err(outs["diffusers-default"], outs["ours-plain-nofourier"])
        if "diffusers-best" in outs and "ours-fast-nofourier" in outs:
            errors["diffusers-best vs ours-fast"] = rel_err(outs["diffusers-best"], outs["ours-fast-nofourier"])

    # -- ratios and tables ---------------------------------------------------------------------------
    for f in args.frames:
        rows = {r["variant"]: r for r in results if r["frames"] == f}
        for name in [n for n in rows if n.startswith("ours")]:
            for ref_name, col in (("diffusers-default", "vs_diff_default"), ("diffusers-best", "vs_diff_best")):
                if ref_name in rows:
                    rows[name][col] = rows[name]["ms"] / rows[ref_name]["ms"]
    save_json(out / "dit_forward.json", dict(device=info, ceiling_tflops=ceiling, results=results, errors=errors,
                                             compile_s=compile_s, args=vars(args)))
    print("\nrelative error (||a - b|| / ||b||) of one forward's output at", args.frames[0], "frames:")
    for k, v in errors.items():
        print(f"  {k:40s} {v:.2e}")
    print(f"\nDiT forward, {info.get('gpu', 'cpu')}, torch {info['torch']}, bf16, batch 1, {args.height}x{args.width}, "
          f"bf16 matmul ceiling {ceiling:.0f} TFLOP/s (ours-fast = apply_fast_path; first_call_s includes compile)")
    print(table(results, ["frames", "variant", "ms", "spread_ms", "tflops", "mfu", "peak_gib", "first_call_s",
                          "vs_diff_default", "vs_diff_best"]))


def profile(fn, path) -> None:
    """Top CUDA kernels of one call, by total time, into ``path`` (and a short version to stdout)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    fn()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    text = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90)
    path.write_text(text)
    print(f"profile -> {path.name}")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=70))


if __name__ == "__main__":
    main()
