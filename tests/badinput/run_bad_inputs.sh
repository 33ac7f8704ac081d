#!/usr/bin/env bash
# The bad-input table (cases.txt beside this script), run on NP processes:
#   run_bad_inputs.sh MOEBENCH WORKDIR NP [NAME_REGEX]
# Each case: exit status as listed (no hang: 60 s at most), exactly one "moebench: error:" line
# matching the listed message, no file left behind, no existing file changed.
set -u
mb=$1
work=$2
np=$3
only=${4:-.}
here=$(cd "$(dirname "$0")" && pwd)
mpiexec=${MOEBENCH_MPIEXEC:-mpiexec --oversubscribe}
py=/usr/bin/python3
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

make_fixtures() {
  local shape="--experts 16 --top-k 2 --layers 2 --tokens-per-rank 64 --steps 2 --progress off"
  echo "not hdf5" > notes.txt
  "$mb" run $shape --out results.h5 > /dev/null || return 1
  head -c 3000 results.h5 > truncated_results.h5
  "$mb" trace gen --experts 16 --top-k 2 --layers 2 --steps 2 --tokens 200 --seq-len 50 --out trace.h5 > /dev/null || return 1
  head -c 2000 trace.h5 > truncated.h5
  printf 'layer_id,token_id,expert_0,expert_1,expert_2,expert_3\n0,0,0.5,0,0.25,0\n0,1,0,0.7,0,0.1\n' > ok.csv
  awk 'BEGIN { printf "layer_id,token_id"; for (e = 0; e < 16; e++) printf ",expert_%d", e; print "";
               for (t = 0; t < 100; t++) { printf "0,%d", t; for (e = 0; e < 16; e++) printf ",%s", e == t % 16 ? "0.9" : "0"; print "" } }' > assign.csv
  "$mb" trace convert --from csv --in assign.csv --out assign.h5 > /dev/null || return 1
  $py - <<'PY' || return 1
import shutil, h5py, numpy as np
def copy(src, dst):
    shutil.copy(src, dst)
    return h5py.File(dst, "r+")
with copy("trace.h5", "v2.h5") as f: f.attrs["format_version"] = np.int64(2)
with copy("trace.h5", "offsets.h5") as f:
    del f["steps/offset"]; f["steps/offset"] = np.array([0, 400], dtype=np.int64)
with copy("trace.h5", "int_logits.h5") as f:
    d = f["logits"][...]; del f["logits"]; f["logits"] = d.astype(np.int32)
with copy("trace.h5", "logits_shape.h5") as f:
    d = f["logits"][...]; del f["logits"]; f["logits"] = d[:, :, :8]
