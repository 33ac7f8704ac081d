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
# An interpreter with h5py and numpy (as analysis/pyenv.py looks for one); empty when none.
py=""
for c in "${MOEBENCH_PYTHON:-}" /usr/bin/python3 python3; do
  [ -n "$c" ] && "$c" -c "import h5py, numpy" 2>/dev/null && { py=$c; break; }
done

case $case_name in
list)
  out=$("$mb" list) || fail "list failed"
  echo "$out"
  for name in softmax_topk sigmoid_topk uniform zipf domain_shift balanced hot_experts spread_hot hot_rank source_ragged \
      zero_expert_rank rotating_hotspot burst lognormal layer_affinity contiguous round_robin sim; do
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
topology_model_np2)
  # The topology-aware model on 64 virtual ranks of DGX-H100 nodes from 2 processes: flat,
  # hierarchical and node-forwarded runs of the same routing; lower bound <= model everywhere.
  topo=$(cd "$(dirname "$0")/../../cluster/topologies" && pwd)
  vals() { h5dump -y -w 0 -d "$2" "$1" | sed -n '/DATA {/,/}/p' | grep -v 'DATA {\|}' | tr ',' '\n' | tr -d ' ' | grep -v '^$'; }
  run64="$small --routers softmax_topk --ep-size 64 --topology $topo/dgx-h100.ini"
  $mpiexec -n 2 "$mb" run $run64 --out flat.h5 > flat.txt || fail "flat run failed"
  cat flat.txt
  grep -q "a2a/lb" flat.txt || fail "no a2a/lb column"
  $mpiexec -n 2 "$mb" run $run64 --a2a-algo hierarchical --out hier.h5 > hier.txt || fail "hierarchical run failed"
  $mpiexec -n 2 "$mb" run $run64 --dedup token_node --out node.h5 > node.txt || fail "token_node run failed"
  "$mb" report hier.h5 | grep -q "a2a/lb" || fail "report shows no a2a/lb"
  h5dump -a topology flat.h5 | grep -qE 'nics_per_node[^0-9]*8' || fail "topology attribute lacks nics_per_node"
  for f in flat hier node; do
    for dir in dispatch combine; do
      vals $f.h5 /runs/softmax_topk/model_${dir}_s > m.txt
      vals $f.h5 /runs/softmax_topk/model_lower_bound_${dir}_s > lb.txt
      [ "$(wc -l < m.txt)" -eq 6 ] && [ "$(wc -l < lb.txt)" -eq 6 ] || fail "$f: expected 3 steps x 2 layers of $dir times"
      paste m.txt lb.txt | awk -v f=$f '{ if (!($2 > 0) || $2 > $1 * (1 + 1e-12)) { print "FAIL: " f ": lower bound " $2 " vs model " $1; bad = 1 } } END { exit bad }' || fail "$f: $dir lower bound above the model"
    done
    vals $f.h5 /runs/softmax_topk/bottleneck_rank | awk '{ if ($1 < 0 || $1 >= 64) exit 1 }' || fail "$f: bottleneck rank out of range"
    vals $f.h5 /runs/softmax_topk/bottleneck_link | awk '{ if ($1 != 1 && $1 != 2) exit 1 }' || fail "$f: bottleneck link not intra/inter"
  done
  # Same matrix, same bound; another algorithm, another time.
  vals flat.h5 /runs/softmax_topk/model_lower_bound_dispatch_s > a.txt
  vals hier.h5 /runs/softmax_topk/model_lower_bound_dispatch_s > b.txt
  cmp -s a.txt b.txt || fail "flat and hierarchical bounds differ on the same matrix"
  vals flat.h5 /runs/softmax_topk/model_dispatch_s > a.txt
  vals hier.h5 /runs/softmax_topk/model_dispatch_s > b.txt
  cmp -s a.txt b.txt && fail "hierarchical modelled exactly as flat"
  # The other shipped topologies run; a bad key is a one-line error naming the file and the key.
  $mpiexec -n 2 "$mb" run $small --routers softmax_topk --ep-size 16 --topology $topo/pcie-node.ini > pcie.txt || fail "pcie run failed"
  $mpiexec -n 2 "$mb" run --experts 16 --top-k 2 --layers 1 --steps 2 --tokens-per-rank 50 --hidden 256 --progress off --routers softmax_topk --ep-size 144 --topology $topo/gb200-nvl72.ini > gb.txt || fail "gb200 run failed"
  printf 'ranks_per_node = 8\n[inter]\nnics_per_node = 3\n' > bad.ini
  expect_error "bad.ini: inter.nics_per_node = 3" $mpiexec -n 2 "$mb" run $small --ep-size 16 --topology bad.ini
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
long_run_np2)
  # Many steps with several routers: parallel HDF5's metadata-cache sync point must not fall inside
  # a collective write (it failed at step 65 with two routers before the results file's cache
  # was sized for a step's dirty metadata).
  $mpiexec -n 2 "$mb" run --workload zipf --experts 16 --top-k 2 --layers 2 --steps 150 --tokens-per-rank 64 --ep-size 4 \
    --routers deepseek_v3,remoe,softmax_topk --progress off --out long.h5 > run.txt 2>&1 || { cat run.txt; fail "a 150-step run failed"; }
  "$mb" report long.h5 | grep -q "status: complete, 150 steps" || fail "the file should hold 150 complete steps"
  ;;
