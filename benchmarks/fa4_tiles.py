"""FlashAttention-4 forward tile shapes on this GPU, at the 1.3B self-attention shape (head dim 128).

FA4's own sm_90 choice for head dim 128 is 128 x 128 (register-sourced PV, intra-warpgroup overlap);
FA3's C++ kernel uses 128 x 176 for non-causal. This times the candidates through FA4's internal
``_flash_attn_fwd`` (its public API takes no tile) and checks each against the default's output; then
flashi2v's ``fa4_attention`` as one call and with its wave split (``wave_split_rows``). Table printed last.

    python benchmarks/fa4_tiles.py [--frames 49 81] [--split-only]     # needs a Hopper GPU and flash-attn-4
"""

from __future__ import annotations

import argparse

import torch

from common import bench, median, rel_err, table

from flashi2v.model.attention import fa4_attention, set_fa4_wave_split

CONFIGS = [  # (tile_m, tile_n, mma_pv_is_rs, intra_wg_overlap)
    (128, 128, True, True), (128, 176, True, True), (128, 160, True, True), (128, 192, True, True),
    (128, 144, True, True), (128, 112, True, True), (192, 128, False, True), (128, 128, False, True),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, nargs="+", default=[49])
    ap.add_argument("--split-only", action="store_true", help="only flashi2v's one call vs wave split")
    args = ap.parse_args()
    from flash_attn.cute.interface import _flash_attn_fwd

    dev, H, D = torch.device("cuda"), 12, 128
    rows = []
    for L, b in ((((f - 1) // 4 + 1) * 30 * 52, b) for f in args.frames for b in (1, 2)):
        q, k, v = (torch.randn(b, L, H, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * b * L * L * H * D
        ref = _flash_attn_fwd(q, k, v)[0] if args.split_only else None
        for tm, tn, rs, ol in [] if args.split_only else CONFIGS:
            kw = dict(tile_mn=(tm, tn), mma_pv_is_rs=rs, intra_wg_overlap=ol)
            try:
                out = _flash_attn_fwd(q, k, v, **kw)[0]
                ref = out if ref is None else ref
                ms = median(bench(lambda: _flash_attn_fwd(q, k, v, **kw), dev, warmup=3, reps=20))
                rows.append(dict(tokens=L, batch=b, tile=f"{tm}x{tn}", rs=rs, overlap=ol, ms=ms, tflops=flops / ms / 1e9,
                                 vs_default=rel_err(out, ref)))
            except Exception as err:  # some shapes do not fit registers / shared memory
                rows.append(dict(tokens=L, batch=b, tile=f"{tm}x{tn}", rs=rs, overlap=ol, note=f"{type(err).__name__}: {str(err)[:60]}"))
            print(rows[-1], flush=True)
        # flashi2v's fa4_attention (192 x 128 tiles) as one call and with its wave split (two calls)
        # alternating one / split / split / one ... so that clock drift does not favour either
        times: dict[bool, list[float]] = {False: [], True: []}
        errors: dict[bool, float | str] = {}  # relative error, or what failed
        for split in (False, True, True, False, False, True):
            set_fa4_wave_split(split)
            try:
                errors[split] = rel_err(fa4_attention(q, k, v), ref)
                times[split] += bench(lambda: fa4_attention(q, k, v), dev, warmup=3, reps=10)
            except Exception as err:
                errors[split] = f"{type(err).__name__}: {str(err)[:60]}"
        for split in (False, True):
            name = "flashi2v " + ("wave split" if split else "one call")
            if isinstance(errors[split], str):
                rows.append(dict(tokens=L, batch=b, tile=name, note=errors[split]))
            else:
                ms = median(times[split])
                rows.append(dict(tokens=L, batch=b, tile=name, ms=ms, tflops=flops / ms / 1e9, vs_default=errors[split]))
            print(rows[-1], flush=True)
        set_fa4_wave_split(True)
    print(f"\nFA4 forward, {torch.cuda.get_device_name()}, {H} heads x {D}, bf16 (vs_default: FA4's own 128 x 128 tiles)")
    print(table(rows, ["tokens", "batch", "tile", "rs", "overlap", "ms", "tflops", "vs_default", "note"]))


if __name__ == "__main__":
    main()
