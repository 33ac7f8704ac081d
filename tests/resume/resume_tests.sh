#!/usr/bin/env bash
# Interrupted runs, resumed: resume_tests.sh CASE MOEBENCH WORKDIR
#   kill9_npN    kill -9 one process at a random point (3 seeds); --resume gives the file of an
#                uninterrupted run (every router, the placement planner's EMA and replicas)
#   signals_np2  SIGTERM to mpiexec, SIGINT to one process: the step is finished, status
#                interrupted, the process exits 143 / 130; --resume finishes it
#   refuse_np2   --resume with other options, other process counts, fewer steps, a foreign file: one
#                line, exit 2, the file untouched; --steps raised extends a complete run
#   trace_np2    the recorded router on a trace, killed and resumed
#   write_failures_np2  the disk fills up mid-run (a small tmpfs; root) and the folder is removed
#                mid-run: one clean error, a readable partial file, --resume finishes it
set -u
case_name=$1
mb=$2
work=$3
here=$(cd "$(dirname "$0")" && pwd)
mpiexec=${MOEBENCH_MPIEXEC:-mpiexec --oversubscribe}
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
fail() { echo "FAIL: $*"; exit 1; }
same() { bash "$here/same_results.sh" "$1" "$2" || fail "$2 differs from $1"; }
attr() { h5dump -a "/$2" "$1" 2>/dev/null | sed -n 's/^ *(0): "\(.*\)"$/\1/p' | sed 's/\\000//g'; }
attr_int() { h5dump -a "/$2" "$1" 2>/dev/null | sed -n 's/^ *(0): \([0-9-]*\)$/\1/p'; }
routers=$("$mb" list routers | awk 'NR > 1 && $1 != "recorded" {print $1}' | paste -sd, -)
shape="--experts 16 --top-k 2 --layers 2 --hidden 64 --progress off --workload domain_shift --placement load_balanced --redundant-experts 2"