convergence_warmup_np2)
  # Stateful routers' cold start: remoe from theta0 = 0 (warm_start=none) is dense for several steps;
  # the report says it converged later, --warmup-steps leaves those steps out, claims mark an
  # unconverged router. The default warm start converges from the first step.
  run="--workload uniform --experts 16 --top-k 2 --layers 2 --steps 40 --tokens-per-rank 256 --capacity-factor 0 --progress off"
  $mpiexec -n 2 "$mb" run $run --routers remoe@cold,remoe --router-arg remoe@cold.warm_start=none --out r.h5 > /dev/null || fail "run failed"
  "$mb" report r.h5 > rep.txt || fail "report failed"
  cat rep.txt
  grep -qE "convergence: remoe@cold: experts per token [0-9.]+ \(step 0\) .* converged at step [0-9]+" rep.txt || fail "no convergence step for the cold start"
  grep -qE "convergence: remoe: .* converged from the first step" rep.txt || fail "the warm start should converge at once"
  n=$(grep -oE "remoe@cold: .* converged at step [0-9]+" rep.txt | grep -oE "[0-9]+$")
  [ "$n" -ge 3 ] || fail "the cold start should need several steps (got $n)"
  "$mb" report r.h5 --warmup-steps "$n" --format json > rep.json || fail "report --warmup-steps failed"
  grep -qF "\"warmup_steps_excluded\": $n" rep.json || fail "json lacks warmup_steps_excluded"
  grep -qF "\"steps_done\": $((40 - n))" rep.json || fail "json should cover the steps after the warm-up"
  "$mb" report r.h5 --warmup-steps "$n" | grep -qF "excluded as warm-up (--warmup-steps $n)" || fail "text report lacks the warm-up line"
  expect_error "--warmup-steps 40 leaves no step" "$mb" report r.h5 --warmup-steps 40
  expect_error "--warmup-steps 'x' is not a whole number" "$mb" report r.h5 --warmup-steps x
  # Only 2 steps of the cold start: not converged, and the claims say so.
  $mpiexec -n 2 "$mb" run ${run/--steps 40/--steps 2} --routers softmax_topk,remoe --router-arg remoe.warm_start=none --out c.h5 > /dev/null || fail "run failed"
  "$mb" report c.h5 --claims > claims.txt || fail "claims failed"
  cat claims.txt
  grep -qF "remoe: experts per token" claims.txt || fail "claims lack the convergence line"
  grep -qE "measured: remoe: .*NOT CONVERGED" claims.txt || fail "claims should mark remoe's figures"
  # Different expert compute by default is flagged: expert_choice with c=1 asked for is not.
  $mpiexec -n 2 "$mb" run ${run/--steps 40/--steps 2} --routers softmax_topk,expert_choice --router-arg expert_choice.c=1 --out m.h5 > /dev/null || fail "run failed"
  "$mb" report m.h5 | grep -q "differ in mean experts per token" && fail "an explicit expert_choice.c should not warn"
  # New capacity options are validated with the known values.
  expect_error "--drop-policy: unknown value 'first' \(known: choice_first, token_order, probability\)" "$mb" run $run --drop-policy first
  expect_error "--capacity-rounding: unknown value 'up' \(known: exact, framework\)" "$mb" run $run --capacity-rounding up
  "$mb" run ${run/--steps 40/--steps 1} --routers softmax_topk --drop-policy position --out p.h5 > /dev/null || fail "position alias"
  "$mb" report p.h5 --format json | grep -qF '"drop_policy":"choice_first"' || fail "position should resolve to choice_first"
  ;;
trace_flame_np2)
  # The real FLAME-MoE trace: convert, replay with the recorded router on 2 processes, and compare
  # the per-expert loads with counts computed independently from the CSV files (awk).
  flame=${MOEBENCH_SHARED:-$(dirname "$mb")/../../../shared}/traces/flame-moe-290m
  [ -f "$flame/layer02.csv" ] || { echo "SKIP: $flame not found (../shared is not beside the project)"; exit 77; }
  "$mb" trace convert --from csv --in "$flame"/layer0{2..9}.csv --layers 2-9 --weights-are probabilities \
    --model flame-moe-290m --out flame.h5 || fail "convert failed"
  info=$("$mb" trace info flame.h5) || fail "info failed"
  echo "$info"
  echo "$info" | grep -q "kind assignments" || fail "info: kind"
  echo "$info" | grep -qE "top-k +6" || fail "info: top-k"
  echo "$info" | grep -qE "tokens +2048" || fail "info: tokens"
  $mpiexec -n 2 "$mb" run --workload trace --trace flame.h5 --routers recorded,softmax_topk --capacity-factor 0 \
    --progress off --out r.h5 > run.log || { cat run.log; fail "replay failed"; }
  for router in recorded softmax_topk; do
    h5dump -y -w 0 -d /runs/$router/expert_demand r.h5 | sed -n '/DATA {/,/}/p' | tr -c '0-9\n' ' ' | tr -s ' ' '\n' | grep -v '^$' > got_$router.txt
  done
  for l in 2 3 4 5 6 7 8 9; do
    awk -F, '{ sub(/\r$/, "") } NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /^expert_/) col[i] = substr($i, 8); next }
             { for (i in col) if ($i + 0 != 0) n[col[i]]++ }
             END { for (e = 0; e < 64; e++) print n[e] + 0 }' "$flame/layer0$l.csv"
  done > want.txt
  [ "$(wc -l < want.txt)" -eq 512 ] || fail "expected 8 x 64 counts"
  cmp -s want.txt got_recorded.txt || { paste want.txt got_recorded.txt | head; fail "recorded loads differ from the CSV counts"; }
  cmp -s want.txt got_softmax_topk.txt || fail "softmax_topk (k=6) on the reconstructed logits should pick the recorded experts"
  ;;
