#!/usr/bin/env bash
# What tail completion (--trace-tail) adds to a replay's time: one assignment trace (the top-k of a
# zipf logit trace, E experts, top-k K), replayed by softmax_topk without completion (it reads only
# the recorded top-k) and with each tail model, alternating, best of REPS wall times each.
#   tests/bench/tail_overhead.sh [MOEBENCH] [E=64] [K=6] [TOKENS_PER_STEP=65536] [REPS=5]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mb=${1:-$root/build/release/moebench}
E=${2:-64} K=${3:-6} T=${4:-65536} reps=${5:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$mb" trace gen --workload zipf --experts "$E" --top-k "$K" --layers 2 --steps 4 --tokens "$T" --seq-len 256 \
  --out "$work/full.h5" >/dev/null
"$mb" trace truncate "$work/full.h5" --top-k "$K" --weights-are probabilities --out "$work/top.h5" >/dev/null
declare -A best
for ((i = 0; i < reps; i++)); do
  for m in none mass profile; do
    t0=$(date +%s.%N)
    "$mb" run --workload trace --trace "$work/top.h5" --routers softmax_topk --trace-tail "$m" --nodes 2 \
      --ranks-per-node 4 --backend sim --progress off --out "$work/r.h5" --force >/dev/null
    t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    if [ -z "${best[$m]:-}" ] || awk -v t="$t" -v b="${best[$m]}" 'BEGIN { exit !(t < b) }'; then best[$m]=$t; fi
  done
done
echo "replay of $((4 * T)) tokens x 2 layers, E=$E, k=$K, softmax_topk, best of $reps:"
for m in none mass profile; do
  printf "  --trace-tail %-8s %.3f s  (%+.0f%% vs none)\n" "$m" "${best[$m]}" \
    "$(awk -v a="${best[$m]}" -v b="${best[none]}" 'BEGIN { print 100 * (a / b - 1) }')"
done
