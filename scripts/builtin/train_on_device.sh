#!/usr/bin/env bash
# Train the built-in model on one GPU, assemble the shipped folder and pick its sampling defaults.
# Run from the repo root on the GPU machine with the kit (.kit, from prepare_kit.py) beside the code and
# PYTHONPATH holding src/ (and diffusers); results go to $OUT:
#   builtin_model/   the pipeline folder to copy to src/flashi2v/builtin_model (float16, shards < 16 MB)
#   results.tar.gz   train/ (metrics.jsonl, loss_curve.png, config.json, train.log) and tune/ (the grid,
#                    best.json, frame strips of the best setting)
# Usage: [KIT=.kit] bash scripts/builtin/train_on_device.sh MINUTES [key=value training overrides ...]
set -eu
minutes=${1:-12}
shift || true
OUT=${OUT:-outputs/builtin}
run=runs/builtin
kit=${KIT:-.kit}
mkdir -p "$OUT/train" "$OUT/tune"
python3 -m flashi2v.cli train builtin model.components="$kit/components" data.photos="$kit/photos" \
    data.real_clips="$kit/real_clips.pt" recipe.time_limit_min="$minutes" output.dir="$run" "$@" 2>&1 \
    | tr '\r' '\n' > "$OUT/train/train.log"
tail -n 3 "$OUT/train/train.log"
cp "$run"/metrics.jsonl "$run"/loss_curve.png "$run"/config.json "$OUT/train/"
python3 -c "from flashi2v.builtin import assemble; assemble('$run/ema_transformer', '$kit/components', '$OUT/builtin_model')"
python3 scripts/builtin/tune_sampling.py --model "$OUT/builtin_model" --photos "$kit/held_out" \
    --text-encoder "$kit/components/text_encoder" --out "$OUT/tune" ${TUNE_ARGS:-} 2>&1 | tee "$OUT/tune/tune.log"
tar -C "$OUT" -czf "$OUT/results.tar.gz" train tune && rm -rf "$OUT/train" "$OUT/tune"
