#!/usr/bin/env bash
# Quick start, command 1: install, build, and compute the Hessian of the
# built-in convnet with all its eigenpairs. Results in results/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
model=${DHESS_DEMO_MODEL:-builtin:convnet:4}
args=(--model "$model" --eigen all --out results/demo --force)
if [ "$(id -u)" -ne 0 ] && command -v mpirun >/dev/null; then
  mpirun -n 2 build/dhess "${args[@]}"
else
  # Open MPI's mpirun refuses to run as root; one rank needs no mpirun at all.
  echo "(running one rank: mpirun refuses root; see README for multi-rank runs)"
  build/dhess "${args[@]}"
fi
