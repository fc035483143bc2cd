#!/usr/bin/env bash
# Quick start, command 2: install, build, and run the whole test suite
# (unit, MPI tests under 1, 2 and 4 ranks, end-to-end, SLURM).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd "${DHESS_BUILD_DIR:-build}"
ctest --output-on-failure -j 2 "$@"