trace_flame_all_routers_np2)
  # Issue 16's done-when: the real FLAME trace (top-6 probabilities) under every registered router,
  # the unrecorded tail completed by --trace-tail mass, sequences from a token table (the stream's
  # end-of-document token), and every completed figure marked in the report.
  flame=${MOEBENCH_SHARED:-$(dirname "$mb")/../../../shared}/traces/flame-moe-290m
  [ -f "$flame/layer02.csv" ] || { echo "SKIP: $flame not found (../shared is not beside the project)"; exit 77; }
  awk 'BEGIN { print "sequence,token" } { print s "," $1; if ($1 == 0) s++ }' s=0 "$flame/token_ids.txt" > tokens.csv
  "$mb" trace convert --from csv --in "$flame"/layer0{2..9}.csv --layers 2-9 --weights-are probabilities \
    --token-table tokens.csv --model flame-moe-290m --out flame.h5 || fail "convert failed"
  "$mb" trace info flame.h5 | grep -qE "sequences +2" || fail "info: the token table's two documents"
  routers=$("$mb" list routers | awk 'NR > 1 && NF { print $1 }' | paste -sd, -)
  [ "$(echo "$routers" | tr ',' '\n' | wc -l)" -ge 12 ] || fail "expected every registered router, got $routers"
  $mpiexec -n 2 "$mb" run --workload trace --trace flame.h5 --workload-arg trace.split=block --nodes 2 --ranks-per-node 2 \
    --routers "$routers" --trace-tail mass --progress off --out r.h5 > run.log || { cat run.log; fail "replay failed"; }
  report=$("$mb" report r.h5 --claims) || fail "report failed"
  for router in $(echo "$routers" | tr ',' ' '); do
    used=$(h5dump -a /runs/$router/tail_completed r.h5 | sed -n 's/.*(0): *//p')
    case $router in
      recorded|softmax_topk|sigmoid_topk) [ "$used" = 0 ] || fail "$router reads only the recorded top-6 (tail_completed $used)" ;;
      *) [ "$used" = 1 ] || fail "$router must be marked as reading the completed tail (got '$used')"
         echo "$report" | grep -q "^$router\* " || fail "report table does not mark $router" ;;
    esac
  done
  for router in etr lapsum deepseek_v3 expert_choice; do
    echo "$report" | grep -E "measured: $router:" | grep -q "\[tail completed (mass)\]" || fail "claim figure of $router not marked"
  done
  echo "$report" | grep -qE "tail completed \(mass\): .*deepseek_v3.*etr" || fail "report note names the tail routers"
  ;;
trace_import_errors)
  # Malformed input: one line naming file, line and field; non-zero exit; no output file left.
  printf 'layer_id,token_id,expert_0,expert_1,expert_2,expert_3\n0,0,0.5,0,0.25,0\n0,1,0,0.7,0,0.1\n' > ok.csv
  "$mb" trace convert --from csv --in ok.csv --out ok.h5 > /dev/null || fail "valid csv refused"
  "$mb" trace info ok.h5 | grep -q "kind assignments" || fail "sparse csv should be an assignment trace"
  check() {  # check REGEX ARGS...: the convert fails with REGEX and leaves no bad.h5
    expect_error "$1" "$mb" trace convert "${@:2}" --out bad.h5
    [ "$(echo "$out" | grep -c .)" -le 1 ] || true
    [ ! -e bad.h5 ] && [ ! -e bad.h5.tmp ] || fail "an output file was left behind"
  }
  printf 'layer_id,token_id,expert_0,expert_1,expert_2,expert_3\n0,0,0.5,0,0.25\n' > short.csv
  check "short.csv: line 2: 5 fields, the header has 6" --from csv --in short.csv
  printf 'layer_id,token_id,expert_0,expert_1,expert_2,expert_3\n0,0,0.5,abc,0.25,0\n' > text.csv
  check "text.csv: line 2: field expert_1: 'abc' is not a number" --from csv --in text.csv
  printf 'layer_id,token_id,expert_0,expert_1,expert_2,expert_3\n0,0,0.5,nan,0.25,0\n' > nan.csv
  check "nan.csv: line 2: field expert_1: 'nan' is not finite" --from csv --in nan.csv
  check "missing.csv: cannot open file" --from csv --in missing.csv
  printf '{"layer": 0, "ids": [1, 2], "w": [0.5, 0.2]}\n{"layer": 0, "ids": [1, 9], "w": [0.5, 0.2]}\n' > big.jsonl
  check "big.jsonl: line 2: field experts \(key 'ids'\): expert id 9 outside \[0, 8\)" --from jsonl --in big.jsonl --experts 8 --field experts=ids --field weights=w --field layer=layer
  printf '{"layer": 0, "ids": [1, 2], "w": [0.5]}\n' > len.jsonl
  check "len.jsonl: line 1: field weights \(key 'w'\): token 0: 1 weights for 2 expert ids" --from jsonl --in len.jsonl --experts 8 --field experts=ids --field weights=w
  printf '{"layer": 0, "ids": [1, 2]\n' > broken.jsonl
  check "broken.jsonl: line 1: malformed JSON" --from jsonl --in broken.jsonl --experts 8 --field experts=ids
  printf '{"layer": 0, "w": [0.5]}\n' > lacks.jsonl
  check "lacks.jsonl: line 1: field experts \(key 'ids'\) is missing" --from jsonl --in lacks.jsonl --experts 8 --field experts=ids
  printf 'not numpy' > bad.npy
  check "bad.npy: not a NumPy .npy file" --from npy --in bad.npy
  printf 'expert_0,expert_1,expert_2\n1.5,70000,-2\n' > huge.csv
  check "huge.csv: line 2: field expert_1: 70000.000000 exceeds the float16 range \(use --dtype fp32\)" --from csv --in huge.csv --kind logits
  "$mb" trace convert --from csv --in huge.csv --kind logits --dtype fp32 --out huge32.h5 > /dev/null || fail "fp32 keeps 70000"
  printf 'seq,expert_0,expert_1,expert_2,expert_3\n1,0.5,0,0,0\n2,0,0.5,0,0\n1,0,0,0.5,0\n' > interleaved.csv
  check "interleaved.csv: line 4: field seq: sequence 1 appears again after other sequences" --from csv --in interleaved.csv --field sequence=seq
  printf '{"layer": 0, "ids": [3, 3], "w": [0.5, 0.2]}\n' > dup.jsonl
  check "dup.jsonl: line 1: field experts \(key 'ids'\): token 0: expert id 3 twice" --from jsonl --in dup.jsonl --experts 8 --field experts=ids --field weights=w
  perl -e 'my $h = "{\x27descr\x27: \x27<f4\x27, \x27fortran_order\x27: False, \x27shape\x27: (4611686018427387904, 4), }";
           $h .= " " x (128 - 10 - length($h) - 1) . "\n"; print "\x93NUMPY\x01\x00", pack("v", length($h)), $h, pack("f<*", 1, 2, 3, 4);' > huge.npy
  check "huge.npy: header field shape: too large" --from npy --in huge.npy
  # variable k: softmax_topk would fill the short rows with experts the trace never recorded
  printf 'expert_0,expert_1,expert_2,expert_3\n0,0.5,0,0\n0,0.5,0.2,0\n0,0,0.6,0.3\n0,0,0,0.9\n' > vk.csv
  "$mb" trace convert --from csv --in vk.csv --out vk.h5 > /dev/null || fail "variable-k csv refused"
  "$mb" trace info vk.h5 | grep -q "variable" || fail "info: variable k"
  expect_error "records fewer than 2 experts for some tokens" "$mb" run --workload trace --trace vk.h5 --routers softmax_topk --progress off
  "$mb" run --workload trace --trace vk.h5 --routers recorded --progress off > /dev/null || fail "recorded replays variable k"
  expect_error "run: unknown|unknown format" "$mb" trace convert --from xml --in ok.csv --out bad.h5
  # A trace that is not one, and a run that contradicts its trace.
  expect_error "trace ok.csv: not an HDF5 file" "$mb" trace info ok.csv
  expect_error "--experts 16: the trace ok.h5 has num_experts = 4" "$mb" run --workload trace --trace ok.h5 --experts 16 --routers recorded --progress off
  ;;
