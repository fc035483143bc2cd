#!/usr/bin/env bash
# Installs missing Debian packages and builds dhess (and its tests) into build/.
# Idempotent: a second run only recompiles what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/install-python.sh
build_dir=${DHESS_BUILD_DIR:-build}
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build_dir" -j "${DHESS_BUILD_JOBS:-2}"
