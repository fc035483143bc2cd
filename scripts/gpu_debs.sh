#!/usr/bin/env bash
# Fills .gpu/ with the Debian 12 packages that scripts/gpu_check.sh unpacks on a lent GPU machine.
# That machine has CUDA, CMake, ninja, a C++ compiler and a Python with a CUDA torch, but no MPI,
# ScaLAPACK, OpenBLAS, HDF5, GoogleTest, CLI11 or nlohmann-json, and no network: they travel as
# .deb files in .gpu/ (ignored by git; the run tool's `carry`, 64 MiB in all with the tree).
#
#   .gpu/*.deb           always used: dhess's dependencies and the libraries only they use
#   .gpu/fallback/*.deb  generic libraries a plain Ubuntu may or may not have (libcurl and its
#                        TLS/Kerberos chain, libgfortran, libnuma, verbs ...); gpu_check.sh uses
#                        one only where the machine lacks its soname, so that the machine's
#                        newer copies win. libc6, libstdc++6 and libgcc-s1 are never carried: an
#                        older copy in front of the machine's would break its torch.
#
# Skipped on purpose: -doc packages, reference BLAS/LAPACK (OpenBLAS
# provides libblas.so.3 and liblapack.so.3), the Fortran/C++ HDF5 bindings, and libpsm-infinipath1
# (only Open MPI's PSM transport needs it, and gpu_check.sh runs the ob1 transport on one node).
# Run here as root on Debian 12 (apt works). Idempotent: downloads only what is missing, removes
# what is no longer listed, and prints the total size.
set -euo pipefail
cd "$(dirname "$0")/.."

. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || { echo "gpu_debs: needs Debian 12 (bookworm), this is ${PRETTY_NAME:-unknown}" >&2; exit 1; }

core=(
  # Open MPI 4.1 with its launcher, wrapper data and MCA components, PMIx, hwloc, libevent, and the
  # transports its components link (Debian's openmpi-mca-params.conf turns most of them off).
  libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common
  libpmix2 libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7 libfabric1 libucx0
  # ScaLAPACK on OpenBLAS (pthread flavour, as the alternatives pick it on this machine), and ELPA:
  # dhess builds without it, but --solver auto prefers it, and cli_np2 tests it (0.9 MB).
  libscalapack-openmpi-dev libscalapack-openmpi2.2 libelpa-dev libelpa19
  libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread
  # Parallel HDF5 and its szip.
  libhdf5-openmpi-dev libhdf5-openmpi-103-1 libsz2 libaec0
  # Header-only or static: the tests, the command line, JSON.
  libgtest-dev libcli11-dev nlohmann-json3-dev
  # pkg-config, which CMakeLists.txt needs and the machine may lack.
  pkgconf pkgconf-bin libpkgconf3
)
fallback=(
  libgfortran5 libquadmath0 libnuma1 libatomic1 libmunge2
  libibverbs1 ibverbs-providers librdmacm1 libnl-3-200 libnl-route-3-200 libpsm2-2
  libcurl4 libnghttp2-14 librtmp1 libssh2-1 libpsl5 libldap-2.5-0 libsasl2-2 libbrotli1
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2
  libssl3 libgnutls30 libidn2-0 libunistring2 libtasn1-6 libp11-kit0 libnettle8 libhogweed6 libgmp10
  libffi8 libzstd1 libudev1 libuuid1 zlib1g
)

# Brings $dir to exactly the candidate versions of the named packages.
fill() {
  local dir=$1; shift
  mkdir -p "$dir"
  local uris
  if ! uris=$(apt-get download --print-uris "$@" 2>/dev/null); then
    apt-get update -qq
    uris=$(apt-get download --print-uris "$@")
  fi
  local wanted=() missing=() file
  while read -r _ file _; do
    wanted+=("$file")
    [ -f "$dir/$file" ] || missing+=("${file%%_*}")
  done <<<"$uris"
  for file in "$dir"/*.deb; do
    [ -e "$file" ] || continue
    [[ " ${wanted[*]} " == *" ${file##*/} "* ]] || { echo "gpu_debs: removing ${file##*/}"; rm -f "$file"; }
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "gpu_debs: downloading ${missing[*]} into $dir"
    # apt's sandbox user cannot write into the checkout; the files stay root's.
    (cd "$dir" && apt-get download -qq -o APT::Sandbox::User=root "${missing[@]}")
  fi
}

fill .gpu "${core[@]}"
fill .gpu/fallback "${fallback[@]}"
echo "gpu_debs: .gpu/ holds $(find .gpu -name '*.deb' | wc -l) packages, $(du -sh .gpu | cut -f1) ($(du -sb .gpu | cut -f1) bytes)"
