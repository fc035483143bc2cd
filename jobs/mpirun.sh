#!/bin/bash
# dhess under plain mpirun (Open MPI): a workstation, a set of machines listed in a
# hostfile, or inside an allocation of a scheduler (`sbatch -n 8 mpirun.sh` works too:
# mpirun then takes the ranks and hosts from SLURM). Edit the variables below, or set
# them in the environment: NP=8 MODEL=model.pt DATA=data.pt LOSS=cross_entropy ./mpirun.sh
#SBATCH --job-name=dhess-mpirun
#SBATCH --output=%x-%j.out

# --- what to compute: edit here, or override from the environment ---------------------
DHESS=${DHESS:-dhess}               # the dhess binary (a full path if it is not on PATH)
NP=${NP:-${SLURM_NTASKS:-4}}        # MPI ranks: one per core, or one per GPU
THREADS=${THREADS:-${SLURM_CPUS_PER_TASK:-1}}  # cores per rank (NP x THREADS <= cores)
HOSTFILE=${HOSTFILE:-}              # Open MPI hostfile ("node1 slots=32" per line); empty: this machine / the allocation
MODEL=${MODEL:-builtin:convnet}     # TorchScript file (torch.jit.script(m).save(...)) or builtin:convnet[:HW] / builtin:mlp
DATA=${DATA:-}                      # torch.save file with (inputs, targets); leave empty for builtin models
LOSS=${LOSS:-}                      # cross_entropy | mse | nll | bce_with_logits | none; required for a TorchScript model
EIGEN=${EIGEN:-all}                 # values | all | top:K | bottom:K | none
OUT=${OUT:-dhess-out}               # output directory; must not hold an earlier result (or add --force)
DEVICE=${DEVICE:-auto}              # cpu | cuda | auto: one GPU per rank where there are GPUs
DHESS_ARGS=${DHESS_ARGS:-}          # more flags, e.g. "--save-hessian --grid 2x2 --checkpoint ckpt --resume"
# ---------------------------------------------------------------------------------------

set -euo pipefail

export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

args=(--model "$MODEL" --eigen "$EIGEN" --out "$OUT" --device "$DEVICE" --threads "$THREADS")
[ -n "$LOSS" ] && args+=(--loss "$LOSS")
[ -n "$DATA" ] && args+=(--data "$DATA")
read -r -a extra <<< "$DHESS_ARGS"
mpi=(-n "$NP" --map-by "slot:PE=$THREADS" --bind-to core -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x MKL_NUM_THREADS)
[ -n "$HOSTFILE" ] && mpi+=(--hostfile "$HOSTFILE")

echo "dhess: $NP rank(s) x $THREADS thread(s)"
mpirun "${mpi[@]}" "$DHESS" "${args[@]}" "${extra[@]}"
