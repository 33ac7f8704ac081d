#!/usr/bin/env bash
# Launches moebench on hostfile clusters (or inside a Slurm allocation) with Open MPI or MPICH
# (Intel MPI: MPICH flags), one rank per GPU.
#
#   cluster/mpirun/run.sh [options] -- SUBCOMMAND [moebench options]
#   cluster/mpirun/run.sh --hostfile hosts --np 16 -- run --backend nccl --routers softmax_topk,etr ...
#
# Options:
#   --hostfile FILE      hosts, one a line: "host slots=N" (Open MPI), "host:N" (MPICH) or "host";
#                        either form works with either MPI (converted). Without it: the Slurm
#                        allocation when inside one, else this host.
#   --np N               ranks (default: hosts x --ranks-per-node, or the hostfile's slots, or SLURM_NTASKS)
#   --ranks-per-node R   ranks per host (default: the hostfile's slots when every host has the same,
#                        or SLURM_NTASKS_PER_NODE); with GPUs: GPUs per host
#   --rsh AGENT          remote shell instead of ssh (Open MPI plm_rsh_agent, MPICH -launcher-exec)
#   --btl LIST           Open MPI transports, e.g. vader,tcp,self (default: Open MPI's choice)
#   --mpi-arg ARG        one more word for mpirun, as is (repeat: --mpi-arg --bind-to --mpi-arg numa)
#   --mpirun PATH        launcher (default: mpirun on PATH)
#   --bin PATH           moebench binary, same path on every host (default: $MOEBENCH_BIN, else
#                        build/release/moebench of this checkout)
#   --dry-run            print the command, run nothing
# For `run` and `calibrate`, --nodes and --ranks-per-node are added from the layout unless one of
# --nodes, --ranks-per-node, --ep-size or --config is given. Environment variables NCCL_*, UCX_*,
# CUDA_*, MOEBENCH_*, OMPI_ALLOW_RUN_AS_ROOT* and LD_LIBRARY_PATH reach every rank (Open MPI: -x;
# MPICH forwards the whole environment).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
die() { echo "run.sh: $*" >&2; exit 2; }
hostfile="" np="" rpn="" rsh="" btl="" mpirun=mpirun bin=${MOEBENCH_BIN:-$root/build/release/moebench} dry=0
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --hostfile) hostfile=${2:?--hostfile needs a value}; shift 2 ;;
    --np) np=${2:?--np needs a value}; shift 2 ;;
    --ranks-per-node) rpn=${2:?--ranks-per-node needs a value}; shift 2 ;;
    --rsh) rsh=${2:?--rsh needs a value}; shift 2 ;;
    --btl) btl=${2:?--btl needs a value}; shift 2 ;;
    --mpi-arg) extra+=("${2?--mpi-arg needs a value}"); shift 2 ;;
    --mpirun) mpirun=${2:?--mpirun needs a value}; shift 2 ;;
    --bin) bin=${2:?--bin needs a value}; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (moebench's own options go after --)" ;;
  esac
done
[ $# -ge 1 ] || die "no moebench subcommand after -- (e.g. -- run --backend nccl ...)"
for v in np rpn; do
  [ -z "${!v}" ] || [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v/rpn/ranks-per-node} = '${!v}': need a positive integer"
done
[ -x "$bin" ] || die "--bin $bin: no moebench binary there (build it: cmake --preset release && cmake --build --preset release)"
command -v "$mpirun" > /dev/null || die "--mpirun $mpirun: not found (install Open MPI or MPICH)"
version=$("$mpirun" --version 2>&1 || true)
if grep -qE "Open MPI|OpenRTE" <<< "$version"; then flavor=openmpi
elif grep -qiE "HYDRA|MPICH|Intel\(R\) MPI" <<< "$version"; then flavor=mpich
else die "--mpirun $mpirun: neither Open MPI nor MPICH (--version says: $(head -1 <<< "$version"))"; fi

# Layout: hosts and slots from the hostfile, or from Slurm.
nodes="" slots_total=0 uniform_slots=""
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -n "$hostfile" ]; then
  [ -r "$hostfile" ] || die "--hostfile $hostfile: cannot read the file"
  nodes=0 uniform_slots=unset
  : > "$tmp/hosts"
  lineno=0
  while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    line=${line%%#*}
    read -r -a words <<< "$line" || true
    [ ${#words[@]} -gt 0 ] || continue
    host=${words[0]} slots=""
    if [[ $host == *:* ]]; then slots=${host#*:}; host=${host%%:*}; fi
    for w in "${words[@]:1}"; do
      case $w in
        slots=*) slots=${w#slots=} ;;
        max_slots=*|max-slots=*) ;;
        *) die "--hostfile $hostfile: line $lineno: field '$w' not understood (want 'host slots=N' or 'host:N')" ;;
      esac
    done
    [ -z "$slots" ] || [[ $slots =~ ^[1-9][0-9]*$ ]] || die "--hostfile $hostfile: line $lineno: slots = '$slots': need a positive integer"
    s=${slots:-${rpn:-1}}
    echo "$host $s" >> "$tmp/hosts"
    nodes=$((nodes + 1)) slots_total=$((slots_total + s))
    if [ "$uniform_slots" = unset ]; then uniform_slots=$s; elif [ "$uniform_slots" != "$s" ]; then uniform_slots=""; fi
  done < "$hostfile"
  [ "$nodes" -gt 0 ] || die "--hostfile $hostfile: no hosts in the file"
  if [ $flavor = openmpi ]; then awk '{print $1" slots="$2}' "$tmp/hosts" > "$tmp/hostfile"; else awk '{print $1":"$2}' "$tmp/hosts" > "$tmp/hostfile"; fi
elif [ -n "${SLURM_JOB_ID:-}" ]; then
  nodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
  [ -n "${SLURM_NTASKS_PER_NODE:-}" ] && uniform_slots=${SLURM_NTASKS_PER_NODE%%(*}
  slots_total=${SLURM_NTASKS:-0}
  # SLURM_TASKS_PER_NODE "4(x2)" or "4,3": uniform only in the first form
  if [ -z "$uniform_slots" ] && [[ ${SLURM_TASKS_PER_NODE:-} =~ ^([0-9]+)(\(x[0-9]+\))?$ ]]; then uniform_slots=${BASH_REMATCH[1]}; fi
else
  nodes=1
fi
[ -n "$rpn" ] || rpn=$uniform_slots
if [ -z "$np" ]; then
  if [ -n "$rpn" ] && [ -n "$nodes" ]; then np=$((nodes * rpn))
  elif [ "$slots_total" -gt 0 ]; then np=$slots_total
  else die "give --np N (no hostfile and no Slurm allocation to count ranks from)"; fi
fi
if [ -z "$rpn" ]; then
  [ $((np % nodes)) -eq 0 ] || die "--np $np does not spread evenly over $nodes hosts; give --ranks-per-node"
  rpn=$((np / nodes))
fi
[ $((np % rpn)) -eq 0 ] || die "--np $np is not a multiple of --ranks-per-node $rpn"
used_nodes=$((np / rpn))
[ "$used_nodes" -le "$nodes" ] || [ -z "$hostfile${SLURM_JOB_ID:-}" ] || die "--np $np at $rpn per host needs $used_nodes hosts, the layout has $nodes"

# moebench arguments, with the layout when the user gave no shape.
sub=$1; shift
args=("$sub" "$@")
if [ "$sub" = run ] || [ "$sub" = calibrate ]; then
  shape_given=0
  for a in "$@"; do
    case $a in --nodes|--nodes=*|--ranks-per-node|--ranks-per-node=*|--ep-size|--ep-size=*|--config|--config=*) shape_given=1 ;; esac
  done
  [ $shape_given = 1 ] || args+=(--nodes "$used_nodes" --ranks-per-node "$rpn")
fi

cmd=("$mpirun")
if [ $flavor = openmpi ]; then
  cmd+=(-np "$np" --map-by "ppr:$rpn:node")
  [ -z "$hostfile" ] || cmd+=(--hostfile "$tmp/hostfile")
  [ -z "$rsh" ] || cmd+=(--mca plm_rsh_agent "$rsh")
  [ -z "$btl" ] || cmd+=(--mca btl "$btl")
  for v in $(compgen -e); do
    case $v in NCCL_*|UCX_*|CUDA_*|MOEBENCH_*|OMPI_ALLOW_RUN_AS_ROOT*|LD_LIBRARY_PATH) cmd+=(-x "$v") ;; esac
  done
else
  cmd+=(-n "$np" -ppn "$rpn")
  [ -z "$hostfile" ] || cmd+=(-f "$tmp/hostfile")
  [ -z "$rsh" ] || cmd+=(-launcher ssh -launcher-exec "$rsh")
  [ -z "$btl" ] || echo "run.sh: --btl is an Open MPI setting; ignored with MPICH" >&2
fi
cmd+=("${extra[@]}" "$bin" "${args[@]}")
echo "run.sh ($flavor, $used_nodes hosts x $rpn ranks):" "${cmd[@]}" >&2
if [ $dry = 1 ]; then
  [ -z "$hostfile" ] || { echo "run.sh: hostfile as given to $flavor:"; sed 's/^/  /' "$tmp/hostfile"; } >&2
  exit 0
fi
"${cmd[@]}"
