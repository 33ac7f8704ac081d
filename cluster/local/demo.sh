#!/usr/bin/env bash
# One command from a fresh Debian machine to an answer: installs, builds, then runs the main job on
# built-in synthetic data (4 MPI ranks = 2 modelled nodes x 2 GPUs, Zipf-skewed routing) under the
# router variants, prints the comparison table and the seed claims measured on it, and writes
# demo-results.h5 (replaced if present).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
"$root/cluster/local/setup-debian.sh" release
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
extra=()
mpirun --version 2>/dev/null | grep -q "Open MPI" && extra+=(--oversubscribe)
out=${MOEBENCH_DEMO_OUT:-$root/demo-results.h5}
mpirun "${extra[@]}" -np 4 "$root/build/release/moebench" run --workload zipf --experts 64 --top-k 6 --layers 4 --steps 8 \
  --tokens-per-rank 4096 --hidden 2048 --dtype bf16 --nodes 2 --ranks-per-node 2 \
  --routers softmax_topk,sigmoid_topk,deepseek_v3,kern,etr,lapsum,remoe,expert_choice,sinkhorn --capacity-factor 1.25 --drop-policy position \
  --placement contiguous --backend sim --out "$out" --force
"$root/build/release/moebench" report "$out" --claims