trace_jsonl_npy_np2)
  # JSON lines with a field mapping, filters and per-token lists; the Megatron preset; NumPy logits.
  cat > routes.jsonl <<'JSON'
{"type": "meta", "model": "tiny"}
{"type": "route", "step": 0, "layer": 3, "req_id": 7, "token_idx": 0, "topk_ids": [1, 2], "topk_weights": [0.6, 0.3]}
{"type": "route", "step": 0, "layer": 3, "req_id": 7, "token_idx": 1, "topk_ids": [3, 0], "topk_weights": [0.5, 0.4]}
{"type": "warmup", "step": 0, "layer": 3, "req_id": 1, "token_idx": 0, "topk_ids": [5, 5], "topk_weights": [0.5, 0.5]}
{"type": "route", "step": 0, "layer": 5, "req_id": 7, "token_idx": 0, "topk_ids": [2, 1], "topk_weights": [0.7, 0.2]}
{"type": "route", "step": 0, "layer": 5, "req_id": 7, "token_idx": 1, "topk_ids": [0, 3], "topk_weights": [0.8, 0.1]}
{"type": "route", "step": 1, "layer": 3, "req_id": 8, "token_idx": 0, "topk_ids": [1, 3], "topk_weights": [0.6, 0.3]}
{"type": "route", "step": 1, "layer": 3, "req_id": 8, "token_idx": 1, "topk_ids": [1, 0], "topk_weights": [0.6, 0.3]}
{"type": "route", "step": 1, "layer": 5, "req_id": 8, "token_idx": 1, "topk_ids": [3, 0], "topk_weights": [0.6, 0.3]}
{"type": "route", "step": 1, "layer": 5, "req_id": 8, "token_idx": 0, "topk_ids": [1, 2], "topk_weights": [0.6, 0.3]}
{"type": "route", "step": 1, "layer": 5, "req_id": 8, "topk_ids": [1, 2]}
JSON
  "$mb" trace convert --from jsonl --in routes.jsonl --experts 4 --field layer=layer --field experts=topk_ids \
    --field weights=topk_weights --field position=token_idx --field sequence=req_id --field step=step \
    --skip-if type=warmup --skip-incomplete --out t.h5 || fail "jsonl convert failed"
  info=$("$mb" trace info t.h5) || fail "info failed"
  echo "$info"
  echo "$info" | grep -qE "layers +2 \(model layers 3,5\)" || fail "layers"
  echo "$info" | grep -qE "steps +2" || fail "steps"
  echo "$info" | grep -qE "sequences +2" || fail "sequences"
  # layer 3 over both steps: experts 1,2,3,0,1,3 -> loads 1,2,1,2
  h5dump -y -w 0 -d /expert_ids t.h5 | sed -n '/DATA {/,/}/p' | tr -c '0-9\n-' ' ' | tr -s ' ' '\n' | grep -v '^$' | tr '\n' ' ' > ids.txt
  # [layers, tokens, k]; tokens sorted by (sequence, position) inside a step
  [ "$(cat ids.txt)" = "1 2 3 0 1 3 1 0 2 1 0 3 1 2 3 0 " ] || fail "expert ids $(cat ids.txt)"
  # one sequence per step cannot feed 2 ranks by sequence; contiguous blocks can
  expect_error "step 0 has 2 tokens in too few sequences for 2 EP ranks" $mpiexec -n 2 "$mb" run --workload trace --trace t.h5 --routers recorded --progress off
  $mpiexec -n 2 "$mb" run --workload trace --trace t.h5 --workload-arg trace.split=block --routers recorded --progress off --out r.h5 > run.log \
    || { cat run.log; fail "replay failed"; }
  h5dump -y -w 0 -d /runs/recorded/expert_demand r.h5 | sed -n '/DATA {/,/}/p' | tr -c '0-9\n' ' ' | tr -s ' ' '\n' | grep -v '^$' | tr '\n' ' ' > demand.txt
  # steps x layers x experts: step 0 layer 3 {1,2,3,0}, layer 5 {2,1,0,3}; step 1 layer 3 {1,3,1,0}, layer 5 {1,2,3,0}
  [ "$(cat demand.txt)" = "1 1 1 1 1 1 1 1 1 2 0 1 1 1 1 1 " ] || fail "replayed loads $(cat demand.txt)"
  cat > mega.jsonl <<'JSON'
{"step": 0, "layer": 1, "rank": 0, "top_indices": [[0, 1], [2, 3]]}
{"step": 0, "layer": 1, "rank": 1, "top_indices": [[1, 0], [3, 2]]}
JSON
  "$mb" trace convert --from megatron --in mega.jsonl --experts 4 --out m.h5 || fail "megatron preset failed"
  "$mb" trace info m.h5 | grep -qE "tokens +4" || fail "megatron: 4 tokens expected"
  # NumPy [layers, tokens, experts] float32 written with perl: 2 layers x 3 tokens x 4 experts
  perl -e 'my $h = "{\x27descr\x27: \x27<f4\x27, \x27fortran_order\x27: False, \x27shape\x27: (2, 3, 4), }";
           $h .= " " x (64 - 10 - length($h) - 1) . "\n";
           print "\x93NUMPY\x01\x00", pack("v", length($h)), $h, pack("f<*", map { $_ * 0.25 } 0 .. 23);' > l.npy
  "$mb" trace convert --from npy --in l.npy --out n.h5 || fail "npy convert failed"
  "$mb" trace info n.h5 --top-k 1 | tee n.txt | grep -q "kind logits (float16)" || fail "npy: kind"
  # top-1 of rows increasing along the experts: expert 3 takes every token
  grep -E "^ +0 +3 +0\.8 +3 " n.txt || fail "npy: top-1 loads"
  ;;
