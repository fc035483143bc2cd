#!/usr/bin/env bash
# The check on a lent GPU machine: build dhess against the machine's CUDA torch, prove that a run
# lands on the GPU, print one benchmark line (the dense HVP phase of builtin:convnet:12, n = 23,365,
# on the GPU against one CPU rank), compile the product for the GPU (dhess compile --device cuda:
# Triton kernels) and check a dense run with it against the eager one, and run the oracle tests on the
# GPU. The benchmark comes before the tests so that it is in the log even when the tests run out of time.
#
#   bash scripts/gpu_check.sh        in the checkout's root, beside .gpu/ (scripts/gpu_debs.sh)
#
# The machine has CUDA, CMake, ninja, a Python with torch, numpy, h5py and matplotlib, but no MPI,
# ScaLAPACK, OpenBLAS, HDF5, GoogleTest, CLI11 or nlohmann-json, and no network: those come as
# Debian 12 packages in .gpu/, unpacked into a prefix under /tmp (never into /) and used from there.
#
# Optional environment:
#   DHESS_GPU_PYTHON    the Python whose torch dhess is built against and the tests use (python3)
#   DHESS_GPU_JOBS      build and ctest parallelism (nproc)
#   DHESS_GPU_TESTS     ctest -R regex of the tests to run (the oracle subset below)
#   DHESS_GPU_BUDGET_S  seconds the whole check may take; the tests get what is left (540)
#   OUT                 a folder for the log and the JSON summaries (else build-gpu/gpu-check/)
# The last line is "gpu_check: PASS" or "gpu_check: FAIL: <why>" (exit 1). Where torch sees no GPU
# (a rehearsal on a CPU machine) it says so loudly, skips the GPU assertions and the GPU half of the
# benchmark, and ends "gpu_check: PASS ON CPU ONLY".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

start=$SECONDS
budget=${DHESS_GPU_BUDGET_S:-540}
cores=$(nproc)
jobs=${DHESS_GPU_JOBS:-$cores}
tests=${DHESS_GPU_TESTS:-'^(oracle_cases|zoo_cases|zoo_np1|zoo_np2|cli_np2|spectrum_np2|test_hessian_np2|python_package_np1)$'}
build="build-gpu"
work=$PWD/$build/gpu-check           # the proof run's and the benchmark's --out folders
deps=/tmp/dhess-gpu-deps             # the unpacked packages
out=${OUT:-$work}
mkdir -p "$work" "$out"

# The log is written as it grows, so that a run killed at the time limit leaves it behind; tee
# ignores the signals that stop the run, so it records the last words too.
exec > >(trap '' INT TERM; exec tee "$out/gpu_check.log") 2>&1
tee_pid=$!

gpu=unknown
bench_line=""
failures=()
timings=()
step_name=""
step_start=$SECONDS

