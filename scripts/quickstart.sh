#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is missing, build, and run
# Table 5 (random / SimCLR / MoCo-v2 / NAC encoders -> VAEs) on Fashion-MNIST at CPU size.
# Extra arguments are config overrides, e.g. scripts/quickstart.sh vae.epochs=1
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh dataset-fashion-mnist
cmake --preset release >/dev/null
cmake --build --preset release
exec build/release/nac table5 -c configs/table5_quick.json "$@"