placement_eplb_np2)
  # The issue's placement command, scaled down: EPLB with redundant copies, locality selection,
  # re-placement every 2 steps, hierarchical all-to-all on the DGX-H100 topology.
  topo=$(dirname "$0")/../../cluster/topologies/dgx-h100.ini
  $mpiexec -n 2 "$mb" run --workload hot_experts --experts 64 --top-k 4 --ep-size 32 --topology "$topo" \
    --tokens-per-rank 256 --routers softmax_topk,deepseek_v3 --placement eplb --redundant-experts 8 \
    --replica-select locality --replace-every 2 --a2a-algo hierarchical --steps 4 --layers 2 --progress off --out p.h5 > run.log \
    || { cat run.log; fail "placement run failed"; }
  cat run.log
  grep -q "placement (softmax_topk): 1.500 copies per expert" run.log || fail "96 slots for 64 experts: 1.5 copies per expert expected"
  h5dump -H -d /runs/softmax_topk/expert_of_slot p.h5 | grep -q "( 4, 2, 96 )" || fail "expert_of_slot shape"
  slots=$(h5dump -y -w 0 -d /runs/softmax_topk/expert_of_slot p.h5 | sed -n '/DATA {/,/}/p' | tr -c '0-9\n-' ' ' | tr -s ' ' '\n' | grep -v '^$')
  [ "$(echo "$slots" | wc -l)" -eq 768 ] || fail "expected 4 x 2 x 96 slots"
  echo "$slots" | grep -qx -- "-1" && fail "an empty slot in a replicating placement"
  for e in $(seq 0 63); do echo "$slots" | head -96 | grep -qx "$e" || fail "expert $e has no copy"; done
  moved=$(h5dump -y -w 0 -d /runs/softmax_topk/replaced_copies p.h5 | sed -n '/DATA {/,/}/p' | tr -c '0-9\n' ' ' | tr -s ' ' '\n' | grep -v '^$' | tr '\n' ' ')
  echo "replaced copies per step x layer: $moved"
  [ "$(echo $moved | cut -d' ' -f1-4)" = "0 0 0 0" ] || fail "no re-placement before step 2"
  [ "$(echo $moved | cut -d' ' -f5)" -gt 0 ] || fail "the hot experts should be re-placed at step 2"
  "$mb" report p.h5 > /dev/null || fail "report failed"
  expect_error "placement contiguous does not replicate" "$mb" run --placement contiguous --redundant-experts 4 --progress off
  expect_error "placement round_robin does not use loads" "$mb" run --placement round_robin --placement-loads ema --progress off
  expect_error "--replica-select: unknown value 'nearest'" "$mb" run --replica-select nearest --progress off
  "$mb" list placements | grep -qE "^  eplb +DeepSeek" || fail "list placements: eplb"
  ;;
issue17_metrics_np124)
  # Balancedness, destinations per token, per-rank/per-expert bytes, padding: identical on 1, 2, 4
  # processes, and consistent with the file's other datasets.
  run17="$small --ep-size 8 --nodes 2 --placement eplb --redundant-experts 8 --replica-select round_robin --dedup token_node --capacity-factor 1.0"
  for n in 1 2 4; do
    $mpiexec -n $n "$mb" run $run17 --out np$n.h5 > out$n.txt || { cat out$n.txt; fail "np=$n run failed"; }
  done
  cat out4.txt
  grep -qE "bal_e +bal_gpu +ranks/t +nodes/t" out4.txt || fail "summary lacks the balancedness / destinations columns"
  grep -q "padding (softmax_topk): capacity buffers padded to C" out4.txt || fail "summary lacks the padding figure"
  grep -q "balancedness gained .* per GB moved" out4.txt || fail "summary lacks balancedness per GB moved"
  for n in 2 4; do
    for ds in expert_balancedness gpu_balancedness placement_balancedness balancedness_gain mean_ranks_per_token mean_nodes_per_token \
        ranks_per_token_hist nodes_per_token_hist rank_load rank_send_bytes rank_recv_bytes expert_recv_bytes padding_bytes dispatch_bytes \
        nonself_algbw_GBps; do
      h5diff np1.h5 np$n.h5 /runs/softmax_topk/$ds /runs/softmax_topk/$ds > diff.txt 2>&1 || { cat diff.txt; fail "/runs/softmax_topk/$ds differs between 1 and $n processes"; }
    done
  done
  "$mb" report np2.h5 --format json > r.json || fail "report json"
  for key in mean_expert_balancedness mean_gpu_balancedness min_gpu_balancedness mean_ranks_per_token mean_nodes_per_token \
      mean_nonself_algbw_GBps mean_padding_bytes balancedness_gain_per_GB; do
    grep -qE "\"$key\": -?[0-9]" r.json || fail "report json lacks a number for $key"
  done
  "$mb" report np2.h5 --format csv --per-layer | head -1 | grep -q "mean_gpu_balancedness" || fail "report csv lacks balancedness"
  "$mb" report np2.h5 --per-layer | grep -q "bal_gpu" || fail "report text lacks balancedness"
  if [ -z "$py" ]; then echo "SKIP part: no python3 with h5py and numpy for the consistency checks"; echo "PASS: $case_name"; exit 0; fi
  "$py" - np4.h5 <<'PY' || fail "consistency checks"
