#!/usr/bin/env bash
# Install dependencies, build (release, -Werror) and run every test; then the tests again
# under AddressSanitizer + UndefinedBehaviorSanitizer (NAC_SKIP_SANITIZE=1 skips that).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh dataset-fashion-mnist
cmake --preset release >/dev/null
cmake --build --preset release
ctest --preset release
if [ "${NAC_SKIP_SANITIZE:-0}" != 1 ]; then
  cmake --preset debug >/dev/null
  cmake --build --preset debug
  ctest --preset debug
fi