# step NAME WHAT: starts a step, closing the one before (NAME and its seconds go to the last lines).
step() {
  [ -n "$step_name" ] && timings+=("$step_name $((SECONDS - step_start))s")
  step_name=$1
  step_start=$SECONDS
  [ -n "$step_name" ] && printf '\n== gpu_check [%ds]: %s\n' $((SECONDS - start)) "$2"
}
fail() {
  echo "gpu_check: FAILED: $*"
  failures+=("$*")
}
finish() {
  step "" ""
  echo
  echo "== gpu_check: steps: $(IFS=,; echo "${timings[*]}"); total $((SECONDS - start))s"
  [ -n "$bench_line" ] && echo "$bench_line"
  local code=0
  if [ ${#failures[@]} -gt 0 ]; then
    echo "gpu_check: FAIL: $(IFS=';'; echo "${failures[*]}")"
    code=1
  elif [ "$gpu" = True ]; then
    echo "gpu_check: PASS"
  else
    echo "gpu_check: PASS ON CPU ONLY (torch sees no GPU: the GPU assertions and the GPU benchmark were SKIPPED)"
  fi
  exec >&- 2>&-
  wait "$tee_pid"
  exit $code
}
die() {
  fail "$*"
  finish
}
trap 'fail "stopped by a signal at $((SECONDS - start))s (the time limit?)"; finish' INT TERM

# --- the machine ------------------------------------------------------------------------------
step tools "the machine and its tools"
echo "$(uname -srm), $cores cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
command -v nvidia-smi >/dev/null && nvidia-smi -L
for tool in cmake ninja dpkg-deb timeout; do
  command -v "$tool" >/dev/null || die "$tool is missing on this machine"
done
# Debian 12's libraries need glibc 2.36 (libevent's arc4random); Ubuntu 24.04 has 2.39.
glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
printf '2.36\n%s\n' "$glibc" | sort -V -C || die "glibc $glibc: the Debian 12 libraries in .gpu/ need glibc >= 2.36"
# CMake takes $CC/$CXX, else cc/c++ (gcc/g++, clang/clang++); nvcc needs a host compiler as well.
cxx=$(command -v "${CXX:-c++}" || command -v g++ || command -v clang++) ||
  die "no C++ compiler (\$CXX, c++, g++ or clang++) on this machine: nothing to build dhess with"
cc=$(command -v "${CC:-cc}" || command -v gcc || command -v clang) ||
  die "no C compiler (\$CC, cc, gcc or clang) on this machine: CMake needs one for the project"
echo "compilers: $("$cxx" --version | head -n 1); $("$cc" --version | head -n 1)"
echo "$(cmake --version | head -n 1), ninja $(ninja --version)"

python=$(command -v "${DHESS_GPU_PYTHON:-python3}") || die "no Python '${DHESS_GPU_PYTHON:-python3}' on PATH"
versions=$("$python" -c 'import torch, numpy, h5py, matplotlib; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())') ||
  die "$python cannot import torch, numpy, h5py and matplotlib"
read -r torch_version torch_cuda gpu <<<"$versions"
echo "python: $python, torch $torch_version (CUDA $torch_cuda), torch.cuda.is_available() = $gpu"
if [ "$gpu" = True ]; then
  echo "GPU: $("$python" -c 'import torch; print(torch.cuda.get_device_name(0))')"
else
  echo "gpu_check: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  echo "gpu_check: !!! NO GPU: torch.cuda.is_available() is False. Every run lands on the CPU; the  !!!"
  echo "gpu_check: !!! GPU assertions and the GPU half of the benchmark are SKIPPED.                  !!!"
  echo "gpu_check: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
fi
# Torch's CMake configuration of a CUDA build needs the toolkit; cmake/torch.cmake looks in
# $CUDA_HOME, $CUDA_PATH and /usr/local/cuda, so name the toolkit of the nvcc on PATH when none is set.
if [ "$torch_cuda" != None ]; then
  nvcc=$(command -v nvcc) || die "torch $torch_version is a CUDA $torch_cuda build, whose CMake configuration needs nvcc: none on PATH"
  echo "nvcc: $nvcc, $("$nvcc" --version | tail -n 1)"
  toolkit=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
  if [ -z "${CUDA_HOME:-}${CUDA_PATH:-}" ] && [ -f "$toolkit/include/cuda_runtime_api.h" ]; then
    export CUDA_HOME=$toolkit
  fi
fi

# --- the Debian packages, relocated ------------------------------------------------------------
step unpack "unpack .gpu/ into $deps"
compgen -G ".gpu/*.deb" >/dev/null || die ".gpu/ holds no .deb files: run scripts/gpu_debs.sh on Debian 12 and carry .gpu"
rm -rf "$deps"
mkdir -p "$deps/fallback" "$deps/fallback-lib"
for deb in .gpu/*.deb; do dpkg-deb -x "$deb" "$deps" || die "cannot unpack $deb"; done
for deb in .gpu/fallback/*.deb; do dpkg-deb -x "$deb" "$deps/fallback" || die "cannot unpack $deb"; done
usr=$deps/usr
lib=$usr/lib/x86_64-linux-gnu

# A fallback library serves only where the machine has no library of that name: its own copies are
# newer than Debian 12's and stay in charge.
system_libs=$(PATH=$PATH:/sbin:/usr/sbin ldconfig -p | awk 'NR > 1 {print $1}') ||
  echo "gpu_check: warning: ldconfig -p failed: every fallback library is used"
used=()
shopt -s nullglob
for so in "$deps"/fallback/{usr/,}lib/x86_64-linux-gnu/lib*.so.*; do
  name=${so##*/}
  grep -qxF "$name" <<<"$system_libs" && continue
  ln -s "$so" "$deps/fallback-lib/$name"
  [[ $name =~ \.so\.[0-9]+$ ]] && used+=("$name")
done
echo "fallback libraries this machine lacks, used from .gpu/fallback: ${used[*]:-none}"

# What update-alternatives would have linked (dpkg -x runs no maintainer scripts): BLAS, LAPACK and
# MPI under their generic names, for the linker, pkg-config and CMake. At run time libblas.so.3,
# liblapack.so.3 and libopenblas.so.0 are found in openblas-pthread/ through LD_LIBRARY_PATH below.
while read -r link target; do
  ln -s "$target" "$usr/$link" || die "cannot link $usr/$link"
done <<'EOF'
lib/x86_64-linux-gnu/libblas.so             openblas-pthread/libblas.so
lib/x86_64-linux-gnu/liblapack.so           openblas-pthread/liblapack.so
lib/x86_64-linux-gnu/pkgconfig/openblas.pc  ../openblas-pthread/pkgconfig/openblas.pc
lib/x86_64-linux-gnu/pkgconfig/blas.pc      ../openblas-pthread/pkgconfig/blas-openblas.pc
lib/x86_64-linux-gnu/pkgconfig/lapack.pc    ../openblas-pthread/pkgconfig/lapack-openblas.pc
lib/x86_64-linux-gnu/pkgconfig/mpi.pc       ompi.pc
bin/mpicc                                   mpicc.openmpi
bin/mpicxx                                  mpicxx.openmpi
bin/mpiexec                                 mpiexec.openmpi
EOF

# Open MPI and PMIx prepend $*_DESTDIR to every directory compiled into them (wrapper data, MCA
# components, help texts, openmpi-mca-params.conf): mpicxx --showme and mpiexec then point into the
# prefix. Debian's pmix-mca-params.conf names PMIx's component folder by its absolute path.
# The .pc files say prefix=/usr: pkgconf prepends the sysroot to their -I and -L. The libraries
# are found through LD_LIBRARY_PATH, by the linker as well as at run time.
export OPAL_DESTDIR=$deps PMIX_DESTDIR=$deps
export PMIX_MCA_mca_base_component_path=$lib/pmix2/lib/pmix
# One node: Open MPI's default launcher wants ssh or rsh even for local ranks and for a singleton
# (one rank without mpiexec), which an image may lack; the isolated one starts ranks locally only.
# Ranks talk through shared memory (ob1), not probing whatever fabric the machine has, and copy
# through it too: the kernel's cross-process copy (CMA) fails in containers that forbid ptrace.
export OMPI_MCA_plm=isolated OMPI_MCA_pml=ob1 OMPI_MCA_btl_vader_single_copy_mechanism=none
export PATH=$usr/bin:$PATH
export LD_LIBRARY_PATH=$lib:$lib/openblas-pthread:$deps/fallback-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PKG_CONFIG_SYSROOT_DIR=$deps PKG_CONFIG_LIBDIR=$lib/pkgconfig:$usr/share/pkgconfig
ompi_version=$(mpiexec --version) || die "the unpacked mpiexec does not run"
echo "${ompi_version%%$'\n'*}"

# --- build ---------------------------------------------------------------------------------------
step configure "configure $build"
# GoogleTest and nlohmann-json through their CMake packages under $usr (whose include/ also holds
# CLI11's headers), MPI through its wrappers, the rest through pkg-config.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDHESS_PYTHON="$python" \
  -DCMAKE_PREFIX_PATH="$usr" -DPKG_CONFIG_EXECUTABLE="$usr/bin/pkgconf" \
  -DMPI_C_COMPILER="$usr/bin/mpicc" -DMPI_CXX_COMPILER="$usr/bin/mpicxx" \
  -DMPIEXEC_EXECUTABLE="$usr/bin/mpiexec" || die "cmake could not configure $build"

step build "build ($jobs jobs)"
cmake --build "$build" -j "$jobs" || die "the build failed"
dhess=$PWD/$build/dhess
version=$("$dhess" --version) || die "$dhess --version failed"
echo "$version"
if [ "$torch_cuda" != None ] && [[ $version != *"with CUDA"* ]]; then
  die "torch is a CUDA build but dhess was built without CUDA: $version"
fi

# --- does a run land on the GPU? ---------------------------------------------------------------
step proof "proof run: 2 ranks, builtin:convnet:4, --eigen values"
# Both ranks share the one GPU; the test environment's OMPI_ALLOW_RUN_AS_ROOT covers ctest only.
rm -rf "$work/proof"
if OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpiexec -n 2 \
     "$dhess" --model builtin:convnet:4 --eigen values --out "$work/proof"; then
  cp "$work/proof/summary.json" "$out/proof-summary.json"
  # summary.json: "devices" holds each rank's device, hvp.mode what the device's memory holds.
  "$python" - "$work/proof/summary.json" "$gpu" <<'EOF' || fail "the proof run did not run on cuda:0"
import json, sys
s = json.load(open(sys.argv[1]))
devices, mode = s["devices"], s["hvp"]["mode"]
print(f"proof: devices {devices}; hvp mode: {mode}")
if sys.argv[2] != "True":
    print("proof: NO GPU: the assertion that both ranks ran on cuda:0 is SKIPPED")
elif not (devices == ["cuda:0", "cuda:0"] and "cuda:0" in mode):
    sys.exit("proof: expected both ranks on cuda:0 and cuda:0 in hvp.mode")
EOF
else
  fail "the proof run failed"
fi

# --- benchmark ---------------------------------------------------------------------------------
step bench "benchmark: dense HVP of builtin:convnet:12 on one rank"
rm -rf "$work/bench-cuda" "$work/bench-cpu"
bench=(--model builtin:convnet:12 --eigen none)
cuda_summary=""
if [ "$gpu" = True ]; then
  cuda_summary=$work/bench-cuda/summary.json
  "$dhess" "${bench[@]}" --out "$work/bench-cuda" && cp "$cuda_summary" "$out/bench-cuda-summary.json" ||
    fail "the GPU benchmark run failed"
fi
"$dhess" "${bench[@]}" --device cpu --threads "$cores" --out "$work/bench-cpu" &&
  cp "$work/bench-cpu/summary.json" "$out/bench-cpu-summary.json" || fail "the CPU benchmark run failed"
bench_line=$("$python" - "$work/bench-cpu/summary.json" "$cuda_summary" "$cores" <<'EOF'
import json, sys
def phase(path):  # the device the run used, n, and its HVP phase in seconds and columns/s
    s = json.load(open(path))
    t = s["timings_seconds"]["hvp"]
    return s["devices"][0], s["n"], t, s["n"] / t
device, n, cpu_s, cpu_rate = phase(sys.argv[1])
line = (f"BENCH builtin:convnet:12 n={n} dense HVP, --eigen none, 1 rank: "
        f"{device} --threads {sys.argv[3]} {cpu_s:.2f} s = {cpu_rate:,.0f} columns/s")
if sys.argv[2]:
    device, _, gpu_s, gpu_rate = phase(sys.argv[2])
    line += f"; {device} {gpu_s:.2f} s = {gpu_rate:,.0f} columns/s; GPU/CPU = {gpu_rate / cpu_rate:.1f}x"
else:
    line += "; GPU SKIPPED (no GPU)"
print(line)
EOF
) || fail "no benchmark line (see the runs above)"
echo "$bench_line"

# --- the compiled product on the GPU ----------------------------------------------------------------
step compiled "dhess compile --device cuda (Triton kernels), the dense HVP of builtin:convnet:6 with --compiled"
if [ "$gpu" = True ]; then
  c=$work/compiled
  rm -rf "$c" && mkdir -p "$c"
  problem=(--model "$c/model.pt" --data "$c/data.pt" --loss cross_entropy --eigen none --save-hessian -q)
  if "$dhess" export --model builtin:convnet:6 --model-out "$c/model.pt" --data-out "$c/data.pt" -q &&
     timeout 240 "$dhess" compile --model "$c/model.pt" --data "$c/data.pt" --loss cross_entropy --width 64 \
       --method reverse-over-reverse --device cuda --out "$c/packages" &&
     "$dhess" "${problem[@]}" --out "$c/eager" &&
     "$dhess" "${problem[@]}" --compiled "$c/packages" --out "$c/compiled"; then
    cp "$c/packages/compile.json" "$out/compiled-compile.json"
    cp "$c/compiled/summary.json" "$out/compiled-summary.json"
    "$python" - "$c" <<'EOF' || fail "the compiled GPU product is not the eager one"
import json, sys
import h5py, numpy as np
c = sys.argv[1]
runs = {name: json.load(open(f"{c}/{name}/summary.json")) for name in ("eager", "compiled")}
H = {name: h5py.File(f"{c}/{name}/hessian.h5", "r")["hessian"][:] for name in runs}
difference = np.abs(H["compiled"] - H["eager"]).max() / np.abs(H["eager"]).max()
mode = runs["compiled"]["hvp"]["mode"]
print(f"compiled: {mode}")
print(f"compiled: HVP phase {runs['compiled']['timings_seconds']['hvp']:.3f} s, eager "
      f"{runs['eager']['timings_seconds']['hvp']:.3f} s; max relative difference {difference:.1e}")
# The package made columns, or was checked on its first product and then timed slower than the
# eager product (which takes the lower triangle only) on every panel.
if not (mode.startswith("compiled (AOTInductor") or "faster than the compiled package" in mode) or difference > 1e-12:
    sys.exit("compiled: expected the package loaded and checked, and the eager H to 1e-12")
EOF
  else
    fail "dhess compile --device cuda or the run with --compiled failed (see above)"
  fi
else
  echo "compiled: NO GPU: the compiled GPU product is SKIPPED"
fi

# --- the oracle tests ----------------------------------------------------------------------------
left=$((budget - (SECONDS - start) - 15))
step tests "ctest -R '$tests' -j $jobs, at most ${left}s"
[ "$left" -ge 60 ] || die "only ${left}s left of the ${budget}s budget: no time for the tests"
# --device auto (dhess's default) puts every rank on cuda:0. timeout stops the whole process group
# (ctest, mpiexec, the ranks) when the budget is spent.
(cd "$build" && timeout -k 10 "$left" ctest -R "$tests" --output-on-failure -j "$jobs")
case $? in
  0) ;;
  124|137) fail "the tests did not finish within ${left}s" ;;
  *) fail "tests failed (see ctest's list above)" ;;
esac
cp "$build/Testing/Temporary/LastTest.log" "$out/ctest-LastTest.log" 2>/dev/null

finish