import json, sys
import h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
g = f["/runs/softmax_topk"]
cfg = json.loads(f.attrs["config"])
load, T = g["expert_load"][()], g["tokens"][()]
assert np.allclose(g["expert_balancedness"][()], load.mean(-1) / load.max(-1)), "expert balancedness != mean/max of expert_load"
rl = g["rank_load"][()]
assert (rl.sum(-1) == g["kept_assignments"][()]).all(), "rank_load does not add up to the kept assignments"
assert np.allclose(g["gpu_balancedness"][()], rl.mean(-1) / rl.max(-1)), "gpu balancedness != mean/max of rank_load"
for name in ("ranks_per_token_hist", "nodes_per_token_hist"):
    h = g[name][()]
    assert (h.sum(-1) == T).all(), name + " does not count every token"
    mean = (h * np.arange(h.shape[-1])).sum(-1) / T
    assert np.allclose(mean, g["mean_" + name[:-5]][()]), name + " and its mean disagree"
assert (g["mean_nodes_per_token"][()] <= g["mean_ranks_per_token"][()] + 1e-12).all(), "more nodes than ranks per token"
assert (g["mean_ranks_per_token"][()] > 1).all(), "top-2 over 8 ranks should often reach 2 ranks"
send, recv = g["rank_send_bytes"][()], g["rank_recv_bytes"][()]
for c, name in enumerate(("bytes_local", "bytes_intra", "bytes_inter")):
    assert (send[..., c].sum(-1) == g[name][()]).all() and (recv[..., c].sum(-1) == g[name][()]).all(), "per-rank " + name
db = g["dispatch_bytes"][()]
assert (db.sum((-1, -2)) == g["bytes_local"][()] + g["bytes_intra"][()] + g["bytes_inter"][()]).all(), "dispatch_bytes total"
assert (send.sum(-1) == db.sum(-1)).all(), "rank_send_bytes != row sums of dispatch_bytes"
eb = g["expert_recv_bytes"][()]
payload = cfg["hidden"] * 2 + 8
assert (eb.sum(-1) == load * payload).all(), "expert_recv_bytes != one copy per kept assignment"
E, C, kept = f.attrs["experts"], g["capacity"][()], g["kept_assignments"][()]
assert (g["padding_bytes"][()] == (E * C - kept) * cfg["hidden"] * 2).all(), "padding bytes"
nonself = g["bytes_intra"][()] + g["bytes_inter"][()]
assert np.allclose(g["nonself_algbw_GBps"][()], nonself / f.attrs["ep_size"] / g["model_dispatch_s"][()] / 1e9), "no-self bandwidth"
print("consistent")
PY
  # An older file without the new datasets still reports (balancedness from max/mean, the rest n/a).
  cp np2.h5 old.h5
  "$py" - old.h5 <<'PY' || fail "could not strip the new datasets"
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    for r in ("softmax_topk", "sigmoid_topk"):
        for n in ("expert_balancedness", "gpu_balancedness", "placement_balancedness", "balancedness_gain", "mean_ranks_per_token",
                  "mean_nodes_per_token", "nonself_algbw_GBps", "measured_nonself_algbw_GBps", "padding_bytes", "ranks_per_token_hist",
                  "nodes_per_token_hist", "rank_load", "rank_send_bytes", "rank_recv_bytes", "expert_recv_bytes", "dispatch_bytes"):
            del f["/runs/%s/%s" % (r, n)]
PY
  "$mb" report old.h5 --format json > old.json || fail "an older file must still report"
  grep -q '"mean_expert_balancedness": 0\.[0-9]' old.json || fail "older file: expert balancedness from max/mean"
  grep -q '"mean_gpu_balancedness": null' old.json || fail "older file: gpu balancedness should be n/a"
  ;;
export_matrix_bench_np4)
  # A measured run (mpi backend): the matrix it exports is the traffic it moved.
  $mpiexec -n 4 "$mb" run $small --nodes 2 --routers softmax_topk,sigmoid_topk --backend mpi --warmup 0 --iters 1 --out r.h5 > /dev/null || fail "run failed"
  if [ -n "$py" ]; then
    "$py" - r.h5 <<'PY' || fail "measured bandwidth without self-traffic"
