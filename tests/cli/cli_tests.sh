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
*) fail "unknown case $case_name" ;;
esac
echo "PASS: $case_name"
