#!/usr/bin/env bash
# Side-by-side benchmark of dhess against the Python peers (issue 4), on this machine,
# at equal core counts. Not part of ctest. Writes bench/RESULTS.md (bench/RESULTS-quick.md
# with --quick) from the raw records in bench/results/raw/.
#
#   bench/run.sh                 everything (hours on 2 cores)
#   bench/run.sh --quick         small sizes only (minutes); skips the n = 23,365 and 10M runs
#   bench/run.sh --only a,c      only these sections (a hvp, b eigensolver, c elpa, d big, e memory, f spectrum,
#                                g rank-revealing, h ResNet-20 vs PyHessian, i GGN products vs curvlinops
#                                and hessian-eigenthings, j compiled products (dhess compile) vs eager, k GPT-2-sized LM
#                                vs pyhessian, hessian-eigenthings and curvlinops, l equal-accuracy tasks against
#                                the three peer packages)
#   bench/run.sh --peers         the sections against the published peer packages (h, i, k, l)
#   bench/run.sh --report        only re-render the report from existing raw records
#   bench/run.sh --resume        keep the clean records of an earlier run (rc 0, < 0.25 foreign cores),
#                                redo the rest (failed, noisy or missing)
#   bench/run.sh --keep NAME     keep the record NAME as it is (repeatable; the report marks noisy ones)
# Options: --no-build, --wait-quiet SECONDS (default 300: wait for other work to stop before
# each timed run; every record keeps the load it saw either way).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

quick=0
resume=0
keep=""
only="a,b,c,d,e,f,g,h,i,j,k,l"
build=1
report_only=0
wait_quiet=300
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --only) only="$2"; shift ;;
    --peers) only="h,i,k,l" ;;
    --no-build) build=0 ;;
    --report) report_only=1 ;;
    --resume) resume=1 ;;
    --keep) keep="$keep,$2"; shift ;;
    --wait-quiet) wait_quiet="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
want() { [[ ",$only," == *",$1,"* ]]; }

mode=$([ $quick = 1 ] && echo quick || echo full)
results=$root/bench/results
raw=$results/raw-$mode
work=$results/work
mkdir -p "$raw" "$work"
# The project's Python (scripts/venv.sh): the torch dhess is built against runs the peers too.
py=$(bash scripts/venv.sh | tail -n 1)
report() {
  "$py" bench/report.py --raw "$raw" --mode "$mode" \
    --out "bench/$([ $quick = 1 ] && echo RESULTS-quick.md || echo RESULTS.md)"
}
if [ $report_only = 1 ]; then report; exit 0; fi

build_dir=$root/build-bench
if [ $build = 1 ]; then
  DHESS_BUILD_DIR=build-bench bash scripts/build.sh
fi
if [ ! -x "$build_dir/elpa_tune" ] || [ bench/elpa_tune.cpp -nt "$build_dir/elpa_tune" ]; then
  mpicxx -O2 -std=c++17 $(pkg-config --cflags elpa) -o "$build_dir/elpa_tune" bench/elpa_tune.cpp \
    $(pkg-config --libs elpa scalapack-openmpi) -lopenblas
fi
dhess=$build_dir/dhess

# Benchmarks only: Open MPI refuses root without these.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cores=$(nproc)

# done_already NAME: with --resume, a clean record (rc 0, < 0.25 foreign cores) of NAME exists
done_already() {
  if [[ ",$keep," == *",$1,"* ]] && [ -f "$raw/$1.time.json" ]; then return 0; fi
  [ $resume = 1 ] && [ -f "$raw/$1.time.json" ] && $py - "$raw/$1.time.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
sys.exit(0 if t.get("rc") == 0 and t.get("foreign_cores", 9) < 0.25 else 1)
PY
}

# timed NAME [--wait] -- command...: run, keeping wall/CPU/peak-RSS/foreign load in raw/NAME.time.json.
# A failing command is recorded (rc in the record) and does not stop the bench.
timed() {
  local name=$1; shift
  local w=0
  if [ "$1" = "--wait" ]; then w=$wait_quiet; shift; fi
  shift  # --
  if done_already "$name"; then echo "bench: $name (kept)" >&2; return 0; fi
  echo "bench: $name" >&2
  $py bench/timed.py --wait-quiet "$w" --quiet-state "$raw/.quiet" --record "$raw/$name.time.json" -- "$@" ||
    echo "bench: $name failed (exit $?), recorded in $raw/$name.time.json" >&2
}

