#!/usr/bin/env bash
# One command from a fresh Debian machine to an answer: installs, builds, then runs the main job
# and prints the comparison table and the seed claims measured on it (demo-results.h5, replaced if
# present).
#   cluster/local/demo.sh            built-in synthetic data: 4 MPI ranks = 2 modelled nodes x 2 GPUs,
#                                    Zipf-skewed routing, nine router variants
#   cluster/local/demo.sh flame      the real FLAME-MoE-290M trace from ../shared/traces (when present):
#                                    converted, then replayed under every router: recorded and
#                                    softmax/sigmoid top-k on what it recorded, the others on its
#                                    tail completed by --trace-tail mass
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
what=${1:-synthetic}
"$root/cluster/local/setup-debian.sh" release
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
extra=()
mpirun --version 2>/dev/null | grep -q "Open MPI" && extra+=(--oversubscribe)
mb="$root/build/release/moebench"
out=${MOEBENCH_DEMO_OUT:-$root/demo-results.h5}
case $what in
synthetic)
  mpirun "${extra[@]}" -np 4 "$mb" run --workload zipf --experts 64 --top-k 6 --layers 4 --steps 8 \
    --tokens-per-rank 4096 --hidden 2048 --dtype bf16 --nodes 2 --ranks-per-node 2 \
    --routers softmax_topk,sigmoid_topk,deepseek_v3,kern,etr,lapsum,remoe,expert_choice,sinkhorn --capacity-factor 1.25 --drop-policy choice_first \
    --placement contiguous --backend sim --out "$out" --force
  ;;
flame)
  flame="$root/../shared/traces/flame-moe-290m"
  if [ ! -f "$flame/layer02.csv" ]; then
    echo "demo: $flame not found (the real traces sit in ../shared beside the project); run the synthetic demo instead" >&2
    exit 1
  fi
  trace=${out%.h5}-flame-trace.h5
  # The shard is one stream of two documents: the end-of-document token (id 0, row 1120) ends the
  # first. A token table gives every row its sequence and its token id.
  table=${out%.h5}-flame-tokens.csv
  awk 'BEGIN { print "sequence,token" } { print s "," $1; if ($1 == 0) s++ }' s=0 "$flame/token_ids.txt" > "$table"
  "$mb" trace convert --from csv --in "$flame"/layer0{2..9}.csv --layers 2-9 --weights-are probabilities \
    --token-table "$table" --model flame-moe-290m --out "$trace" --force
  "$mb" trace info "$trace"
  # Every router: recorded and softmax/sigmoid top-6 read only what the trace recorded; the others
  # route on the unrecorded probabilities completed by --trace-tail mass (marked in the report).
  # Two documents for four EP ranks: contiguous blocks of tokens (trace.split=block).
  mpirun "${extra[@]}" -np 4 "$mb" run --workload trace --trace "$trace" --workload-arg trace.split=block \
    --hidden 1024 --dtype bf16 --nodes 2 --ranks-per-node 2 \
    --routers recorded,softmax_topk,sigmoid_topk,deepseek_v3,kern,etr,lapsum,remoe,expert_choice,sinkhorn,base,beta \
    --trace-tail mass --capacity-factor 1.25 --drop-policy choice_first \
    --placement contiguous --backend sim --out "$out" --force
  ;;
*) echo "usage: cluster/local/demo.sh [synthetic|flame]" >&2; exit 2 ;;
esac
"$mb" report "$out" --claims
