#!/usr/bin/env bash
# The main job on the embedded dataset: `genlab benchmark` trains every translation family (pix2pix, cyclegan,
# cvae, cgan, cddim, ldm) on facades-synth under one budget, scores them alike beside the mean-photo and
# nearest-neighbour baselines, and writes bench/report.html, bench/results.md and bench/results.json.
# About 15 minutes on 2 CPU cores. Rerunning it resumes: finished entries are kept.
# Extra arguments go to `genlab benchmark` (e.g. --budget-minutes 3 --seeds 0,1,2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/genlab benchmark --out "${GENLAB_BENCH_OUT:-bench}" "$@"
echo "open ${GENLAB_BENCH_OUT:-bench}/report.html in a browser; the tables are also in ${GENLAB_BENCH_OUT:-bench}/results.md"
