#!/bin/sh
# Build the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined) and run each for
# SECONDS seconds (default 60), one after another, niced. New inputs go to a working corpus
# under build/fuzz/corpus/<name> (seeded from tests/fuzz/corpus/<name>); crashes, leaks and
# timeouts are saved to tests/fuzz/regressions/<name>/, where CTest's fuzz_replay_<name>
# replays them in every build. libFuzzer's final statistics (executions, coverage) are
# printed for each target and kept in build/fuzz/logs/<name>.log.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 600 safetensors npy
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-"safetensors checkpoint npy idx cifar10 config override"}
cc=${CC:-clang}
command -v "$cc" >/dev/null || cc=clang-14
cmake -S . -B build/fuzz -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DNAC_FUZZ=ON -DNAC_TESTS=OFF >/dev/null
mkdir -p build/fuzz/logs
for t in $targets; do
  nice cmake --build build/fuzz --target "fuzz_$t" -j 2 >/dev/null
  mkdir -p "build/fuzz/corpus/$t" "tests/fuzz/regressions/$t"
  echo "== fuzz_$t: $secs s"
  # OMP_NUM_THREADS=1: one core a fuzzer; -rss_limit_mb: a file must not make us take GBs
  status=0
  OMP_NUM_THREADS=1 nice ./build/fuzz/fuzz_"$t" -max_total_time="$secs" -print_final_stats=1 \
      -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
      -artifact_prefix="tests/fuzz/regressions/$t/" \
      "build/fuzz/corpus/$t" "tests/fuzz/corpus/$t" >"build/fuzz/logs/$t.log" 2>&1 || status=$?
  grep -E "^stat::|cov:.*(DONE|INITED)|^#[0-9]+.*DONE|SUMMARY|ERROR" "build/fuzz/logs/$t.log" | tail -12
  [ $status -eq 0 ] || echo "fuzz_$t: exit $status; finding saved in tests/fuzz/regressions/$t/"
done
