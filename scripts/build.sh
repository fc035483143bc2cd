#!/usr/bin/env bash
# Installs missing Debian packages, creates (or reuses) the project's virtual environment with the
# pinned torch (scripts/venv.sh), and builds dhess and its tests into build/ against that torch.
# Idempotent: a second run only recompiles what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
python=$(bash scripts/venv.sh | tail -n 1)
build_dir=${DHESS_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DDHESS_PYTHON="$python" >/dev/null
cmake --build "$build_dir" -j "${DHESS_BUILD_JOBS:-2}"