with copy("trace.h5", "lies.h5") as f: f.attrs["num_tokens"] = np.int64(9999)
with copy("trace.h5", "lies_e.h5") as f: f.attrs["num_experts"] = np.int64(20)
with copy("assign.h5", "ids.h5") as f: f["expert_ids"][0, 0, 0] = 99
with copy("trace.h5", "nan.h5") as f: f["logits"][0, 0, 0] = np.nan
with copy("results.h5", "v9_results.h5") as f: f.attrs["format_version"] = np.int64(9)
PY
  # configuration and topology files
  printf 'experts = 16\nno_such_key = 3\n' > unknown_key.ini
  printf 'experts = abc\n' > bad_value.ini
  printf 'intra-bw-GBps = inf\n' > inf_bw.ini
  printf '[intra]\nbandwidth_GBps = -5\nlatency_us = 3\n[inter]\nbandwidth_Gbps = 400\nlatency_us = 6\n' > neg_bw.ini
  printf '[intra]\nbandwidth_GBps = 450\n[inter]\nbandwidth_Gbps = inf\n' > inf_bw_topo.ini
  printf '[intra\nbandwidth_GBps == 450 ]]\n' > junk_topo.ini
  printf 'links = sometimes\n' > links_topo.ini
  # importer inputs (workloads/import/*.cpp document each malformed case)
  printf 'layer_id,token_id,expert_0,expert_1,expert_2,expert_3\n0,0,0.5,0,0.25\n' > short.csv
  printf 'layer_id,token_id,expert_0,expert_1,expert_2,expert_3\n0,0,0.5,abc,0.25,0\n' > text.csv
  printf 'layer_id,token_id,expert_0,expert_1,expert_2,expert_3\n0,0,0.5,nan,0.25,0\n' > nan.csv
  printf 'expert_0,expert_1,expert_2\n1.5,70000,-2\n' > huge.csv
  printf 'seq,expert_0,expert_1,expert_2,expert_3\n1,0.5,0,0,0\n2,0,0.5,0,0\n1,0,0,0.5,0\n' > interleaved.csv
  : > empty.csv
  printf '{"layer": 0, "ids": [1, 2], "w": [0.5, 0.2]}\n{"layer": 0, "ids": [1, 9], "w": [0.5, 0.2]}\n' > big.jsonl
  printf '{"layer": 0, "ids": [1, 2], "w": [0.5]}\n' > len.jsonl
  printf '{"layer": 0, "ids": [1, 2]\n' > broken.jsonl
  printf '{"layer": 0, "w": [0.5]}\n' > lacks.jsonl
  printf '{"layer": 0, "ids": [3, 3], "w": [0.5, 0.2]}\n' > dup.jsonl
  printf 'not numpy' > bad.npy
  perl -e 'my $h = "{\x27descr\x27: \x27<f4\x27, \x27fortran_order\x27: False, \x27shape\x27: (4611686018427387904, 4), }";
           $h .= " " x (128 - 10 - length($h) - 1) . "\n"; print "\x93NUMPY\x01\x00", pack("v", length($h)), $h, pack("f<*", 1, 2, 3, 4);' > huge.npy
  perl -e 'my $h = "{\x27descr\x27: \x27<f4\x27, \x27fortran_order\x27: False, \x27shape\x27: (8, 4), }";
           $h .= " " x (128 - 10 - length($h) - 1) . "\n"; print "\x93NUMPY\x01\x00", pack("v", length($h)), $h, pack("f<*", 1, 2, 3, 4);' > short.npy
  cp "$here"/fuzz_*.* .  # inputs the fuzzers found (tests/fuzz), kept as regression cases
  printf '{"step": 0, "layer": 0, "rank": 0, "top_indices": [[1, 2], [3, 4]\n' > mega_bad.jsonl
  printf '{"step": 0, "layer": 0, "rank": 0, "top_indices": [[1, 12], [3, 4]]}\n' > mega.jsonl
  # labelled captures (issue 16 §5): domain columns, token tables, domain -> experts maps
  $py -c 'import numpy as np; np.save("logits8.npy", np.arange(32, dtype=np.float32).reshape(8, 4))' || return 1
  printf 'sequence,position,domain\n0,0,0\n0,1,1\n0,2,1\n' > table_short.csv
  printf 'sequence,foo\n0,0\n' > table_column.csv
  printf 'dom,expert_0,expert_1,expert_2,expert_3\n0,0.5,0,0,0\n1,0,0.5,0,0\n' > dom.csv
  printf 'dom,expert_0,expert_1,expert_2,expert_3\n0,0.5,0,0,0\n-1,0,0.5,0,0\n' > neg_dom.csv
  "$mb" trace convert --from csv --in dom.csv --field domain=dom --out labelled.h5 > /dev/null || return 1
  printf '{"step": 0, "rank": 0, "top_indices": [[1, 2]]}\n' > mega_nolayer.jsonl
  printf '{"step": 0, "layer": 0, "rank": 0, "top_indices": [[1, 2], [3, 4]]}\n{"step": 0, "layer": 1, "rank": 0, "top_indices": [[1, 2]]}\n' > mega_short.jsonl
  mkdir -p mega_trunc
  printf '{"step": 0, "layer": 0, "rank": 0, "num_tokens": 2, "topk": 2, "top_indices": [[1, 2], [3, 4]], "logit_offset": 0, "logit_bytes": 32, "logit_shape": [2, 8]}\n' > mega_trunc/router_trace_rank0.jsonl
  printf '0123456789' > mega_trunc/logits_rank0.bin
  npy() {  # npy FILE DESCR SHAPE PACK VALUES...: a NumPy v1 file written with perl
    perl -e 'my ($d, $s, $p, @v) = @ARGV; my $h = "{\x27descr\x27: \x27$d\x27, \x27fortran_order\x27: False, \x27shape\x27: $s, }";
             $h .= " " x (64 - 10 - length($h) - 1) . "\n"; print "\x93NUMPY\x01\x00", pack("v", length($h)), $h, pack("$p*", @v);' "${@:2}" > "$1"
  }
  printf '{"l": 0, "p": 0, "ids": [1]}\n{"l": 0, "p": 1, "ids": [2]}\n{"l": 1, "p": 0, "ids": [3]}\n{"l": 0, "p": 1, "ids": [4]}\n' > dup_tok.jsonl
  printf '{"l": 0, "p": 0, "ids": [1]}\n{"l": 0, "p": 1, "ids": [2]}\n{"l": 1, "p": 0, "ids": [3]}\n' > missed.jsonl
  npy vllm_gap.npy '<i2' '(1, 1, 3)' 's<' 5 -1 6
  npy vllm_f4.npy '<f4' '(1, 1, 3)' 'f<' 5 1 6
  npy vllm_2d.npy '<i4' '(1, 3)' 'l<' 5 1 6
  npy vllm_cut.npy '<i4' '(2, 1, 3)' 'l<' 5 1 6
  # count-only captures (issue 16 §3): counts-csv, counts-npy, sglang-stat
  printf 'step,layer,expert,count\n0,0,0,3\n0,0,1,-2\n' > neg_counts.csv
  printf 'step,layer,expert\n0,0,0\n' > nocount.csv
  printf 'step,layer,expert,count\n0,0,0,3\n0,0,1,2\n0,0,0,4\n' > dup_counts.csv
  printf 'step,layer,expert,count\n0,0,0,3\n0,1,0,2\n' > uneven_counts.csv
  $py - <<'PY' || return 1
