# Shared by moebench.sbatch and moebench-array.sbatch (sourced inside the job; not run by itself).
# Reads the job's environment and arguments (see README.md here) and defines moebench_launch and
# moebench_job_run.
set -euo pipefail
job_die() { echo "moebench job: $*" >&2; exit 2; }
list_words() { tr ',:' '  ' <<< "$1"; }              # "a,b" or "a:b" -> "a b" (--export splits on commas)
for a in "$@"; do
  case $a in --export|--export=*|--array|--array=*|--nodes=*|--ntasks*|--gpus*|--partition*|--time=*)
    job_die "'$a' came after the script's name, so sbatch gave it to the script: sbatch options go before the script's name" ;;
  esac
done
BIN=${MOEBENCH_BIN:-$MOEBENCH_ROOT/build/release/moebench}
[ -x "$BIN" ] || job_die "MOEBENCH_BIN=$BIN: no moebench binary (build it on a shared filesystem, or set MOEBENCH_BIN)"
NTASKS=${SLURM_NTASKS:?not inside a Slurm job (SLURM_NTASKS unset)}
JOB_NODES=${SLURM_JOB_NUM_NODES:-1}
TPN=${SLURM_NTASKS_PER_NODE:-$((NTASKS / JOB_NODES))}
TPN=${TPN%%(*}
EP=${EP:-$NTASKS}
RANKS_PER_NODE=${RANKS_PER_NODE:-$TPN}
gpus=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-0}}
gpus=${gpus##*:}
[[ $gpus =~ ^[0-9]+$ ]] || gpus=0
BACKEND=${BACKEND:-$([ "$gpus" -gt 0 ] && echo nccl || echo mpi)}
LAUNCHER=${LAUNCHER:-mpirun}
for v in EP RANKS_PER_NODE; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || job_die "$v = '${!v}': need a positive integer"; done
[ -z "${TOPOLOGY:-}" ] || [ -r "$TOPOLOGY" ] || job_die "TOPOLOGY = '$TOPOLOGY': cannot read the file"
[ "$LAUNCHER" = mpirun ] || [ "$LAUNCHER" = srun ] || job_die "LAUNCHER = '$LAUNCHER': use mpirun or srun"
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}

# moebench SUBCOMMAND ARGS... on every task of the job (one rank per task, one task per GPU).
moebench_launch() {
  if [ "$LAUNCHER" = srun ]; then
    srun --mpi="${SRUN_MPI:-pmix}" --ntasks="$NTASKS" --ntasks-per-node="$TPN" --cpu-bind="${SRUN_CPU_BIND:-none}" "$BIN" "$@"
  else
    local margs=() a
    for a in ${MPIRUN_ARGS:-}; do margs+=(--mpi-arg "$a"); done
    "$MOEBENCH_ROOT/cluster/mpirun/run.sh" --bin "$BIN" --np "$NTASKS" --ranks-per-node "$TPN" "${margs[@]}" -- "$@"
  fi
}

# has_opt NAME ARGS...: whether ARGS hold --NAME (as "--NAME V" or "--NAME=V")
has_opt() {
  local n=$1 a; shift
  for a in "$@"; do case $a in "--$n"|"--$n="*) return 0 ;; esac; done
  return 1
}

# moebench_job_run OUT.h5 [moebench run options]: calibrates first when CALIBRATE=1 (the topology
# file goes beside the results), then runs with the job's shape, backend and topology; options the
# user gave win over these.
moebench_job_run() {
  local out=$1; shift
  local add=()
  if ! has_opt config "$@" && ! has_opt nodes "$@" && ! has_opt ranks-per-node "$@" && ! has_opt ep-size "$@"; then
    add+=(--ep-size "$EP" --ranks-per-node "$RANKS_PER_NODE")
  fi
  has_opt backend "$@" || add+=(--backend "$BACKEND")
  has_opt progress "$@" || add+=(--progress lines)
  if ! has_opt topology "$@"; then
    if [ "${CALIBRATE:-0}" = 1 ]; then
      local ini=${out%.h5}.topology.ini
      # shellcheck disable=SC2086
      moebench_launch calibrate --backend mpi --ranks-per-node "$TPN" ${CALIBRATE_ARGS:-} --out "$ini" --force
      add+=(--topology "$ini")
    elif [ -n "${TOPOLOGY:-}" ]; then
      add+=(--topology "$TOPOLOGY")
    fi
  fi
  # --resume: a requeued job (same job id, same OUTROOT/JOBID) continues its partial file; a new one
  # starts it (--resume of a missing file is a new run).
  has_opt force "$@" || has_opt resume "$@" || add+=(--resume)
  moebench_launch run "${add[@]}" --out "$out" "$@"
}

echo "moebench job ${SLURM_JOB_ID:-?}: $NTASKS tasks on $JOB_NODES nodes ($TPN per node, GPUs per node: $gpus), EP $EP ($RANKS_PER_NODE per modelled node), backend $BACKEND, launcher $LAUNCHER"