# run_dhess NAME RANKS THREADS ARGS...: a dense dhess run in work/NAME, summary kept as raw/NAME.summary.json
run_dhess() {
  local name=$1 ranks=$2 threads=$3; shift 3
  if done_already "$name"; then echo "bench: $name (kept)" >&2; return 0; fi
  rm -rf "$work/$name" "$raw/$name.summary.json"
  timed "$name" --wait -- env OPENBLAS_NUM_THREADS="$threads" \
    mpirun -n "$ranks" --bind-to none "$dhess" "$@" --threads "$threads" --out "$work/$name" --force -q \
    2> >(tee "$raw/$name.stderr" >&2)
  if [ -f "$work/$name/summary.json" ]; then cp "$work/$name/summary.json" "$raw/$name.summary.json"; fi
}

echo "$(date -Is) bench/run.sh $* (loadavg $(cut -d' ' -f1-3 /proc/loadavg))" >> "$raw/invocations.txt"
{
  echo "{\"date\": \"$(date -Is)\", \"mode\": \"$mode\", \"command\": \"bench/run.sh $*\","
  echo " \"git\": \"$(git rev-parse --short HEAD)$(git diff --quiet -- src include || echo +local-changes)\","
  echo " \"cpu\": \"$(lscpu | sed -n 's/^Model name: *//p')\", \"cores\": $cores,"
  echo " \"mem_gb\": $(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo),"
  echo " \"kernel\": \"$(uname -r)\", \"loadavg_at_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo " \"torch\": \"$($py -c 'import torch; print(torch.__version__)')\","
  echo " \"numpy\": \"$($py -c 'import numpy; print(numpy.__version__)')\","
  echo " \"blas\": \"$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3)\","
  echo " \"elpa\": \"$(pkg-config --modversion elpa)\"}"
} > "$raw/machine.json"