import numpy as np
np.save("counts.npy", np.array([[[3, 1], [2, 2]], [[0, 4], [4, 0]]], dtype=np.int32))
np.save("counts_float.npy", np.ones((2, 2, 2), dtype=np.float32))
np.save("counts_2d.npy", np.ones((2, 2), dtype=np.int64))
c = np.ones((2, 2, 2), dtype=np.int16); c[1, 0, 1] = -5; np.save("counts_neg.npy", c)
np.save("counts_short.npy", np.ones((4, 2, 8), dtype=np.int64))
d = open("counts_short.npy", "rb").read(); open("counts_short.npy", "wb").write(d[:200])
open("stat.pt", "wb").write(b"PK\x03\x04 a torch.save zip archive")
PY
  "$mb" trace convert --from counts-npy --in counts.npy --out counts.h5 > /dev/null || return 1
}

make_fixtures > fixtures.log 2>&1 || { cat fixtures.log; echo "FAIL: fixtures"; exit 1; }
sleep 1; touch .fixtures_made
snapshot() { find . -maxdepth 1 -type f ! -name '*.out' ! -name fixtures.log ! -name .fixtures_made -exec md5sum {} + | sort -k2; }
before=$(snapshot)
failed=0 ran=0
while IFS= read -r line; do
  case $line in ''|'#'*) continue ;; esac
  # fields are separated by " | " (a regex may hold "|" without spaces around it)
  field() { awk -F ' [|] ' -v i="$1" '{ gsub(/^ +| +$/, "", $i); print $i }' <<< "$line"; }
  name=$(field 1); want=$(field 2); msg=$(field 3); args=$(field 4)
  echo "$name" | grep -qE -- "$only" || continue
  # `trace` subcommands run as one process; a case tagged #np2 runs only on 2 processes.
  case "$args" in *'#np2') [ "$np" -gt 1 ] || continue; args=${args%#np2} ;; trace*) [ "$np" -eq 1 ] || continue ;; esac
  eval "set -- $args"
  ran=$((ran + 1))
  if [ "$np" -gt 1 ]; then cmd=($mpiexec -n "$np" "$mb" "$@"); else cmd=("$mb" "$@"); fi
  t0=$(date +%s)
  timeout 60 "${cmd[@]}" > "$name.out" 2>&1 < /dev/null; rc=$?
  secs=$(( $(date +%s) - t0 ))
  errs=$(grep -c '^moebench: error:' "$name.out")
  problem=""
  if [ "$rc" -eq 124 ]; then problem="no exit within 60 s (hang?)"
  elif [ "$rc" -ne "$want" ]; then problem="exit status $rc, expected $want"
  elif [ "$errs" -ne 1 ]; then problem="$errs 'moebench: error:' lines, expected 1"
  elif ! grep '^moebench: error:' "$name.out" | grep -qE -- "$msg"; then problem="the error line does not match '$msg'"
  fi
  after=$(snapshot)
  if [ -z "$problem" ] && [ "$after" != "$before" ]; then
    problem="files changed: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | tr '\n' ' ')"
  fi
  find . -maxdepth 1 -newer .fixtures_made -type f ! -name '*.out' -delete  # leave the next case a clean folder
  if [ -n "$problem" ]; then
    failed=$((failed + 1))
    echo "FAIL $name (np $np, ${secs}s): $problem"
    grep -v '^ \|^--\|^$' "$name.out" | head -5 | sed 's/^/    /'
  else
    echo "ok   $name (np $np, ${secs}s): $(grep '^moebench: error:' "$name.out" | cut -c1-150)"
  fi
done < "$here/cases.txt"
echo "$ran cases on $np process(es), $failed failed"
[ "$ran" -gt 0 ] && [ "$failed" -eq 0 ]
