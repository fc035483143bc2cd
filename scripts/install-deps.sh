#!/usr/bin/env bash
# Installs the Debian 12 packages dhess builds, tests and benchmarks with. Torch, numpy, h5py and
# matplotlib come from PyPI into the project's virtual environment (scripts/venv.sh).
# Idempotent: does nothing (and needs no network) when everything is already there.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  python3 python3-venv
  libopenmpi-dev openmpi-bin
  libscalapack-openmpi-dev libopenblas-dev liblapack-dev
  libhdf5-openmpi-dev
  libgtest-dev libcli11-dev nlohmann-json3-dev
  libelpa-dev
  slurmctld slurmd slurm-client munge
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "dhess: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
