#!/usr/bin/env bash
# One end-to-end case of the moebench executable per call: cli_tests.sh CASE MOEBENCH WORKDIR
set -u
case_name=$1
mb=$2
work=$3
mpiexec=${MOEBENCH_MPIEXEC:-mpiexec --oversubscribe}
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

fail() { echo "FAIL: $*"; exit 1; }
# expect_error REGEX CMD...: CMD must exit non-zero and print REGEX (stdout+stderr).
expect_error() {
  local regex=$1; shift
  local out rc
  out=$(timeout 120 "$@" 2>&1); rc=$?
  echo "$out"
  [ "$rc" -ne 0 ] || fail "expected a non-zero exit from: $*"
  [ "$rc" -ne 124 ] || fail "timed out (hang?): $*"
  echo "$out" | grep -qE -- "$regex" || fail "expected output matching '$regex'"
}
shape="--experts 16 --top-k 2 --layers 2 --steps 3 --tokens-per-rank 500 --hidden 256"
small="$shape --progress off"

case $case_name in
list)
  out=$("$mb" list) || fail "list failed"
  echo "$out"
  for name in softmax_topk sigmoid_topk uniform zipf domain_shift contiguous round_robin sim; do
    echo "$out" | grep -qE "^  $name +[a-zA-Z]" || fail "list does not describe $name"
  done
  expect_error "unknown kind" "$mb" list nonsense
  ;;
bad_config_np2)
  # Every problem at once, on every rank, non-zero exit, no hang.
  expect_error "top-k.*" $mpiexec -n 2 "$mb" run --experts 8 --top-k 9 --tokens-per-rank 0 --capacity-factor -1 \
    --routers softmax_topk,bogus --ep-size 4 --nodes 3 --ranks-per-node 2
  out=$($mpiexec -n 2 "$mb" run --experts 8 --top-k 9 --tokens-per-rank 0 --capacity-factor -1 --routers softmax_topk,bogus --ep-size 4 --nodes 3 --ranks-per-node 2 2>&1)
  for what in -- "--top-k" "--tokens-per-rank" "--capacity-factor" "'bogus'" "known: " "3 x 2 = 6 != EP size 4"; do
    echo "$out" | grep -qF -- "$what" || fail "missing '$what' in the error report"
  done
  [ "$(echo "$out" | grep -c 'invalid configuration')" -eq 1 ] || fail "the report should be printed once (by rank 0)"
  expect_error "unknown command" "$mb" frobnicate
  expect_error "unrecognised option|unrecognized option" "$mb" run --no-such-flag
  ;;
bad_router_arg_np4)
  expect_error "unknown router-arg softmax_topk.renormalise=no .*known: renormalize" \
    $mpiexec -n 4 "$mb" run $small --router-arg softmax_topk.renormalise=no
  ;;
refuse_overwrite)
  "$mb" run $small --out r.h5 > /dev/null || fail "first run failed"
  sum=$(md5sum r.h5)
  expect_error "r.h5: file exists; refusing to overwrite" $mpiexec -n 2 "$mb" run $small --out r.h5
  [ "$(md5sum r.h5)" = "$sum" ] || fail "the existing file was modified"
  $mpiexec -n 2 "$mb" run $small --out r.h5 --force > /dev/null || fail "--force run failed"
  "$mb" report r.h5 | grep -q "status: complete" || fail "report after --force"
  ;;
report_foreign_file)
  echo "not hdf5" > notes.txt
  expect_error "notes.txt: not an HDF5 file" "$mb" report notes.txt
  expect_error "missing.h5: no such file" "$mb" report missing.h5
  expect_error "expected a results file" "$mb" report
  ;;
ini_config)
  cat > run.ini <<'INI'
# moebench run configuration
workload = uniform
experts = 16
top-k = 2
layers = 2
steps = 2
tokens-per-rank = 400
routers = softmax_topk
router-arg = softmax_topk.renormalize=false
capacity-factor = 0
progress = off
INI
  $mpiexec -n 2 "$mb" run --config run.ini --top-k 3 --out ini.h5 > out.txt || fail "INI run failed"
  cat out.txt
  grep -q "E=16 k=3" out.txt || fail "command line should override the INI file (k=3)"
  grep -qE "^softmax_topk +3\.000" out.txt || fail "3 experts per token expected with CF=0"
  echo "experts = lots" > bad.ini
  expect_error "bad.ini.*experts" "$mb" run --config bad.ini
  ;;
determinism_np124)
  for n in 1 2 4; do
    $mpiexec -n $n "$mb" run $small --workload domain_shift --ep-size 8 --nodes 2 --capacity-factor 1.0 \
      --drop-policy probability --dedup token_node --out np$n.h5 > /dev/null || fail "np=$n run failed"
  done
  for n in 2 4; do
    for ds in expert_load expert_demand dispatch_tokens rank_recv_tokens bytes_inter dropped active_experts_hist model_dispatch_s; do
      for r in softmax_topk sigmoid_topk; do
        h5diff np1.h5 np$n.h5 /runs/$r/$ds /runs/$r/$ds > diff.txt 2>&1 || { cat diff.txt; fail "/runs/$r/$ds differs between 1 and $n processes"; }
      done
    done
  done
  echo "identical on 1, 2 and 4 processes"
  ;;
