#!/usr/bin/env bash
# End-to-end tests of cluster/: cluster_tests.sh CASE MOEBENCH_BINARY WORK_DIR
#   scripts  launcher and merge input handling, Open MPI and MPICH command lines (no root needed)
#   slurm    a throw-away local Slurm (cluster/local/slurm-up) runs moebench.sbatch and a router
#            sweep (array + merge job); needs root, slurm-wlm and munge, else skipped (77)
#   slurm_requeue  moebench.sbatch stopped by SIGTERM to its batch shell (what --signal=B:TERM@120
#            sends before the time limit): moebench marks the file interrupted, the job requeues
#            itself, and the requeued run continues with --resume to a complete file
#   netns    2 namespace hosts x 2 ranks with shaped links (cluster/local/netns-up): calibration
#            finds two link classes as the shaping says, a verified mpi-backend run across them
#            with the model's error; needs root and ip netns, else skipped (77)
# Everything a case starts is torn down on exit, pass or fail; steps have time limits well inside
# ctest's TIMEOUT (which kills without running the teardown).
set -uo pipefail
case_name=$1 mb=$2 work=$3
src=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
fail() { echo "FAIL: $*"; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }
# expect_error REGEX CMD...: CMD must exit non-zero and print REGEX.
expect_error() {
  local regex=$1; shift
  local out rc
  out=$(timeout 120 "$@" 2>&1); rc=$?
  echo "$out"
  [ $rc -ne 0 ] || fail "expected an error from: $*"
  grep -qE -- "$regex" <<< "$out" || fail "expected /$regex/ from: $*"
}
export MOEBENCH_BIN=$mb OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run_args=(--workload zipf --experts 16 --top-k 2 --layers 2 --steps 2 --tokens-per-rank 256 --hidden 512 --progress off)

