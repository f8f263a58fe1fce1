#!/usr/bin/env bash
# Run stages of the leakage study on a GPU machine and return its results in files of at most 15 MB.
# From the repo root, with the kit prepared on a CPU machine (it needs scikit-video and the MiniLM package):
#   flashi2v study leakage leakage-study --out outputs/leakage-study --stages prepare      # CPU, ~1 min
#   bash scripts/leakage_study_on_device.sh train                    # GPU: probe + every run side by side
#   bash scripts/leakage_study_on_device.sh generate,evaluate,report # GPU: sample, evaluate, report
# PYTHONPATH must reach src/ (and PyAV where the machine lacks it). $OUT receives:
#   results.tgz        study.json, every run's config.json / metrics.jsonl / log, eval/*/*/metrics.json, report/
#   videos.tgz.part*   the generated videos (join: cat videos.tgz.part* | tar xzf -)
set -eu
stages=${1:?stages, e.g. train or generate,evaluate,report}
study=${STUDY:-outputs/leakage-study}
OUT=${OUT:-outputs/leakage-study-out}
mkdir -p "$OUT"
python3 -m flashi2v.cli study leakage "${CONFIG:-leakage-study}" --out "$study" --stages "$stages" --no-progress \
    2>&1 | tee "$OUT/study.log"
cd "$study"
files=$(ls -d study.json filled_steps.json probe/runs/*.log runs/*.yaml runs/*.log runs/*/config.json runs/*/metrics.jsonl \
        runs/*/loss_curve.png eval/*/*/metrics.json eval/*/*/summary.md report 2>/dev/null || true)
tar -czf "$OUT/results.tgz" $files
if [ -d videos ]; then
    tar -czf - videos | split -b 15M - "$OUT/videos.tgz.part"
fi
ls -la "$OUT"
