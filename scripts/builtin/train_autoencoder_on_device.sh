#!/usr/bin/env bash
# Train the built-in model's video autoencoder on one GPU (the preset builtin-autoencoder).
# Run from the repo root on the GPU machine with the kit (.kit, from prepare_kit.py) beside the code and PYTHONPATH
# holding src/; results go to $OUT: autoencoder/ (the EMA weights in float16 with their latent statistics, to be a
# pipeline's vae/), metrics.jsonl, loss_curve.png, config.json, train.log.
# Usage: [KIT=.kit] [PROBE_STEPS=40 | STEPS=N] bash scripts/builtin/train_autoencoder_on_device.sh MINUTES [key=value ...]
# A probe of PROBE_STEPS steps first times the pace; recipe.steps is then what fits in MINUTES, so that the learning
# rate's decay (optim.decay) reaches its end inside the time limit. STEPS=N sets recipe.steps instead, without a
# probe: for a run that shares the GPU (a probe would time it alone).
set -euo pipefail
minutes=${1:-7}
shift || true
OUT=${OUT:-outputs/builtin-autoencoder}
kit=${KIT:-.kit}
run=runs/builtin-autoencoder
mkdir -p "$OUT"
train() {
    python3 -m flashi2v.cli train builtin-autoencoder data.photos="$kit/photos" data.real_clips="$kit/real_clips.pt" "$@" --overwrite
}
probe=runs/builtin-autoencoder-probe
if [ -n "${STEPS:-}" ]; then
    steps=$STEPS
else
    train output.dir="$probe" output.checkpoint_every=100000 recipe.statistics_clips=16 recipe.linear_fit_clips=16 \
        recipe.steps="${PROBE_STEPS:-40}" "$@" 2>&1 | tr '\r' '\n' > "$OUT/probe.log"
    steps=$(python3 -c "
import json, statistics
rows = [json.loads(line) for line in open('$probe/metrics.jsonl')]
pace = statistics.median(r['sec_per_step'] for r in rows[len(rows) // 3:])
print(int(0.95 * $minutes * 60 / pace))")
    echo "probe: $(tail -n 1 "$probe/metrics.jsonl"); recipe.steps=$steps fills $minutes minutes" | tee "$OUT/probe.txt"
fi
train recipe.steps="$steps" recipe.time_limit_min="$minutes" output.dir="$run" "$@" 2>&1 \
    | tr '\r' '\n' > "$OUT/train.log"
tail -n 2 "$OUT/train.log"
cp "$run"/metrics.jsonl "$run"/loss_curve.png "$run"/config.json "$OUT/"
# float16 weights (as shipped; the latent statistics stay float32): the device returns no file over 16 MB
python3 -c "
import torch
from flashi2v.encoders import CausalVideoAutoencoder
CausalVideoAutoencoder.from_pretrained('$run/autoencoder').save_pretrained('$OUT/autoencoder', dtype=torch.float16)"
