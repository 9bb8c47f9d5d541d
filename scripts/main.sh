#!/usr/bin/env bash
# The main job on the embedded dataset: train Pix2Pix (quick preset) on facades-synth, then evaluate it
# on the test split against the mean-photo and nearest-neighbour baselines. About 5 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run="${1:-runs/pix2pix-quick}"
if [ -f "$run/config.yaml" ]; then
    echo "$run already holds a run: evaluating it (delete it to train again)"
else
    .venv/bin/genlab train pix2pix --task facades-synth --preset quick --out "$run"
fi
.venv/bin/genlab evaluate "$run" --baselines