progress_lines)
  "$mb" run $shape --progress lines 2> err.txt > /dev/null || fail "run failed"
  cat err.txt
  grep -q "progress: 100%" err.txt || fail "no progress lines"
  ;;
bench_a2a_np4)
  for pat in uniform zipf; do
    $mpiexec -n 4 "$mb" bench-a2a -b 1K -e 256K -f 4 -w 1 -n 2 --rounds 1 --pattern $pat --out b_$pat.h5 > out_$pat.txt || fail "bench-a2a $pat failed"
    cat out_$pat.txt
    [ "$(grep -cE '^ +[0-9]+ +[0-9]+ .* 0$' out_$pat.txt)" -eq 5 ] || fail "expected 5 sizes with 0 wrong elements ($pat)"
    h5dump -d /busbw_GBps b_$pat.h5 > /dev/null || fail "no busbw in the bench file"
  done
  $mpiexec -n 4 "$mb" bench-a2a -b 4K -e 16K -f 2 -w 1 -n 2 --rounds 1 --a2a-algo hierarchical > h.txt || fail "hierarchical bench failed"
  expect_error "bench-a2a --pattern: unknown value" $mpiexec -n 2 "$mb" bench-a2a --pattern skewed
  ;;
calibrate_then_model_np4)
  $mpiexec -n 4 "$mb" calibrate -e 1M -w 1 -n 3 --out m.ini > cal.txt || fail "calibrate failed"
  cat m.ini
  grep -q "^\[intra\]" m.ini && grep -q "^\[inter\]" m.ini && grep -qE "^links = (shared|independent)" m.ini || fail "incomplete topology file"
  expect_error "m.ini: file exists" $mpiexec -n 4 "$mb" calibrate --out m.ini
  $mpiexec -n 4 "$mb" run $small --nodes 2 --backend mpi --topology m.ini --warmup 1 --iters 2 --out r.h5 > run.txt || fail "mpi run failed"
  cat run.txt
  grep -q "model_err" run.txt || fail "no model error column"
  h5dump -d /runs/softmax_topk/tokens_corrupted r.h5 | grep -qE "\(0,0,0\): 0, 0, 0, 0" || fail "integrity counts missing"
  "$mb" report r.h5 | grep -q "model_err" || fail "report shows no model error"
  expect_error "needs --ep-size == MPI world size" $mpiexec -n 2 "$mb" run $small --backend mpi --ep-size 4
  ;;
gpu_paths)
  # With CUDA+NCCL in the build: the nccl backend and --route-on gpu run on a GPU, or say clearly
  # that there is none (skipped: exit 77). Without them: a clear "not in this build" error.
  if "$mb" --version | grep -q "NCCL found"; then
    out=$($mpiexec -n 1 "$mb" run $small --backend nccl --route-on gpu --routers softmax_topk --out g.h5 2>&1); rc=$?
    echo "$out"
    if echo "$out" | grep -q "no CUDA device"; then
      [ $rc -ne 0 ] || fail "no device but exit 0"
      echo "SKIP: no CUDA device here"
      exit 77
    fi
    [ $rc -eq 0 ] || fail "GPU run failed"
    "$mb" report g.h5 | grep -q "meas_ms" || fail "no measured times from the nccl backend"
  else
    expect_error "this build has no NCCL backend" "$mb" run $small --backend nccl
    expect_error "this build has no GPU routing" "$mb" run $small --route-on gpu
  fi
  ;;
claims_all_routers_np2)
  routers=softmax_topk,sigmoid_topk,beta,beta@ahead,etr,lapsum,kern,remoe,deepseek_v3,expert_choice,sinkhorn,base
  $mpiexec -n 2 "$mb" run --workload domain_shift --experts 16 --top-k 2 --layers 2 --steps 3 --tokens-per-rank 512 --nodes 2 \
    --routers $routers --router-arg beta@ahead.lookahead=true --capacity-factor 0 --progress off --out c.h5 > run.txt || fail "run failed"
  "$mb" report c.h5 --claims > claims.txt || fail "report --claims failed"
  cat claims.txt
  for what in "ETR (Li et al." "max tokens per expert" "LapSum" "KERN" "ReMoE" "histogram" "beta / anticipation" "DeepSeek-V3" \
              "Expert choice" "Not testable by replay" "baseline softmax_topk"; do
    grep -qF "$what" claims.txt || fail "claims report lacks '$what'"
  done
  grep -qE "beta@ahead: transitions [0-9]+, acc@transition (0\.9|1\.0)" claims.txt || fail "the lookahead oracle should be right at transitions"
  grep -qE "expert_choice: expert max/mean load 1\.0000" claims.txt || fail "expert choice should be exactly balanced"
  expect_error "unknown option '--claim'" "$mb" report c.h5 --claim
  ;;
*) fail "unknown case $case_name" ;;
esac
echo "PASS: $case_name"
