#!/usr/bin/env bash
# Fuzzes dhess's file readers (.npy arrays, checkpoint panels) with libFuzzer
# (clang, AddressSanitizer, UBSan) for a bounded time; seeds and past crashes
# live in tests/fuzz/corpus/, which ctest replays in every build.
#   bash scripts/fuzz.sh [SECONDS]   (default 600)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
seconds=${1:-600}
out=build-fuzz
mkdir -p "$out/corpus" "$out/crashes"
OMPI_CXX=clang++ mpicxx -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
  tests/fuzz/fuzz_readers.cpp src/io/npy.cpp src/io/checkpoint.cpp src/core/collective.cpp src/core/errors.cpp \
  -o "$out/fuzz_readers"
cp -n tests/fuzz/corpus/* "$out/corpus/" 2>/dev/null || true
"$out/fuzz_readers" "$out/corpus" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
  -artifact_prefix="$out/crashes/" -print_final_stats=1
echo "fuzzing finished without a crash; new corpus entries are in $out/corpus"