import sys, h5py, numpy as np
g = h5py.File(sys.argv[1], "r")["/runs/softmax_topk"]
d = g["dispatch_tokens"][()]
self_share = np.trace(d, axis1=-2, axis2=-1) / d.sum((-1, -2))
want = g["measured_algbw_GBps"][()] * (1 - self_share)
got = g["measured_nonself_algbw_GBps"][()]
assert np.isfinite(got).all() and (got > 0).all() and np.allclose(got, want), (got, want)
assert (got < g["measured_algbw_GBps"][()]).all(), "self-traffic must lower the bandwidth that excludes it"
print("measured no-self bandwidth consistent")
PY
  fi
  "$mb" export matrix r.h5 --router sigmoid_topk --step 2 --layer 1 > m.txt || fail "export matrix txt"
  "$mb" export matrix r.h5 --router sigmoid_topk --step 2 --layer 1 --format csv --out m.csv || fail "export matrix csv"
  cat m.txt
  [ "$(wc -l < m.txt)" -eq 4 ] && [ "$(awk '{print NF}' m.txt | sort -u)" = "4" ] || fail "expected 4 rows of 4 byte counts"
  [ "$(tr ',' ' ' < m.csv)" = "$(cat m.txt)" ] || fail "csv and txt hold different numbers"
  total=$(awk '{for (i = 1; i <= NF; ++i) s += $i} END {print s}' m.txt)
  want=0
  for ds in bytes_local bytes_intra bytes_inter; do
    v=$(h5dump -y -w 0 -d "/runs/sigmoid_topk/$ds[2,1;;1,1]" r.h5 | sed -n '/DATA {/,/}/p' | tr -c '0-9\n' ' ' | tr -s ' ' '\n' | grep -v '^$' | tail -1)
    want=$((want + v))
  done
  [ "$total" -eq "$want" ] || fail "matrix total $total != bytes_local+intra+inter $want of step 2 layer 1"
  "$mb" export matrix r.h5 --router sigmoid_topk --step 2 --layer 1 --what tokens > t.txt || fail "export tokens"
  [ "$(cat t.txt)" != "$(cat m.txt)" ] || fail "--what tokens should differ from bytes"
  $mpiexec -n 4 "$mb" bench-a2a --matrix m.txt -w 1 -n 2 --rounds 2 --out b.h5 > bench.txt || { cat bench.txt; fail "bench-a2a --matrix failed"; }
  cat bench.txt
  grep -q "# bytes: $total in total" bench.txt || fail "the replay moved another total than the matrix"
  grep -qE "^ +$total +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +-?[0-9.]+% +0$" bench.txt || fail "expected one timed row with 0 wrong bytes"
  h5dump -d /nonself_bw_GBps b.h5 > /dev/null || fail "no no-self bandwidth in the bench file"
  $mpiexec -n 4 "$mb" bench-a2a --matrix m.csv -w 0 -n 1 --rounds 1 --a2a-algo pairwise | grep -qE " 0$" || fail "csv replay (pairwise)"
  # Errors: one line naming the file and the problem, exit 2, nothing left behind.
  expect_error "m.txt: 4 rows \(senders\) but 2 ranks" $mpiexec -n 2 "$mb" bench-a2a --matrix m.txt
  printf '1 2\n3 x\n' > bad.txt
  expect_error "bad.txt line 2, column 2: 'x' is not a byte count" $mpiexec -n 2 "$mb" bench-a2a --matrix bad.txt
  expect_error "holds several routers \(softmax_topk, sigmoid_topk\): name one with --router" "$mb" export matrix r.h5
  expect_error "--router nope: not a router of r.h5" "$mb" export matrix r.h5 --router nope
  expect_error "--step 3: r.h5 has 3 completed steps" "$mb" export matrix r.h5 --router softmax_topk --step 3 --out x.txt
  [ ! -e x.txt ] && [ ! -e x.txt.tmp ] || fail "a failed export left a file"
  expect_error "--format 'npy' is not one of txt, csv" "$mb" export matrix r.h5 --router softmax_topk --format npy
  expect_error "m.csv: file exists; refusing to overwrite" "$mb" export matrix r.h5 --router sigmoid_topk --format csv --out m.csv
  $mpiexec -n 4 "$mb" run $small --nodes 2 --routers softmax_topk --dispatch-matrix off --out nomat.h5 > /dev/null || fail "run failed"
  expect_error "no dataset /runs/softmax_topk/dispatch_bytes" "$mb" export matrix nomat.h5
  expect_error "unknown kind 'matrices'" "$mb" export matrices r.h5
  ;;
placement_roundtrip_np2)
  $mpiexec -n 2 "$mb" run $small --workload hot_experts --ep-size 4 --nodes 2 --placement eplb --redundant-experts 4 --routers softmax_topk --out e.h5 > /dev/null || fail "eplb run failed"
  "$mb" export placement e.h5 --format sglang --out p.json || fail "export sglang"
  cat p.json
  grep -q '^{"physical_to_logical_map": \[' p.json || fail "not SGLang's physical_to_logical_map JSON"
  [ "$(grep -c '^  \[' p.json)" -eq 2 ] || fail "expected one row per layer"
  "$mb" export placement e.h5 --format json --step 0 --out p0.json || fail "export json"
  grep -q '"ep_size": 4, "slots_per_rank": 5' p0.json || fail "json metadata"
  $mpiexec -n 2 "$mb" run $small --workload hot_experts --ep-size 4 --nodes 2 --placement file:p.json --routers softmax_topk --out f.h5 > run.txt || { cat run.txt; fail "run with --placement file: failed"; }
  "$mb" export placement f.h5 --format sglang | diff - p.json || fail "the placement read back differs from the one exported"
  $mpiexec -n 2 "$mb" run $small --ep-size 4 --nodes 2 --placement file:p0.json --routers softmax_topk --out f0.h5 > /dev/null || fail "run with a json placement"
  "$mb" export placement f0.h5 --format json --step 2 | grep -A3 physical_to_logical_map > a.txt
  grep -A3 physical_to_logical_map p0.json > b.txt
  diff a.txt b.txt || fail "the moebench json placement did not round-trip"
  # Errors: bad files name the file and the problem; nothing is written.
  $mpiexec -n 2 "$mb" run --experts 6 --top-k 2 --layers 2 --steps 1 --tokens-per-rank 200 --progress off --ep-size 4 --routers softmax_topk --out c.h5 > /dev/null || fail "contiguous run"
  expect_error "empty slots \(-1\); SGLang needs an expert in every physical slot" "$mb" export placement c.h5 --format sglang --out c.json
  [ ! -e c.json ] || fail "a failed export left a file"
  expect_error "--format is required: sglang or json" "$mb" export placement e.h5
  echo '{"physical_to_logical_map": [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 14]]}' > miss.json
  expect_error "file:miss.json: physical_to_logical_map\[0\]: expert 15 has no slot" $mpiexec -n 2 "$mb" run $small --ep-size 4 --placement file:miss.json --out z.h5
  [ ! -e z.h5 ] || fail "a refused run left a results file"
  echo '{"logical_count": [[1, 2]]}' > lc.json
  expect_error "holds logical_count" "$mb" run $small --placement file:lc.json
  expect_error "file:p.json: physical_to_logical_map\[0\]: 20 physical slots, not a positive multiple of the 3 EP ranks" $mpiexec -n 3 "$mb" run $small --placement file:p.json
  expect_error "--placement-loads: --placement file:p.json is fixed" "$mb" run $small --ep-size 4 --placement file:p.json --placement-loads ema
  ;;