case $case_name in
scripts)
  for f in "$src"/cluster/mpirun/run.sh "$src"/cluster/slurm/*.sh "$src"/cluster/slurm/*.sbatch "$src"/cluster/local/slurm-* "$src"/cluster/local/netns-*; do
    bash -n "$f" || fail "$f: syntax error"
  done
  printf 'nodeA slots=2\nnodeB:2   # a comment\n\n' > hosts
  # Open MPI (the mpirun here)
  out=$("$src/cluster/mpirun/run.sh" --hostfile hosts --dry-run -- run --backend mpi 2>&1) || fail "dry run failed: $out"
  echo "$out"
  for want in "(openmpi, 2 hosts x 2 ranks)" "-np 4 --map-by ppr:2:node --hostfile" "-x OMPI_ALLOW_RUN_AS_ROOT" "run --backend mpi --nodes 2 --ranks-per-node 2" "nodeA slots=2" "nodeB slots=2"; do
    grep -qF -- "$want" <<< "$out" || fail "Open MPI command lacks '$want'"
  done
  # MPICH (hydra): a stand-in mpirun that only answers --version
  mkdir -p fake && printf '#!/bin/sh\necho "HYDRA build details:"\necho "    Version: 4.0.2"\n' > fake/mpiexec && chmod +x fake/mpiexec
  out=$(NCCL_IB_HCA=mlx5 "$src/cluster/mpirun/run.sh" --mpirun "$work/fake/mpiexec" --hostfile hosts --np 2 --rsh /bin/true --dry-run -- calibrate --out x.ini 2>&1) || fail "MPICH dry run failed: $out"
  echo "$out"
  for want in "(mpich, 1 hosts x 2 ranks)" "-n 2 -ppn 2 -f" "-launcher ssh -launcher-exec /bin/true" "calibrate --out x.ini --nodes 1 --ranks-per-node 2" "nodeA:2"; do
    grep -qF -- "$want" <<< "$out" || fail "MPICH command lacks '$want'"
  done
  grep -qF -- "-x NCCL" <<< "$out" && fail "MPICH command got Open MPI's -x"
  # The user's shape wins; bad input is one line naming file, line and value
  out=$("$src/cluster/mpirun/run.sh" --hostfile hosts --dry-run -- run --ranks-per-node 4 2>&1) || fail "dry run failed"
  grep -qF -- "--nodes 2" <<< "$out" && fail "added --nodes although the user gave --ranks-per-node"
  printf 'nodeA slots=2\nnodeB slots=two\n' > bad_hosts
  expect_error "^run.sh: --hostfile bad_hosts: line 2: slots = 'two': need a positive integer$" "$src/cluster/mpirun/run.sh" --hostfile bad_hosts --dry-run -- run
  expect_error "^run.sh: --np 5 is not a multiple of --ranks-per-node 2$" "$src/cluster/mpirun/run.sh" --hostfile hosts --np 5 --dry-run -- run
  expect_error "^run.sh: --np 6 at 2 per host needs 3 hosts, the layout has 2$" "$src/cluster/mpirun/run.sh" --hostfile hosts --np 6 --dry-run -- run
  expect_error "^run.sh: unknown option '--routers'" "$src/cluster/mpirun/run.sh" --routers x -- run
  expect_error "^run.sh: --bin /nonexistent: no moebench binary" "$src/cluster/mpirun/run.sh" --bin /nonexistent -- run
  # run.sh really launches (this host, 2 ranks), then merge.sh builds one table of two files
  mkdir -p sweep
  "$src/cluster/mpirun/run.sh" --np 2 --mpi-arg --oversubscribe -- run "${run_args[@]}" --routers softmax_topk,etr --out sweep/a.h5 > a.txt 2>&1 || { cat a.txt; fail "run.sh run failed"; }
  grep -q "EP 2 = 1 nodes x 2 ranks" a.txt || { cat a.txt; fail "run.sh did not pass the layout"; }
  "$src/cluster/mpirun/run.sh" --np 2 --mpi-arg --oversubscribe -- run "${run_args[@]}" --routers lapsum --placement round_robin --out sweep/b_rr.h5 > b.txt 2>&1 || { cat b.txt; fail "second run failed"; }
  "$src/cluster/slurm/merge.sh" sweep > merged.txt || fail "merge failed"
  cat merged.txt
  [ -f sweep/comparison.txt ] || fail "merge.sh wrote no comparison.txt"
  grep -qE "^a +softmax_topk " merged.txt && grep -qE "^a +etr " merged.txt && grep -qE "^b_rr +lapsum " merged.txt || fail "merged table lacks a row"
  [ "$(grep -cE '^(a|b_rr) ' merged.txt)" -eq 5 ] || fail "expected 3 table rows + 2 run lines"
  grep -qE "^file +router +act/tok" merged.txt || fail "merged table has no header"
  echo "not hdf5" > sweep/c.h5
  expect_error "^merge.sh: sweep/c.h5: report failed" "$src/cluster/slurm/merge.sh" sweep
  mkdir -p empty
  expect_error "^merge.sh: empty: no .h5 results files in the folder$" "$src/cluster/slurm/merge.sh" empty
  # The job scripts refuse to run outside a job, and the array checks its list
  expect_error "not inside a Slurm job" env -u SLURM_NTASKS MOEBENCH_ROOT="$src" bash "$src/cluster/slurm/moebench.sbatch"
  expect_error "array task 2 but LIST has 2 items \(use --array=0-1\)" env SLURM_NTASKS=2 SLURM_ARRAY_TASK_ID=2 LIST=softmax_topk:etr MOEBENCH_ROOT="$src" bash "$src/cluster/slurm/moebench-array.sbatch"
  expect_error "'--export=ROUTERS=etr' came after the script's name, so sbatch gave it to the script: sbatch options go before the script's name" env SLURM_NTASKS=2 MOEBENCH_ROOT="$src" bash "$src/cluster/slurm/moebench.sbatch" --export=ROUTERS=etr
  expect_error "^sweep.sh: 'experts': sweep routers or placements$" "$src/cluster/slurm/sweep.sh" experts 1,2
  ;;

slurm)
  [ "$(id -u)" -eq 0 ] || skip "needs root (the local Slurm runs as SlurmUser=root)"
  for b in slurmctld slurmd munged sbatch; do command -v $b > /dev/null || skip "no $b: apt-get install slurm-wlm munge"; done
  sdir=$(mktemp -d /tmp/moebench-slurm-test.XXXXXX)
  rmdir "$sdir"
  trap '"$src/cluster/local/slurm-down" "$sdir"' EXIT
  env_line=$("$src/cluster/local/slurm-up" --dir "$sdir") || fail "slurm-up failed"
  eval "$env_line"
  [ "$MOEBENCH_SLURM_DIR" = "$sdir" ] || fail "slurm-up used another folder"
  # wait_job ID: waits until the job has left the queue (at most 120 s, and never past 300 s of
  # the test); prints its final state
  wait_job() {
    local s
    for _ in $(seq 240); do
      [ $SECONDS -lt 300 ] || break
      s=$(scontrol -o show job "$1" 2>/dev/null | grep -oE 'JobState=[A-Z_]+' | head -1)
      case $s in JobState=PENDING|JobState=RUNNING|JobState=CONFIGURING|JobState=COMPLETING|"") sleep 0.5 ;; *) echo "${s#JobState=}"; return ;; esac
    done
    echo TIMEOUT
  }
  # 1. plain sbatch with mpirun (the issue's feasibility check)
  id=$(sbatch --parsable -n 2 -o "$work/plain-%j.out" --wrap 'mpirun --oversubscribe -np $SLURM_NTASKS hostname') || fail "sbatch failed"
  [ "$(wait_job "$id")" = COMPLETED ] || { cat plain-*.out; fail "plain mpirun job did not complete"; }
  [ "$(grep -c . "plain-$id.out")" -eq 2 ] || { cat "plain-$id.out"; fail "expected 2 lines from 2 ranks"; }
  # 2. moebench.sbatch as a user submits it: one node x 4 tasks modelled as 2 nodes x 2, mpi backend.
  # The node advertises more CPUs than this machine has: waiting ranks must yield, or MPI crawls.
  export MOEBENCH_ROOT=$src OUTROOT=$work/out OMPI_MCA_mpi_yield_when_idle=1
  id=$(sbatch --parsable --nodes=1 --ntasks-per-node=4 --gpus-per-node=0 --cpus-per-task=1 -o "$work/job-%j.out" \
      --export=ALL,ROUTERS=softmax_topk:etr,EP=4,RANKS_PER_NODE=2 "$src/cluster/slurm/moebench.sbatch" "${run_args[@]}" --warmup 1 --iters 2) || fail "sbatch moebench.sbatch failed"
  st=$(wait_job "$id"); cat "job-$id.out"
  [ "$st" = COMPLETED ] || fail "moebench.sbatch ended $st"
  res=out/$id/results.h5
  [ -f "$res" ] && [ -f "out/$id/report.txt" ] || fail "no $res or report.txt"
  "$mb" report "$res" > rep.txt || fail "report of the job's results failed"
  cat rep.txt
  grep -q "status: complete, 2 steps" rep.txt || fail "the job's results are not complete"
  grep -q "EP size 4 on 4 processes" rep.txt || fail "not 4 processes"
  grep -qE "^softmax_topk .*%$" rep.txt && grep -qE "^etr .*%$" rep.txt || fail "a router or its measured/model columns are missing"
  grep -q "backend mpi" "job-$id.out" || fail "the job did not pick the mpi backend without GPUs"
  h5dump -d /runs/etr/tokens_lost "$res" | grep -qE "\(0,0,0\): 0, 0, 0, 0" || fail "integrity counts missing or not zero"
  # 2b. the srun launcher (PMIx) with calibration first in the same job
  id=$(sbatch --parsable --nodes=1 --ntasks-per-node=4 --gpus-per-node=0 --cpus-per-task=1 -o "$work/srun-%j.out" \
      --export=ALL,ROUTERS=etr,LAUNCHER=srun,CALIBRATE=1,CALIBRATE_ARGS="-e 64K -n 2" "$src/cluster/slurm/moebench.sbatch" "${run_args[@]}" --warmup 1 --iters 1) || fail "sbatch (srun) failed"
  st=$(wait_job "$id"); cat "srun-$id.out"
  [ "$st" = COMPLETED ] || fail "moebench.sbatch with LAUNCHER=srun ended $st"
  grep -q "^\[intra\]" "out/$id/results.topology.ini" || fail "no calibrated topology beside the results"
  "$mb" report "out/$id/results.h5" | grep -q -- "--topology $work/out/$id/results.topology.ini" || fail "the run did not use the calibrated topology"
  # 3. a router sweep: array of 3 + merge job after it
  out=$(MOEBENCH_ROOT=$src OUTROOT=$work/out SWEEP_ID=s1 EP=4 RANKS_PER_NODE=2 "$src/cluster/slurm/sweep.sh" routers softmax_topk,etr,lapsum \
      --nodes=1 --ntasks-per-node=4 --gpus-per-node=0 --cpus-per-task=1 --output="$work/arr-%A_%a.out" -- "${run_args[@]}" --warmup 1 --iters 1) || fail "sweep.sh failed: $out"
  echo "$out"
  arr=$(grep -oE 'array job [0-9]+' <<< "$out" | grep -oE '[0-9]+'); mj=$(grep -oE 'merge job [0-9]+' <<< "$out" | grep -oE '[0-9]+')
  [ -n "$arr" ] && [ -n "$mj" ] || fail "sweep.sh printed no job ids"
  st=$(wait_job "$mj")
  cat arr-*.out out/s1/merge-*.out 2>/dev/null
  [ "$st" = COMPLETED ] || fail "merge job ended $st"
  for t in 0 1 2; do [ "$(wait_job "${arr}_$t")" = COMPLETED ] || fail "array task $t did not complete"; done
  cmp=out/s1/comparison.txt
  [ -f "$cmp" ] || fail "no $cmp"
  for r in softmax_topk etr lapsum; do grep -qE "^$r +$r +[0-9]" "$cmp" || fail "comparison lacks $r"; done
  # 4. a failing array task (item beyond the list) fails its job, with the reason in its output
  id=$(sbatch --parsable --array=0-1 --nodes=1 --ntasks-per-node=2 --gpus-per-node=0 --cpus-per-task=1 -o "$work/bad-%A_%a.out" \
      --export=ALL,LIST=softmax_topk "$src/cluster/slurm/moebench-array.sbatch" "${run_args[@]}") || fail "sbatch failed"
  [ "$(wait_job "${id}_1")" = FAILED ] || fail "array task 1 should fail"
  grep -q "array task 1 but LIST has 1 items" "bad-${id}_1.out" || fail "no reason in the failed task's output"
  ;;

slurm_requeue)
  [ "$(id -u)" -eq 0 ] || skip "needs root (the local Slurm runs as SlurmUser=root)"
  for b in slurmctld slurmd munged sbatch scontrol h5dump; do command -v $b > /dev/null || skip "no $b: apt-get install slurm-wlm munge hdf5-tools"; done
  sdir=$(mktemp -d /tmp/moebench-slurm-test.XXXXXX)
  rmdir "$sdir"
  trap '"$src/cluster/local/slurm-down" "$sdir"' EXIT
  env_line=$("$src/cluster/local/slurm-up" --dir "$sdir") || fail "slurm-up failed"
  eval "$env_line"
  export MOEBENCH_ROOT=$src OUTROOT=$work/out OMPI_MCA_mpi_yield_when_idle=1
  args=(--workload zipf --experts 16 --top-k 2 --layers 2 --steps 1500 --tokens-per-rank 2000 --hidden 64 --backend sim)
  id=$(sbatch --parsable --nodes=1 --ntasks-per-node=2 --gpus-per-node=0 --cpus-per-task=1 -o "$work/rq-%j.out" \
      --export=ALL,ROUTERS=deepseek_v3:remoe,EP=2,RANKS_PER_NODE=2 "$src/cluster/slurm/moebench.sbatch" "${args[@]}") || fail "sbatch failed"
  res=out/$id/results.h5
  steps_done() { h5dump -a /steps_done "$res" 2> /dev/null | sed -n 's/^ *(0): \([0-9]*\)$/\1/p'; }
  for _ in $(seq 240); do [ "$(steps_done)" -gt 3 ] 2> /dev/null && break; sleep 0.5; done
  [ "$(steps_done)" -gt 3 ] 2> /dev/null || { cat rq-*.out; fail "the job wrote no step within 120 s"; }
  # SIGTERM to the batch shell, as --signal=B:TERM@120 delivers it (scancel --batch would also
  # cancel the job on this Slurm version)
  bpid=$(pgrep -f slurm_script | head -1)
  [ -n "$bpid" ] || fail "no batch script process"
  kill -TERM "$bpid"
  # interrupted -> requeued -> pending -> running -> completed (at most 300 s)
  st=""
  for _ in $(seq 600); do
    st=$(scontrol -o show job "$id" 2>/dev/null | grep -oE 'JobState=[A-Z_]+' | head -1)
    [ "$st" = JobState=COMPLETED ] || [ "$st" = JobState=FAILED ] || [ "$st" = JobState=CANCELLED ] && break
    sleep 0.5
  done
  cat "rq-$id.out"
  [ "$st" = JobState=COMPLETED ] || fail "the job ended ${st:-nowhere} (expected COMPLETED after a requeue)"
  grep -q "SIGTERM (time limit?)" "rq-$id.out" || fail "the batch script did not see the SIGTERM"
  grep -q "interrupted; requeueing $id" "rq-$id.out" || fail "the job did not requeue itself"
  grep -q "resumed after step" "rq-$id.out" || fail "the requeued run did not resume"
  "$mb" report "$res" | grep -q "status: complete, 1500 steps" || fail "the results are not complete"
  h5dump -a /resumed "$res" | grep -q "resumed after step" || fail "the file does not record the resume"
  ;;
netns)
  [ "$(id -u)" -eq 0 ] || skip "needs root (ip netns)"
  command -v ip > /dev/null && command -v tc > /dev/null || skip "no ip/tc: apt-get install iproute2"
  command -v unshare > /dev/null || skip "no unshare (util-linux)"
  # What netns-up needs from the kernel: namespaces, veth, bridge, tbf (probed in a namespace of its own)
  probe=mbp$$
  ip netns add "$probe" 2> /dev/null || skip "cannot create network namespaces here"
  why=""
  ip -n "$probe" link add v0 type veth peer name v1 2> /dev/null || why="no veth"
  [ -n "$why" ] || ip -n "$probe" link add b0 type bridge 2> /dev/null || why="no bridge"
  [ -n "$why" ] || tc -n "$probe" qdisc add dev v0 root tbf rate 100mbit burst 16384 latency 100ms 2> /dev/null || why="no tbf qdisc"
  ip netns del "$probe"
  [ -z "$why" ] || skip "the kernel lacks what netns-up needs: $why"
  name=mbt$(( $$ % 100000 )) mbit=160 slots=2
  trap '"$src/cluster/local/netns-down" --name "$name"' EXIT
  "$src/cluster/local/netns-up" 2 $slots --inter-mbit $mbit --name "$name" || fail "netns-up failed"
  sent() { tc -s -n "$name-h0" qdisc show dev eth0 | grep -oE 'Sent [0-9]+' | grep -oE '[0-9]+'; }
  before=$(sent)
  timeout 150 "$src/cluster/local/netns-run" --name "$name" -- calibrate -e 8M -w 1 -n 3 --out m.ini > cal.txt 2>&1 || { cat cal.txt; fail "calibrate across the namespace hosts failed"; }
  after=$(sent)
  cat cal.txt
  # Two link classes measured, with the figures the shaping allows: a host link of MBIT Mbit/s
  # shared by its ranks gives each at most MBIT/SLOTS; MPI over TCP reaches part of it.
  grep -qE "^# intra 8388608 " m.ini && grep -qE "^# inter 8388608 " m.ini || fail "calibration lacks a link class"
  intra_GBps=$(awk -F' = ' '/^\[intra\]/{s=1} s && /^bandwidth_GBps/{print $2; exit}' m.ini)
  inter_Gbps=$(awk -F' = ' '/^\[inter\]/{s=1} s && /^bandwidth_Gbps/{print $2; exit}' m.ini)
  share_Gbps=$(awk -v m=$mbit -v s=$slots 'BEGIN{print m / s / 1000}')
  echo "calibrated: intra ${intra_GBps} GB/s, inter ${inter_Gbps} Gb/s; shaped share per rank ${share_Gbps} Gb/s"
  awk -v i="$inter_Gbps" -v s="$share_Gbps" 'BEGIN{exit !(i <= 1.1 * s && i >= 0.3 * s)}' || fail "inter ${inter_Gbps} Gb/s is not within 0.3..1.1 x the shaped share ${share_Gbps} Gb/s"
  awk -v a="$intra_GBps" -v e="$inter_Gbps" 'BEGIN{exit !(a * 8 >= 10 * e)}' || fail "intra ${intra_GBps} GB/s is not 10x the inter link"
  # The inter-host exchanges crossed the shaped link: at least the timed 8 MiB ones of ranks 0 and 1
  [ $((after - before)) -ge $((2 * 8388608 * 4)) ] || fail "only $((after - before)) bytes left host 0 through its link"
  # A verified mpi-backend run across the hosts with the calibrated model
  timeout 150 "$src/cluster/local/netns-run" --name "$name" -- run --workload zipf --experts 16 --top-k 2 --layers 2 --steps 2 --tokens-per-rank 512 \
      --hidden 2048 --dtype bf16 --routers softmax_topk,etr --backend mpi --topology m.ini --warmup 1 --iters 2 --progress off --out r.h5 > run.txt 2>&1 || { cat run.txt; fail "mpi run across the hosts failed"; }
  "$mb" report r.h5 > rep.txt || fail "report failed"
  cat rep.txt
  grep -qF "on 4 processes ($name-h0,$name-h0,$name-h1,$name-h1)" rep.txt || fail "ranks did not run 2 per namespace host"
  grep -q "status: complete, 2 steps" rep.txt || fail "run not complete"
  for r in softmax_topk etr; do
    for d in tokens_lost tokens_corrupted; do
      h5dump -d /runs/$r/$d r.h5 | grep -qE "\(0,0,0\): 0, 0, 0, 0" || fail "$r $d not zero"
    done
    h5dump -d /runs/$r/tokens_received r.h5 | grep -qE "\(0,0,0\): 0, 0, 0, 0" && fail "$r received nothing"
    grep -qE "^$r .* [0-9.]+%$" rep.txt || fail "no model error for $r"
  done
  echo "model error on 2 namespace hosts: $(grep -E '^(softmax_topk|etr) ' rep.txt | awk '{print $1" "$NF}' | tr '\n' ' ')"
  ;;
*) fail "unknown case $case_name" ;;
esac
echo PASS
