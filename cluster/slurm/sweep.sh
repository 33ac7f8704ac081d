#!/usr/bin/env bash
# Submits a sweep: a job array with one task per item (moebench-array.sbatch) and a merge job that
# runs after every task succeeded and writes one comparison report (merge.sh).
#   cluster/slurm/sweep.sh routers softmax_topk,etr,lapsum [sbatch options] [-- moebench run options]
#   cluster/slurm/sweep.sh placements contiguous,round_robin [sbatch options] [-- run options]
# sbatch options: give --partition=P, --account=A, --qos=Q in the = form to apply them to the merge job too.
# Environment as for moebench.sbatch (ROUTERS for a placement sweep, EP, BACKEND, TOPOLOGY, OUTROOT, ...).
# Prints the array and merge job ids and the folder the results and comparison.txt go to.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
[ $# -ge 2 ] || { echo "usage: $0 routers|placements ITEM,ITEM,... [sbatch options] [-- moebench run options]" >&2; exit 2; }
sweep=$1 list=$2; shift 2
case $sweep in routers|placements) ;; *) echo "sweep.sh: '$sweep': sweep routers or placements" >&2; exit 2 ;; esac
sb=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do sb+=("$1"); shift; done
[ "${1:-}" != -- ] || shift
read -r -a items <<< "$(tr ',:' '  ' <<< "$list")"
[ ${#items[@]} -ge 1 ] || { echo "sweep.sh: empty list" >&2; exit 2; }
command -v sbatch > /dev/null || { echo "sweep.sh: sbatch not found (not on a Slurm cluster?)" >&2; exit 2; }
outroot=${OUTROOT:-$PWD/moebench-out}
sweep_id=${SWEEP_ID:-sweep-$(date +%Y%m%d-%H%M%S)-$$}
export OUTROOT=$outroot SWEEP_ID=$sweep_id SWEEP=$sweep LIST=$(tr ' ' ':' <<< "${items[*]}") MOEBENCH_ROOT=${MOEBENCH_ROOT:-$root}
mkdir -p "$outroot/$sweep_id"
# The merge job is one small task: it takes only the partition/account/qos of the options given.
msb=()
for o in "${sb[@]}"; do case $o in --partition=*|--account=*|--qos=*) msb+=("$o") ;; esac; done
array=$(sbatch --parsable --export=ALL --array=0-$((${#items[@]} - 1)) "${sb[@]}" "$root/cluster/slurm/moebench-array.sbatch" "$@")
array=${array%%;*}
merge=$(sbatch --parsable --export=ALL --dependency=afterok:"$array" --job-name=moebench-merge --nodes=1 --ntasks=1 "${msb[@]}" \
  --output="$outroot/$sweep_id/merge-%j.out" --wrap "'$root/cluster/slurm/merge.sh' '$outroot/$sweep_id'")
merge=${merge%%;*}
echo "sweep.sh: array job $array (${#items[@]} tasks: ${items[*]}), merge job $merge; results and comparison.txt in $outroot/$sweep_id"
