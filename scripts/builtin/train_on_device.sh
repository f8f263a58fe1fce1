#!/usr/bin/env bash
# Train the built-in model on one GPU, assemble the shipped folder and pick its sampling defaults.
# Run from the repo root on the GPU machine with the kit (.kit, from prepare_kit.py) beside the code and
# PYTHONPATH holding src/ (and diffusers); results go to $OUT as archives cut into parts of at most 15 MB (the
# device returns few files, none over 16 MB; join with `cat NAME.part* | tar xzf -`):
#   builtin_model.tgz.part*  the pipeline folder to copy to src/flashi2v/builtin_model (float16, shards < 16 MB)
#   train.tgz.part*          train/ (metrics.jsonl, loss_curve.png, config.json, train.log)
#   tune.tgz.part*           tune/ (the grid, best.json, frame strips of the best setting)
#   autoencoder-run.tgz.part* with AUTOENCODER_MINUTES: the autoencoder's run (autoencoder/ in float16, its metrics)
# Usage: [KIT=.kit] [CONFIG=builtin] [COMPONENTS=$KIT/components] [FILL=1] [TUNE=0]
#        [AUTOENCODER_MINUTES=M [AUTOENCODER_STEPS=N] [AUTOENCODER_ARGS="key=value ..."]] bash scripts/builtin/train_on_device.sh MINUTES
#            [key=value training overrides ...]
# The second edition: CONFIG=builtin-2 COMPONENTS=.kit/components-2 AUTOENCODER_MINUTES=M ... model.init=.kit/init
# (second_edition_kit.py). Its autoencoder has a linear encoder, frozen, so its latents are final before its decoder
# trains: AUTOENCODER_MINUTES trains that decoder (train_autoencoder_on_device.sh, from COMPONENTS/vae) on the same
# GPU while the transformer trains, and the folder is assembled with the trained autoencoder.
# TUNE=0 skips the sampling-defaults grid (an intermediate stage).
# FILL=1 first times PROBE_STEPS (default 60) steps with the same overrides, then sets recipe.steps to what fits in
# MINUTES at that pace, so that a decaying learning rate (optim.decay=linear) reaches its end inside the time limit.
set -euo pipefail  # a failed training must stop the script, not go on to assemble an older run
minutes=${1:-12}
shift || true
OUT=${OUT:-outputs/builtin}
run=${RUN:-runs/builtin}  # RUN: the scratch run folder (a new one per call: a folder that holds a run is refused)
kit=${KIT:-.kit}
config=${CONFIG:-builtin}
components=${COMPONENTS:-$kit/components}
mkdir -p "$OUT/train" "$OUT/tune"
assembly=$components
if [ -n "${AUTOENCODER_MINUTES:-}" ]; then
    # shellcheck disable=SC2086  # AUTOENCODER_ARGS is a list of key=value words
    OUT="$OUT/autoencoder-run" KIT=$kit STEPS=${AUTOENCODER_STEPS:-} bash scripts/builtin/train_autoencoder_on_device.sh "$AUTOENCODER_MINUTES" \
        autoencoder.init="$components/vae" ${AUTOENCODER_ARGS:-} > "$OUT/autoencoder.log" 2>&1 &
    autoencoder_pid=$!
    assembly=$run-components
fi
train() {
    python3 -m flashi2v.cli train "$config" model.components="$components" data.photos="$kit/photos" \
        data.real_clips="$kit/real_clips.pt" "$@"
}
if [ -n "${FILL:-}" ]; then
    probe=$run-probe
    train output.dir="$probe" --overwrite output.checkpoint_every=100000 recipe.steps="${PROBE_STEPS:-60}" "$@" 2>&1 \
        | tr '\r' '\n' > "$OUT/train/probe.log"
    steps=$(python3 -c "
import json, statistics
rows = [json.loads(line) for line in open('$probe/metrics.jsonl')]
pace = statistics.median(r['sec_per_step'] for r in rows[len(rows) // 3:])
print(int(0.97 * $minutes * 60 / pace))")
    echo "probe: $(tail -n 1 "$probe/metrics.jsonl"); recipe.steps=$steps fills $minutes minutes" | tee "$OUT/train/probe.txt"
    set -- recipe.steps="$steps" "$@"
fi
train recipe.time_limit_min="$minutes" output.dir="$run" "$@" 2>&1 | tr '\r' '\n' > "$OUT/train/train.log"
tail -n 3 "$OUT/train/train.log"
cp "$run"/metrics.jsonl "$run"/loss_curve.png "$run"/config.json "$OUT/train/"
if [ -n "${autoencoder_pid:-}" ]; then
    wait "$autoencoder_pid" || { tail -n 20 "$OUT/autoencoder.log"; exit 1; }
    rm -rf "$assembly" && mkdir -p "$assembly"
    cp -r "$components/text_encoder" "$assembly/" && cp -r "$OUT/autoencoder-run/autoencoder" "$assembly/vae"
fi
python3 -c "
import json
from flashi2v.builtin import assemble
signed = json.load(open('$run/config.json'))['model']['signed_fourier']
assemble('$run/ema_transformer', '$assembly', '$run-assembled/builtin_model', signed_fourier=signed)"
cp -r "$run-assembled/builtin_model" "$OUT/"
archive() {  # parts of at most 15 MB: the device returns no file over 16 MB
    for folder in "$@"; do
        tar -C "$OUT" -czf - "$folder" | split -b 15M - "$OUT/$folder.tgz.part" && rm -rf "${OUT:?}/$folder"
    done
}
archive builtin_model train ${autoencoder_pid:+autoencoder-run}  # before the grid: a time limit cannot lose them
if [ "${TUNE:-1}" != 0 ]; then
    # TUNE_SECONDS: stop the grid after this long (its log keeps every setting measured by then)
    timeout "${TUNE_SECONDS:-0}" python3 scripts/builtin/tune_sampling.py --model "$run-assembled/builtin_model" \
        --photos "$kit/held_out" --text-encoder "$components/text_encoder" --out "$OUT/tune" ${TUNE_ARGS:-} 2>&1 \
        | tee "$OUT/tune/tune.log" || true
fi
archive tune