offline_eplb_np2)
  # Record loads on one half (train), place once from them, evaluate on the other half (test).
  "$mb" trace gen --workload hot_experts --experts 16 --top-k 2 --layers 2 --steps 2 --tokens 2000 --seed 1 --out train.h5 > /dev/null || fail "trace gen train"
  "$mb" trace gen --workload hot_experts --experts 16 --top-k 2 --layers 2 --steps 2 --tokens 2000 --seed 2 --out test.h5 > /dev/null || fail "trace gen test"
  "$mb" trace gen --workload hot_experts --workload-arg hot_experts.first=8 --experts 16 --top-k 2 --layers 2 --steps 2 --tokens 2000 --seed 2 \
    --out shifted.h5 > /dev/null || fail "trace gen shifted"
  $mpiexec -n 2 "$mb" run --workload trace --trace train.h5 --workload-arg trace.split=block --ep-size 4 --nodes 2 --routers softmax_topk,sigmoid_topk --progress off --out rtrain.h5 > /dev/null || fail "train run"
  for loads in "file:train.h5" "file:rtrain.h5#sigmoid_topk"; do
    $mpiexec -n 2 "$mb" run --workload trace --trace test.h5 --workload-arg trace.split=block --ep-size 4 --nodes 2 --routers softmax_topk --progress off \
      --placement load_balanced --redundant-experts 4 --placement-loads "$loads" --force --out rtest.h5 > run.txt || { cat run.txt; fail "offline run ($loads)"; }
    grep -q "re-placement" run.txt && fail "an offline placement is placed once, before the first step"
    "$mb" report rtest.h5 > rep.txt || fail "report"
    cat rep.txt | tail -1
    grep -qE "offline placement \(softmax_topk\): balancedness 0\.[0-9]+ on its training loads, 0\.[0-9]+ on this run's \(test\) loads: gap [-+]0\.[0-9]+" rep.txt || fail "report lacks the train/test gap ($loads)"
    "$mb" report rtest.h5 --format json | grep -q '"offline_placement": \[{"run": "rtest.h5", "router": "softmax_topk", "train_balancedness": 0\.' || fail "json lacks the gap"
    "$mb" report rtest.h5 --format md | grep -q "offline placement (rtest.h5, softmax_topk)" || fail "md lacks the gap"
  done
  # Same distribution: a small gap; the hot experts moved (shifted.h5): a large one.
  gap() { "$mb" report "$1" | sed -n 's/.*gap \([-+][0-9.]*\) (train - test).*/\1/p'; }
  small_gap=$(gap rtest.h5)
  $mpiexec -n 2 "$mb" run --workload trace --trace shifted.h5 --workload-arg trace.split=block --ep-size 4 --nodes 2 --routers softmax_topk \
    --progress off --placement load_balanced --redundant-experts 4 --placement-loads file:train.h5 --out rshift.h5 > /dev/null || fail "shifted run"
  large_gap=$(gap rshift.h5)
  echo "gap on the same distribution: $small_gap, on shifted hot experts: $large_gap"
  awk -v a="$small_gap" -v b="$large_gap" 'BEGIN { exit !(a < 0.1 && a > -0.1 && b > 0.2) }' || fail "expected a small gap in-distribution and a large one shifted"
  # Loads from the file change the placement: the first step's placement is not the equal-load one.
  $mpiexec -n 2 "$mb" run --workload trace --trace test.h5 --workload-arg trace.split=block --ep-size 4 --nodes 2 --routers softmax_topk --progress off \
    --placement load_balanced --redundant-experts 4 --placement-loads none --out rnone.h5 > /dev/null || fail "equal-load run"
  [ "$("$mb" export placement rtest.h5 --format sglang --step 0)" != "$("$mb" export placement rnone.h5 --format sglang --step 0)" ] || fail "the file's loads did not shape the placement"
  expect_error "rtrain.h5 holds several routers \(softmax_topk, sigmoid_topk\): name one, file:rtrain.h5#ROUTER" \
    "$mb" run --workload trace --trace test.h5 --ep-size 4 --placement eplb --placement-loads file:rtrain.h5 --out z.h5
  expect_error "router 'bogus' is not in rtrain.h5" "$mb" run --workload trace --trace test.h5 --ep-size 4 --placement eplb --placement-loads file:rtrain.h5#bogus
  expect_error "train.h5 has 16 experts, the run 32" "$mb" run --experts 32 --placement eplb --placement-loads file:train.h5
  echo "not hdf5" > notes.txt
  expect_error "notes.txt: not an HDF5 file" "$mb" run --placement eplb --placement-loads file:notes.txt
  expect_error "placement contiguous does not use loads" "$mb" run --experts 16 --layers 2 --placement contiguous --placement-loads file:train.h5
  [ ! -e z.h5 ] || fail "a refused run left a results file"
  ;;
replace_max_moves_np2)
  rm17="--experts 16 --top-k 2 --layers 2 --steps 4 --tokens-per-rank 500 --hidden 256 --progress off --workload rotating_hotspot --ep-size 4 --nodes 2 --placement load_balanced --routers softmax_topk"
  $mpiexec -n 2 "$mb" run $rm17 --out free.h5 > free.txt || fail "free run"
  $mpiexec -n 2 "$mb" run $rm17 --replace-max-moves 2 --out lim.h5 > lim.txt || fail "limited run"
  cat lim.txt
  moves() { h5dump -y -w 0 -d /runs/softmax_topk/replaced_copies "$1" | sed -n '/DATA {/,/}/p' | tr -c '0-9\n' ' ' | tr -s ' ' '\n' | grep -v '^$'; }
  echo "free: $(moves free.h5 | tr '\n' ' ')  limited: $(moves lim.h5 | tr '\n' ' ')"
  [ "$(moves free.h5 | sort -n | tail -1)" -gt 2 ] || fail "the unlimited re-placements should move more than 2 copies somewhere"
  [ "$(moves lim.h5 | sort -n | tail -1)" -le 2 ] || fail "--replace-max-moves 2 moved more than 2 copies in a layer"
  [ "$(moves lim.h5 | sort -n | tail -1)" -gt 0 ] || fail "--replace-max-moves 2 should still move"
  grep -qE "GPU balancedness gained [-+][0-9.]+ in total, [-+][0-9.]+ per GB moved" lim.txt || fail "summary lacks balancedness per GB moved"
  "$mb" report lim.h5 --format json | grep -q '"balancedness_gain_per_GB": [-0-9]' || fail "report json lacks balancedness per GB"
  expect_error "--replace-max-moves: must be >= 0 \(got -1\)" "$mb" run $small --replace-max-moves -1
  expect_error "--replace-max-moves: placement contiguous is never re-placed" "$mb" run $small --replace-max-moves 4
  ;;
*) fail "unknown case $case_name" ;;
esac
echo "PASS: $case_name"