# ---------------------------------------------------------------- models and data
hvp_models="mlp convnet:6"
if [ $quick = 1 ]; then hvp_models="mlp convnet:4"; fi
export_model() {  # builtin spec -> work/<tag>.pt, work/<tag>_data.pt
  local spec=$1 tag=${1//:/_}
  [ -f "$work/$tag.pt" ] || "$dhess" export --model "builtin:$spec" --model-out "$work/$tag.pt" \
    --data-out "$work/${tag}_data.pt" -q
}

# ---------------------------------------------------------------- a. HVP phase / full Hessian
section_a() {
  for spec in $hvp_models; do
    tag=${spec//:/_}
    kind=${spec%%:*}
    export_model "$spec"
    # Three runs each, the report takes the fastest; the first also writes the reference hessian.h5.
    for rep in 1 2 3; do
      extra=()
      if [ $rep = 1 ]; then extra=(--save-hessian); fi
      run_dhess "a_${tag}_r1t1_$rep" 1 1 --model "builtin:$spec" --eigen none "${extra[@]}"
      run_dhess "a_${tag}_r2t1_$rep" 2 1 --model "builtin:$spec" --eigen none
      run_dhess "a_${tag}_r1t2_$rep" 1 2 --model "builtin:$spec" --eigen none
    done
    for t in 1 2; do
      if [ $t -gt $cores ]; then continue; fi
      timed "a_${tag}_python_t$t" --wait -- env OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t \
        $py bench/peers_hvp.py --model "$work/$tag.pt" --data "$work/${tag}_data.pt" --kind "$kind" \
        --threads $t --reference "$work/a_${tag}_r1t1_1/hessian.h5" --repeats $([ "$kind" = mlp ] && echo 5 || echo 1) \
        --out "$raw/a_${tag}_python_t$t.json"
    done
  done
  # The seed net itself (n = 23,365): 1 and 2 ranks, and the memory-safe peers (the one-shot vmap
  # methods need n x batch x activations: > 24 GB here). No reference check at this size (the H of
  # each side is 4.4 GB); the n = 6,085 check covers the same code.
  if [ $quick = 0 ]; then
    export_model convnet:12
    run_dhess "a_convnet_12_r1t1_1" 1 1 --model builtin:convnet:12 --eigen none
    run_dhess "a_convnet_12_r2t1_1" 2 1 --model builtin:convnet:12 --eigen none
    for t in 1 2; do
      timed "a_convnet_12_python_t$t" --wait -- env OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t \
        $py bench/peers_hvp.py --model "$work/convnet_12.pt" --data "$work/convnet_12_data.pt" --kind convnet \
        --threads $t --methods "vectorize=False,vmap(vjp" --chunks 64 --out "$raw/a_convnet_12_python_t$t.json"
    done
  fi
  # Where the time of a dense dhess run goes (perf with the software clock; no hardware counters here).
  big_hvp=$(echo $hvp_models | awk '{print $2}')
  timed a_profile -- bench/profile_hvp.sh "$dhess" "builtin:$big_hvp" "$raw/a_profile.txt" || true
}

# ---------------------------------------------------------------- b. eigensolver
eig_sizes="2000 6085 12000"
[ $quick = 1 ] && eig_sizes="1000 2000"
# 1-rank/1-thread runs up to this size; above it only 2 ranks and 2 threads (n = 12,000 on one core
# would add about half an hour of runs whose ratios the smaller sizes already give).
eig_one_core_max=6085
section_b() {
  for n in $eig_sizes; do
    # n = 6,085 is the real convnet:6 Hessian; the others a seeded random symmetric matrix A
    # (forward() = 0.5 x'Ax, --loss none), computed once and then read back from a checkpoint.
    if [ "$n" = 6085 ]; then
      export_model convnet:6
      model=(--model builtin:convnet:6)
    else
      [ -f "$work/quad_$n.pt" ] || $py bench/make_quadratic.py "$n" 7 "$work/quad_$n.pt" "$work/quad_$n.npy"
      model=(--model "$work/quad_$n.pt" --loss none)
    fi
    ckpt=$work/ckpt_$n
    if [ ! -f "$work/b_${n}_hessian/hessian.h5" ]; then
      rm -rf "$ckpt" "$work/b_${n}_hessian"
      OPENBLAS_NUM_THREADS=$cores "$dhess" "${model[@]}" --eigen none --save-hessian --checkpoint "$ckpt" \
        --threads "$cores" --out "$work/b_${n}_hessian" -q
    fi
    for ranks in 1 2; do
      if [ $ranks -lt $cores ] && [ "$n" -gt $eig_one_core_max ]; then continue; fi
      jobs=("values pdsyevr" "all pdsyevd" "values elpa" "all elpa")
      # LAPACK runs on one process only.
      if [ $ranks = 1 ]; then jobs+=("values lapack" "all lapack"); fi
      for job in "${jobs[@]}"; do
        set -- $job
        run_dhess "b_${n}_${2}_${1}_r${ranks}" "$ranks" 1 "${model[@]}" --eigen "$1" --solver "$2" \
          --checkpoint "$ckpt" --resume
      done
    done
    matrix=$([ "$n" = 6085 ] && echo "$work/b_${n}_hessian/hessian.h5:/hessian" || echo "$work/quad_$n.npy")
    for t in 1 2; do
      if [ $t -gt $cores ]; then continue; fi
      if [ $t -lt $cores ] && [ "$n" -gt $eig_one_core_max ]; then continue; fi
      for routine in eigvalsh eigh; do
        ref=$work/b_${n}_pdsyevr_values_r2/eigenvalues.npy
        timed "b_${n}_numpy_${routine}_t$t" --wait -- env OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t \
          $py bench/peers_eig.py "$matrix" "$routine" "$raw/b_${n}_numpy_${routine}_t$t.json" "$ref"
      done
    done
  done
}

# ---------------------------------------------------------------- c. ELPA settings
section_c() {
  tune=$build_dir/elpa_tune
  # The matrix of the issue's report: the convnet:4 Hessian, n = 2,885.
  export_model convnet:4
  if [ ! -f "$work/convnet4_hessian.npy" ]; then
    rm -rf "$work/c_hessian"
    "$dhess" --model builtin:convnet:4 --eigen none --save-hessian --out "$work/c_hessian" -q --force
    $py -c "import h5py, numpy as np; h = np.asarray(h5py.File('$work/c_hessian/hessian.h5')['hessian']); np.save('$work/convnet4_hessian.npy', (h + h.T) / 2)"
  fi
  cn=2885
  tune_run() {  # NAME RANKS N NB SOLVER JOB KERNEL [MATRIX]
    local name=$1 ranks=$2; shift 2
    timed "c_$name" --wait -- sh -c "OPENBLAS_NUM_THREADS=1 mpirun -n $ranks --bind-to none $tune $* > $raw/c_$name.json"
  }
  for ranks in 1 2; do
    for job in values all; do
      tune_run "pdsyev_${job}_r$ranks" $ranks $cn 64 $([ $job = values ] && echo pdsyevr || echo pdsyevd) $job 0 \
        "$work/convnet4_hessian.npy"
      # pdsyevr as dhess calls it (optimal workspace: PDSYNTRD gathers A onto a sqrt(P)xsqrt(P) grid, 1x1 for
      # P < 4) vs a workspace below that threshold (distributed PDSYTRD on the whole grid).
      if [ $job = values ]; then
        tune_run "pdsyevr_min_${job}_r$ranks" $ranks $cn 64 pdsyevr_min $job 0 "$work/convnet4_hessian.npy"
      fi
      # Block size for both stages; the back-transformation kernel matters only for 2-stage with vectors.
      # Debian's ELPA was built with kernels 1 generic, 2 generic_simple, 39/40 generic_simple block4/6;
      # 13 (AVX2_BLOCK4) and 16 (AVX512_BLOCK4) show what happens when a SIMD kernel is asked for.
      for solver in elpa1 elpa2; do
        for nb in 16 32 64; do
          if [ $quick = 1 ] && [ $nb != 64 ]; then continue; fi
          tune_run "${solver}_${job}_k0_nb${nb}_r$ranks" $ranks $cn $nb $solver $job 0 "$work/convnet4_hessian.npy"
        done
      done
      if [ $job = all ]; then
        for k in 2 39 40 13 16; do
          tune_run "elpa2_${job}_k${k}_nb64_r$ranks" $ranks $cn 64 elpa2 $job $k "$work/convnet4_hessian.npy"
        done
      fi
    done
  done
  # The same comparison on a random dense matrix (no deflation) of the same size.
  for job in values all; do
    tune_run "random_pdsyev_${job}_r2" 2 $cn 64 $([ $job = values ] && echo pdsyevr || echo pdsyevd) $job 0
    if [ $job = values ]; then tune_run "random_pdsyevr_min_${job}_r2" 2 $cn 64 pdsyevr_min $job 0; fi
    tune_run "random_elpa2_${job}_r2" 2 $cn 64 elpa2 $job 0
    tune_run "random_elpa1_${job}_r2" 2 $cn 64 elpa1 $job 0
  done
}

# ---------------------------------------------------------------- d. end to end at full size
big=convnet:12
[ $quick = 1 ] && big=convnet:6
section_d() {
  tag=${big//:/_}
  export_model "$big"
  # The plan as a user runs it before submitting: one process, --ranks 2.
  for solver in auto pdsyevr; do
    timed "d_plan_$solver" -- sh -c "OPENBLAS_NUM_THREADS=1 $dhess plan --model builtin:$big --eigen values \
      --solver $solver --ranks 2 --threads 1 --json > $raw/d_plan_$solver.json"
  done
  # The default (auto = ELPA 2-stage for eigenvalues only), then ScaLAPACK pdsyevr.
  run_dhess "d_dhess_auto_r2" 2 1 --model "builtin:$big" --eigen values
  run_dhess "d_dhess_pdsyevr_r2" 2 1 --model "builtin:$big" --eigen values --solver pdsyevr
  ref=$work/d_dhess_auto_r2/eigenvalues.npy
  # The Python route: the fastest memory-safe peer of section a -> one matrix -> numpy eigvalsh.
  timed "d_python_t$cores" --wait -- env OPENBLAS_NUM_THREADS=$cores OMP_NUM_THREADS=$cores \
    $py bench/python_route.py --model "$work/$tag.pt" --data "$work/${tag}_data.pt" --kind convnet \
    --threads "$cores" --peers "$raw" --reference "$ref" --out "$raw/d_python_t$cores.json"
}

# ---------------------------------------------------------------- e. memory at the floor
# (from the d and b summaries; one extra --eigen all run on the real convnet:6 Hessian with 2 ranks)
section_e() {
  run_dhess "e_all_r2" 2 1 --model builtin:convnet:6 --eigen all
}

# ---------------------------------------------------------------- f. matrix-free at 10M parameters
spectrum_args=(--top 10 --bottom 0 --max-steps 60 --slq-probes 4 --slq-steps 30 --trace-probes 0 --diagonal none)
spectrum_sizes="64 128 256"
[ $quick = 1 ] && spectrum_sizes="16 32"
section_f() {
  for hw in $spectrum_sizes; do
    for ranks in 2 1; do
      name=f_convnet${hw}_r$ranks
      if done_already "$name"; then continue; fi
      rm -rf "$work/$name"
      timed "$name" --wait -- env OPENBLAS_NUM_THREADS=1 mpirun -n $ranks --bind-to none "$dhess" spectrum \
        --model "builtin:convnet:$hw" "${spectrum_args[@]}" --threads 1 --out "$work/$name" --force -q
      if [ -f "$work/$name/summary.json" ]; then cp "$work/$name/summary.json" "$raw/$name.summary.json"; fi
    done
  done
}

# ---------------------------------------------------------------- g. rank-revealing (issue 17)
# --solver auto (the certified sketch by Hessian-vector products) against ELPA 2-stage on the same
# assembled H (--resume from the checkpoint goes straight to the solve), on the seed net at 12x12
# (n = 23,365, rank 672) and on a softmax regression of rank just above n/8 (n = 12,006, rank 1,505:
# issue 24's bound for auto's 10x); then every nonzero eigenpair at 64x64 (n = 655,685) without
# forming H, checked by eager PyTorch (bench/check_nonzero.py).
nonzero_hw=64
softmax_shape="2000 6 301"
if [ $quick = 1 ]; then nonzero_hw=16; softmax_shape="500 6 76"; fi
lowrank_pair() {  # tag, then the model arguments
  local tag=$1; shift
  local ckpt=$work/g_${tag}_ckpt shown="$*"
  done_already "g_${tag}_auto_r2" || rm -rf "$ckpt"
  run_dhess "g_${tag}_auto_r2" 2 1 "$@" --eigen values --solver auto --checkpoint "$ckpt"
  run_dhess "g_${tag}_elpa_r2" 2 1 "$@" --eigen values --solver elpa --checkpoint "$ckpt" --resume
  $py - "$work/g_${tag}_auto_r2/eigenvalues.npy" "$work/g_${tag}_elpa_r2/eigenvalues.npy" \
    "$raw/g_${tag}_compare.json" "${shown//$work\//}" <<'PY' || echo "bench: g comparison failed" >&2
import json, sys
import numpy as np
auto, elpa = np.load(sys.argv[1]), np.load(sys.argv[2])
scale = np.abs(elpa).max()
nonzero = lambda w: int((np.abs(w) > 1e-9 * scale).sum())
json.dump({"n": int(elpa.size), "max_difference_relative": float(np.abs(np.sort(auto) - np.sort(elpa)).max() / scale),
           "nonzero_auto": nonzero(auto), "nonzero_elpa": nonzero(elpa),
           "negative_elpa": int((elpa < -1e-9 * scale).sum()), "model_arguments": sys.argv[4]},
          open(sys.argv[3], "w"), indent=1)
PY
}
section_g() {
  lowrank_pair "${big//:/_}" --model "builtin:$big"
  local softmax=$work/softmax_${softmax_shape// /_}
  [ -f "$softmax.pt" ] || $py bench/make_softmax.py $softmax_shape "$softmax.pt" "${softmax}_data.pt"
  lowrank_pair softmax_rank_n8 --model "$softmax.pt" --data "${softmax}_data.pt" --loss cross_entropy
  export_model "convnet:$nonzero_hw"
  name=g_nonzero_convnet${nonzero_hw}_r2
  if ! done_already "$name"; then
    rm -rf "$work/$name"
    timed "$name" --wait -- env OPENBLAS_NUM_THREADS=1 mpirun -n 2 --bind-to none "$dhess" spectrum --nonzero \
      --model "$work/convnet_$nonzero_hw.pt" --data "$work/convnet_${nonzero_hw}_data.pt" --loss cross_entropy \
      --threads 1 --out "$work/$name" --force -q
    if [ -f "$work/$name/summary.json" ]; then cp "$work/$name/summary.json" "$raw/$name.summary.json"; fi
  fi
  timed "g_check_convnet$nonzero_hw" -- env OMP_NUM_THREADS=$cores $py bench/check_nonzero.py \
    --model "$work/convnet_$nonzero_hw.pt" --data "$work/convnet_${nonzero_hw}_data.pt" --result "$work/$name" \
    --json "$raw/g_check_convnet$nonzero_hw.json"
}

# ---------------------------------------------------------------- h. ResNet-20 vs PyHessian (issue 14)
# A CIFAR-shaped ResNet-20 (n = 272,474, BatchNorm in eval mode, 200 images): PyHessian's algorithms
# (bench/pyhessian_peer.py: float32, 2 threads) against dhess spectrum --dtype float32 on 2 ranks
# of 1 thread: the top eigenvalue and a 52-probe Hutchinson trace, the top 5, one 100-step SLQ
# density. dhess stops its
# Lanczos pairs at PyHessian's tolerance, 1e-3 (a residual bound ‖Hz − λz‖ ≤ 1e-3 max|λ|, stricter
# than the peer's relative change of the Rayleigh quotient).
section_h() {
  r20=$work/resnet20
  if [ $quick = 1 ]; then r20=$work/resnet8; fi
  [ -f "$r20/resnet20.pt" ] || $py bench/resnet20.py "$r20" $([ $quick = 1 ] && echo --small)
  inputs=(--model "$r20/resnet20.pt" --data "$r20/resnet20_data.pt")
  # Where a product's time goes: 1 thread, float32 and float64, batch widths 1, 4, 16 (torch.profiler).
  timed h_profile --wait -- env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $py bench/pyhessian_peer.py "${inputs[@]}" \
    --hvp-profile --profile-dtypes float32,float64 --profile-widths 1,4,16 --profile-images 50 \
    --profile-counts 100,200 --profile-repeats 1 --profile-attempts 2 --profile-wait-quiet 30 \
    --json "$raw/h_profile.json"
  for job in "top1_trace52:--top 1 --trace-probes 52" "top5:--top 5 --trace-probes 0" \
    "slq:--top 0 --trace-probes 0 --slq-probes 1 --slq-steps 100"; do
    tag=${job%%:*}
    read -r -a flags <<< "${job#*:}"
    timed "h_peer_$tag" --wait -- env OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 $py bench/pyhessian_peer.py \
      "${inputs[@]}" "${flags[@]}" --threads 2 --json "$raw/h_peer_$tag.json"
    name=h_dhess_$tag
    if done_already "$name"; then continue; fi
    rm -rf "$work/$name"
    timed "$name" --wait -- env OPENBLAS_NUM_THREADS=1 mpirun -n 2 --bind-to none "$dhess" spectrum "${inputs[@]}" \
      --loss cross_entropy --dtype float32 --bottom 0 --tol 1e-3 --trace-estimator hutchinson --slq-probes 0 \
      --diagonal none "${flags[@]}" --threads 1 --out "$work/$name" --force -q
    if [ -f "$work/$name/summary.json" ]; then cp "$work/$name/summary.json" "$raw/$name.summary.json"; fi
  done
}

# ---------------------------------------------------------------- i. Gauss-Newton products (issue 23)
# GGN-vector products on the seed convnet (n = 6,085 at 6x6, 23,365 at 12x12): dhess's dense GGN
# columns (--curvature ggn --eigen none) on 2 ranks of 1 thread against curvlinops-for-pytorch's
# GGNLinearOperator (vmap over a block of columns) and hessian-eigenthings' GGNOperator (one vector
# per call) on 2 threads, on the same columns, checked against dhess's matrix.
section_i() {
  "$py" -m pip install --quiet -r bench/requirements.txt -c requirements.txt
  for spec in convnet:6 $([ $quick = 1 ] || echo convnet:12); do
    tag=${spec//:/_}
    export_model "$spec"
    run_dhess "i_${tag}_ggn_r2t1" 2 1 --model "builtin:$spec" --curvature ggn --eigen none --save-hessian
    columns=$([ "$spec" = convnet:6 ] && echo 6085 || echo 2048)
    timed "i_${tag}_peers_t2" --wait -- env OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 $py bench/peers_ggn.py \
      --model "$work/$tag.pt" --data "$work/${tag}_data.pt" --reference "$work/i_${tag}_ggn_r2t1/hessian.h5" \
      --columns "$columns" --threads 2 --out "$raw/i_${tag}_peers_t2.json"
    rm -f "$work/i_${tag}_ggn_r2t1/hessian.h5"
  done
}

# ---------------------------------------------------------------- j. Compiled products (issue 24)
# dhess compile (AOTInductor) on the seed convnet (n = 6,085 and 23,365): the dense run's HVP phase eager
# and --compiled on 1 rank x 1 thread, against section a's torch.func peers; every exact case of the model
# zoo eager and compiled (bench/compiled_zoo.py); ResNet-20's top-1 + 52-probe trace of section h with
# --compiled (float32, the 2 ranks' shards).
section_j() {
  for spec in convnet:6 $([ $quick = 1 ] || echo convnet:12); do
    tag=${spec//:/_}
    export_model "$spec"
    if ! done_already "j_${tag}_compile"; then
      rm -rf "$work/j_${tag}_packages"
      timed "j_${tag}_compile" --wait -- "$dhess" compile --model "$work/$tag.pt" --data "$work/${tag}_data.pt" \
        --loss cross_entropy --width 64 --threads 1 --out "$work/j_${tag}_packages"
      cp "$work/j_${tag}_packages/compile.json" "$raw/j_${tag}_compile.json"
    fi
    for rep in 1 2 3; do
      run_dhess "j_${tag}_eager_$rep" 1 1 --model "$work/$tag.pt" --data "$work/${tag}_data.pt" \
        --loss cross_entropy --eigen none --panel 64
      run_dhess "j_${tag}_compiled_$rep" 1 1 --model "$work/$tag.pt" --data "$work/${tag}_data.pt" \
        --loss cross_entropy --eigen none --panel 64 --compiled "$work/j_${tag}_packages"
      if [ "$spec" = convnet:12 ]; then break; fi
    done
    # The fastest torch.func peers of section a, in the same run (at n = 6,085 checked against
    # dhess's compiled Hessian).
    reference=()
    if [ "$spec" = convnet:6 ]; then
      run_dhess "j_${tag}_compiled_h" 1 1 --model "$work/$tag.pt" --data "$work/${tag}_data.pt" \
        --loss cross_entropy --eigen none --panel 64 --compiled "$work/j_${tag}_packages" --save-hessian
      reference=(--reference "$work/j_${tag}_compiled_h/hessian.h5")
    fi
    timed "j_${tag}_peer_t1" --wait -- env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $py bench/peers_hvp.py \
      --model "$work/$tag.pt" --data "$work/${tag}_data.pt" --kind convnet --threads 1 "${reference[@]}" \
      --methods "vmap(vjp,vmap(jvp" --chunks 64 --repeats $([ "$spec" = convnet:6 ] && echo 3 || echo 1) \
      --out "$raw/j_${tag}_peer_t1.json"
  done
  [ -f "$work/zoo/zoo.json" ] || $py tests/oracle/make_zoo.py "$work/zoo"
  timed j_zoo --wait -- env OMP_NUM_THREADS=1 $py bench/compiled_zoo.py --zoo "$work/zoo" --dhess "$dhess" \
    --work "$work/j_zoo" --out "$raw/j_zoo.json"
  r20=$work/resnet20
  if [ $quick = 1 ]; then r20=$work/resnet8; fi
  [ -f "$r20/resnet20.pt" ] || $py bench/resnet20.py "$r20" $([ $quick = 1 ] && echo --small)
  inputs=(--model "$r20/resnet20.pt" --data "$r20/resnet20_data.pt" --loss cross_entropy)
  if ! done_already j_resnet_compile; then
    rm -rf "$work/j_resnet_packages"
    timed j_resnet_compile --wait -- "$dhess" compile "${inputs[@]}" --dtype float32 --width 1 --ranks 2 \
      --threads 2 --out "$work/j_resnet_packages"
    cp "$work/j_resnet_packages/compile.json" "$raw/j_resnet_compile.json"
  fi
  # The same task eager, with --compiled, and PyHessian's algorithms (section h's peer), in one run.
  for variant in eager compiled; do
    name=j_dhess_top1_trace52_$variant
    if done_already "$name"; then continue; fi
    extra=()
    if [ $variant = compiled ]; then extra=(--compiled "$work/j_resnet_packages"); fi
    rm -rf "$work/$name"
    timed "$name" --wait -- env OPENBLAS_NUM_THREADS=1 mpirun -n 2 --bind-to none "$dhess" spectrum "${inputs[@]}" \
      --dtype float32 --top 1 --bottom 0 --tol 1e-3 --trace-probes 52 --trace-estimator hutchinson --slq-probes 0 \
      --diagonal none "${extra[@]}" --threads 1 --out "$work/$name" --force -q
    if [ -f "$work/$name/summary.json" ]; then cp "$work/$name/summary.json" "$raw/$name.summary.json"; fi
  done
  timed j_peer_top1_trace52 --wait -- env OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 $py bench/pyhessian_peer.py \
    --model "$r20/resnet20.pt" --data "$r20/resnet20_data.pt" --top 1 --trace-probes 52 --threads 2 \
    --json "$raw/j_peer_top1_trace52.json"
}

# ---------------------------------------------------------------- k. GPT-2-sized LM (issue 25)
# GPT-2 small's shape (n = 124,439,808; --quick: 2 layers of width 128), 4 sequences of 32 tokens,
# float32: the top eigenvalue to 1e-3 (a residual of 1e-3 · |λ| bounds its error by as much) and a
# 30-probe Hutchinson trace with its standard error; dhess on 2 ranks, the peers on 2 threads.
section_k() {
  "$py" -m pip install --quiet -r bench/requirements.txt -c requirements.txt
  gpt=$work/gpt2
  size=()
  if [ $quick = 1 ]; then gpt=$work/gpt2_small; size=(--layers 2 --width 128 --heads 4 --vocab 5000); fi
  [ -f "$gpt/gpt2.pt" ] || $py bench/gpt2.py "$gpt" "${size[@]}"
  inputs=(--model "$gpt/gpt2.pt" --data "$gpt/gpt2_data.pt")
  name=k_dhess_top1_trace30
  if ! done_already "$name"; then
    rm -rf "$work/$name"
    timed "$name" --wait -- env OPENBLAS_NUM_THREADS=1 mpirun -n 2 --bind-to none "$dhess" spectrum "${inputs[@]}" \
      --loss cross_entropy --dtype float32 --top 1 --bottom 0 --tol 1e-3 --trace-probes 30 \
      --trace-estimator hutchinson --slq-probes 0 --diagonal none --threads 1 --out "$work/$name" --force -q
    if [ -f "$work/$name/summary.json" ]; then cp "$work/$name/summary.json" "$raw/$name.summary.json"; fi
  fi
  # A peer whose vectors outgrow memory (Lanczos bases at 0.5-1 GB a vector) gets a MemoryError from an
  # address-space limit, recorded as such, rather than the kernel's OOM killer.
  for peer in pyhessian eigenthings curvlinops; do
    timed "k_${peer}_t2" --wait -- bash -c 'ulimit -v $((20 * 1024 * 1024)); exec "$@"' _ env OMP_NUM_THREADS=2 \
      OPENBLAS_NUM_THREADS=2 $py bench/peers_gpt2.py "$gpt" "${size[@]}" --methods "$peer" --tasks top1,trace \
      --trace-probes 30 --threads 2 --out "$raw/k_${peer}_t2.json"
  done
}

# ---------------------------------------------------------------- l. Equal accuracy (issue 25)
# The seed convnet and a small GPT-style LM (both small enough for the exact Hessian, its every eigenvalue and
# its diagonal): top-1 and top-10 eigenvalues to 1e-3 and 1e-6, the trace to 1% and 0.1% in 9 of 10 seeds, the
# diagonal to 1%, the density's distance at equal products, float64; then ResNet-20's top-k. dhess on 2 ranks,
# the peers on 2 threads.
section_l() {
  "$py" -m pip install --quiet -r bench/requirements.txt -c requirements.txt
  # The LM: 8 sequences filling its context (n = 7,872; --quick: 1 block of width 8, n = 1,208).
  local spec=convnet:6 lm=(--layers 2 --width 16 --heads 2 --vocab 64 --context 16) lmdir=$work/lm_small
  if [ $quick = 1 ]; then spec=convnet:4; lm=(--layers 1 --width 8 --heads 2 --vocab 32 --context 8); lmdir=$work/lm_tiny; fi
  export_model "$spec"
  [ -f "$lmdir/gpt2.pt" ] || $py bench/gpt2.py "$lmdir" "${lm[@]}" --sequences 8 --steps "${lm[9]}"
  local tag=${spec//:/_}
  timed "l_$tag" --wait -- env OPENBLAS_NUM_THREADS=2 $py bench/peers_accuracy.py "$raw/l_$tag.json" \
    --model "$work/$tag.pt" --data "$work/${tag}_data.pt" --kind convnet --dhess "$dhess" --work "$work"
  timed l_lm --wait -- env OPENBLAS_NUM_THREADS=2 $py bench/peers_accuracy.py "$raw/l_lm.json" \
    --model "$lmdir/gpt2.pt" --data "$lmdir/gpt2_data.pt" --kind gpt "${lm[@]}" --dhess "$dhess" --work "$work"
  # ResNet-20 (--quick: the ResNet-8 shape), float32 as users run it: the top-k tasks at 1e-3 against ARPACK's
  # float64 eigenvalues; PyHessian at its default of 100 power iterations per eigenvalue.
  local r20=$work/resnet20
  if [ $quick = 1 ]; then r20=$work/resnet8; fi
  [ -f "$r20/resnet20.pt" ] || $py bench/resnet20.py "$r20" $([ $quick = 1 ] && echo --small)
  timed l_resnet20 --wait -- env OPENBLAS_NUM_THREADS=2 $py bench/peers_accuracy.py "$raw/l_resnet20.json" \
    --model "$r20/resnet20.pt" --data "$r20/resnet20_data.pt" --kind resnet --dtype float32 --tasks top1,top10 \
    --max-iter 100 --dhess "$dhess" --work "$work"
}

# a before d (d's Python route takes the fastest peer of a); the long d early, so that a
# partial run still has it.
for s in a c d b e f g h i j k l; do
  if want $s; then "section_$s"; report || echo "bench: report failed; the raw records are kept" >&2; fi
done
