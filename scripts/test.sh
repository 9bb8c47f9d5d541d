#!/usr/bin/env bash
# Installs genlab with its test extras into .venv and runs the default (fast) test suite and the linter.
set -euo pipefail
cd "$(dirname "$0")/.."
# the distributed extra (accelerate) for the 2-process test (tests/train/test_distributed.py)
bash scripts/setup.sh test,distributed
# Real Fashion-MNIST for the tests that read it (Debian package; skipped where apt is not usable).
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
        || echo "note: could not install dataset-fashion-mnist; its tests will be skipped"
fi
# Headless Chromium for the report's browser test (Debian package; the test is skipped where it is missing).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "note: could not install chromium; the report's browser test will be skipped"
fi
.venv/bin/ruff check src tests
.venv/bin/python -m pytest "$@"