# kill_run SEED NP ARGS... (ending in --out FILE): starts the run, waits until FILE holds a
# seed-dependent number of steps (1 .. 3/4 of $steps), kills one of its processes with SIGKILL,
# waits for mpiexec. Returns 1 when the run ended first.
kill_run() {
  local seed=$1 np=$2; shift 2
  local out=${!#}
  local target=$(( 1 + (seed * 37 + 11) % (steps * 3 / 4) ))
  $mpiexec -n "$np" "$mb" "$@" > run.out 2>&1 &
  local mpid=$!
  for _ in $(seq 1200); do
    [ "$(attr_int "$out" steps_done 2> /dev/null)" -ge "$target" ] 2> /dev/null && break
    kill -0 "$mpid" 2> /dev/null || break
    sleep 0.05
  done
  local pids victim
  pids=($(pgrep -P "$mpid"))
  if [ ${#pids[@]} -eq 0 ]; then wait "$mpid"; echo "seed $seed: the run ended before step $target"; return 1; fi
  victim=${pids[$(( seed % ${#pids[@]} ))]}
  kill -9 "$victim" 2>/dev/null
  timeout 60 tail --pid="$mpid" -f /dev/null || fail "mpiexec did not end after kill -9"
  wait "$mpid" && { echo "seed $seed: the run ended before the kill"; return 1; }
  echo "seed $seed: killed process $victim at steps_done >= $target"
  return 0
}

# stop_run SIGNAL WHO ARGS...: starts the run, sends SIGNAL to mpiexec (WHO = mpiexec) or to its
# first process (WHO = rank) once the file holds 3 steps; waits (60 s at most). Sets rc.
stop_run() {
  local sig=$1 who=$2; shift 2
  local out=${!#}
  $mpiexec -n 2 "$mb" "$@" > stop.out 2>&1 &
  local mpid=$!
  for _ in $(seq 1200); do
    [ "$(attr_int "$out" steps_done 2> /dev/null)" -ge 3 ] 2> /dev/null && break
    sleep 0.05
  done
  if [ "$who" = mpiexec ]; then kill -"$sig" "$mpid"; else kill -"$sig" "$(pgrep -P "$mpid" | head -1)"; fi
  timeout 60 tail --pid="$mpid" -f /dev/null || fail "$sig: the run did not stop within 60 s"
  rc=0
  wait "$mpid" || rc=$?
  grep -v '^ ' stop.out | grep -i "stopping" || true
}

case $case_name in
kill9_np*)
  np=${case_name#kill9_np}
  # Every router on 1 and 2 processes; the stateful ones on 4 (oversubscribed collectives are slow).
  steps=40
  if [ "$np" -le 2 ]; then args=(run $shape --routers "$routers" --steps $steps --tokens-per-rank 1000)
  else steps=20; args=(run $shape --routers deepseek_v3,remoe,beta,softmax_topk --steps $steps --tokens-per-rank 250); fi
  $mpiexec -n "$np" "$mb" "${args[@]}" --out ref.h5 > ref.out 2>&1 || { cat ref.out; fail "reference run"; }
  resumed=0
  for seed in 1 2 3; do
    rm -f part.h5
    kill_run "$seed" "$np" "${args[@]}" --out part.h5 || continue
    if [ ! -e part.h5 ]; then echo "seed $seed: killed before the file was created"; continue; fi
    done_steps=$(attr_int part.h5 steps_done)
    echo "seed $seed: killed with steps_done = $done_steps, status $(attr part.h5 status)"
    "$mb" report part.h5 > /dev/null; rc=$?
    [ "$rc" -eq 3 ] || fail "seed $seed: report of the partial file exited $rc (3: readable, partial)"
    [ "$done_steps" -lt "$steps" ] || { echo "seed $seed: the run ended before the kill"; continue; }
    [ "$done_steps" -gt 0 ] && resumed=$((resumed + 1))
    timeout 120 $mpiexec -n "$np" "$mb" "${args[@]}" --out part.h5 --resume > resume.out 2>&1 || { cat resume.out; fail "seed $seed: --resume"; }
    grep -q "resumed after step $done_steps of $steps" resume.out || [ "$done_steps" -eq 0 ] || { cat resume.out; fail "seed $seed: no resume note"; }
    [ "$(attr part.h5 status)" = complete ] || fail "seed $seed: status after --resume"
    same ref.h5 part.h5
  done
  [ "$resumed" -ge 1 ] || fail "no seed killed the run after a complete step"
  ;;
signals_np2)
  steps=300
  args=(run $shape --routers deepseek_v3,remoe,beta --steps $steps --tokens-per-rank 500)
  $mpiexec -n 2 "$mb" "${args[@]}" --out ref.h5 > ref.out 2>&1 || fail "reference run"
  # SIGTERM to mpiexec (what Slurm and a shell's kill send): forwarded to every process.
  stop_run TERM mpiexec "${args[@]}" --out term.h5
  echo "mpiexec exit status after SIGTERM: $rc"
  grep -q "Terminated: stopping after step" stop.out || { cat stop.out; fail "SIGTERM: no stop message"; }
  [ "$(attr term.h5 status)" = interrupted ] || fail "SIGTERM: status $(attr term.h5 status), expected interrupted"
  timeout 120 $mpiexec -n 2 "$mb" "${args[@]}" --out term.h5 --resume > r1.out 2>&1 || { cat r1.out; fail "resume after SIGTERM"; }
  same ref.h5 term.h5
  # SIGINT to one process: that process's exit status is 130 (128 + SIGINT), the others stop at the same step.
  stop_run INT rank "${args[@]}" --out int.h5
  [ "$rc" -eq 130 ] || { cat stop.out; fail "SIGINT: exit status $rc, expected 130"; }
  [ "$(attr int.h5 status)" = interrupted ] || fail "SIGINT: status $(attr int.h5 status)"
  # One process alone: SIGTERM -> 143.
  "$mb" "${args[@]}" --out one.h5 > one.out 2>&1 &
  pid=$!
  for _ in $(seq 1200); do [ "$(attr_int one.h5 steps_done 2> /dev/null)" -ge 3 ] 2> /dev/null && break; sleep 0.05; done
  kill -TERM "$pid"
  wait "$pid"; rc=$?
  [ "$rc" -eq 143 ] || { cat one.out; fail "SIGTERM of a single process: exit status $rc, expected 143"; }
  [ "$(attr one.h5 status)" = interrupted ] || fail "single process: status"
  timeout 120 $mpiexec -n 2 "$mb" "${args[@]}" --out int.h5 --resume > r2.out 2>&1 || { cat r2.out; fail "resume after SIGINT"; }
  same ref.h5 int.h5
  ;;
refuse_np2)
  base=(run $shape --routers deepseek_v3,remoe)
  args=("${base[@]}" --tokens-per-rank 300)
  $mpiexec -n 2 "$mb" "${args[@]}" --steps 6 --out full.h5 > /dev/null || fail "full run"
  $mpiexec -n 2 "$mb" "${args[@]}" --steps 3 --out part.h5 > /dev/null || fail "short run"
  sum=$(md5sum part.h5)
  expect() {  # expect REGEX CMD...: exit 2, one line matching REGEX, part.h5 untouched
    local regex=$1; shift
    local out rc
    out=$(timeout 60 "$@" 2>&1); rc=$?
    echo "$out"
    [ "$rc" -eq 2 ] || fail "exit status $rc (expected 2) from: $*"
    [ "$(echo "$out" | grep -c 'error')" -eq 1 ] || fail "expected one error line from: $*"
    echo "$out" | grep -qE -- "$regex" || fail "expected '$regex' from: $*"
    [ "$(md5sum part.h5)" = "$sum" ] || fail "part.h5 was modified by: $*"
  }
  expect "written with another configuration: --tokens-per-rank \(file 300, now 400\)" \
    $mpiexec -n 2 "$mb" "${base[@]}" --steps 6 --out part.h5 --resume --tokens-per-rank 400
  expect '--routers \(file \["deepseek_v3","remoe"\], now \["deepseek_v3"\]\), --seed \(file 1, now 7\)' \
    $mpiexec -n 2 "$mb" run $shape --routers deepseek_v3 --tokens-per-rank 300 --steps 6 --out part.h5 --resume --seed 7
  expect "--ep-size \(file 2, now 1\)" $mpiexec -n 1 "$mb" "${args[@]}" --steps 6 --out part.h5 --resume
  expect "written by 2 processes; resume it with as many" $mpiexec -n 1 "$mb" "${args[@]}" --ep-size 2 --steps 6 --out part.h5 --resume
  expect "holds 3 steps, more than --steps 2" $mpiexec -n 2 "$mb" "${args[@]}" --steps 2 --out part.h5 --resume
  expect "needs --out" "$mb" "${args[@]}" --resume
  expect "pick one" "$mb" "${args[@]}" --out part.h5 --resume --force
  echo "not hdf5" > notes.txt
  expect "notes.txt: not an HDF5 file" "$mb" "${args[@]}" --out notes.txt --resume
  # A results file of another format version.
  cp part.h5 v9.h5
  /usr/bin/python3 -c "import h5py; h5py.File('v9.h5', 'r+').attrs['format_version'] = 9" 2>/dev/null &&
    expect "format_version 9" "$mb" "${args[@]}" --steps 6 --out v9.h5 --resume
  # A complete run extended by raising --steps equals the longer run; resuming a complete file is a no-op.
  $mpiexec -n 2 "$mb" "${args[@]}" --steps 6 --out part.h5 --resume > ext.out 2>&1 || { cat ext.out; fail "extend"; }
  grep -q "resumed after step 3 of 6 (file status complete)" ext.out || { cat ext.out; fail "extend: no note"; }
  same full.h5 part.h5
  sum=$(md5sum part.h5)
  $mpiexec -n 2 "$mb" "${args[@]}" --steps 6 --out part.h5 --resume | grep -q "complete (6 steps); nothing to resume" || fail "resume of a complete file"
  [ "$(md5sum part.h5)" = "$sum" ] || fail "resuming a complete file changed it"
  # --resume without a file starts a new one.
  $mpiexec -n 2 "$mb" "${args[@]}" --steps 6 --out new.h5 --resume | grep -q "does not exist yet; starting a new run" || fail "resume of a missing file"
  same full.h5 new.h5
  ;;
trace_np2)
  # An assignment trace (what the recorded router replays), from a CSV capture: 2 layers x 4000
  # tokens, 2 of 16 experts each.
  awk 'BEGIN { printf "layer_id,token_id"; for (e = 0; e < 16; e++) printf ",expert_%d", e; print "";
               for (l = 0; l < 2; l++) for (t = 0; t < 4000; t++) { a = (t * 7 + l) % 16; b = (t * 3 + 5 * l + 1) % 16; if (b == a) b = (a + 1) % 16;
                 printf "%d,%d", l, t; for (e = 0; e < 16; e++) printf ",%s", e == a ? "0.6" : (e == b ? "0.4" : "0"); print "" } }' > cap.csv
  "$mb" trace convert --from csv --in cap.csv --out t.trace > /dev/null || fail "trace convert"
  steps=60
  args=(run --workload trace --trace t.trace --routers recorded,softmax_topk --steps $steps --progress off --hidden 64 --placement load_balanced)
  $mpiexec -n 2 "$mb" "${args[@]}" --out ref.h5 > ref.out 2>&1 || { cat ref.out; fail "reference"; }
  kill_run 2 2 "${args[@]}" --out part.h5 || fail "the run ended before the kill"
  echo "killed with steps_done = $(attr_int part.h5 steps_done)"
  timeout 120 $mpiexec -n 2 "$mb" "${args[@]}" --out part.h5 --resume > r.out 2>&1 || { cat r.out; fail "resume"; }
  same ref.h5 part.h5
  ;;
write_failures_np2)
  mnt=$work/small
  mkdir -p "$mnt"
  mount -t tmpfs -o size=8m tmpfs "$mnt" 2> /dev/null || { echo "SKIP: cannot mount a tmpfs (needs root)"; exit 77; }
  trap 'umount "$mnt" 2> /dev/null' EXIT
  args=(run --experts 64 --layers 4 --steps 150 --tokens-per-rank 2000 --progress off --routers softmax_topk,deepseek_v3)
  $mpiexec -n 2 "$mb" "${args[@]}" --out ref.h5 > ref.out 2>&1 || fail "reference run"
  $mpiexec -n 2 "$mb" "${args[@]}" --out "$mnt/r.h5" > full.out 2>&1 &
  mpid=$!
  for _ in $(seq 100); do [ "$(attr_int "$mnt/r.h5" steps_done 2> /dev/null)" -gt 2 ] 2> /dev/null && break; sleep 0.1; done
  dd if=/dev/zero of="$mnt/fill" bs=64k 2> /dev/null
  timeout 60 tail --pid="$mpid" -f /dev/null || fail "disk full: the run did not end"
  wait "$mpid"; rc=$?
  grep '^moebench: error' full.out
  [ "$rc" -ne 0 ] || fail "disk full: exit status 0"
  [ "$(grep -c '^moebench: error' full.out)" -eq 1 ] || fail "disk full: expected one error line"
  grep -qE "^moebench: error: --out $mnt/r.h5: cannot write step [0-9]+ \(no space left on its file system\); the file keeps [0-9]+ complete steps" full.out ||
    fail "disk full: not the expected error"
  rm -f "$mnt/fill"
  "$mb" report "$mnt/r.h5" > /dev/null; rc=$?
  [ "$rc" -eq 3 ] || fail "disk full: report of the partial file exited $rc (3: readable, partial)"
  timeout 120 $mpiexec -n 2 "$mb" "${args[@]}" --out "$mnt/r.h5" --resume > r.out 2>&1 || { cat r.out; fail "disk full: --resume"; }
  same ref.h5 "$mnt/r.h5"
  # The folder removed mid-run.
  mkdir -p gone
  $mpiexec -n 2 "$mb" "${args[@]}" --out gone/r.h5 > gone.out 2>&1 &
  mpid=$!
  for _ in $(seq 100); do [ "$(attr_int gone/r.h5 steps_done 2> /dev/null)" -gt 2 ] 2> /dev/null && break; sleep 0.1; done
  rm -rf gone
  timeout 60 tail --pid="$mpid" -f /dev/null || fail "folder removed: the run did not end"
  wait "$mpid"; rc=$?
  grep '^moebench: error' gone.out
  [ "$rc" -ne 0 ] || fail "folder removed: exit status 0"
  grep -qE "^moebench: error: --out gone/r.h5: (the file was removed during the run|cannot write step)" gone.out || fail "folder removed: not the expected error"
  ;;
*) echo "unknown case $case_name"; exit 2 ;;
esac
echo "PASS $case_name"
