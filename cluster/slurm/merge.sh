#!/usr/bin/env bash
# One comparison report from the results files of a sweep (or any results files): each file's
# `moebench report` table, one row per router, with the file's name in front, in one table.
#   cluster/slurm/merge.sh DIR                  -> DIR/comparison.txt (and stdout)
#   cluster/slurm/merge.sh -o OUT.txt A.h5 B.h5 ...
# A file whose report fails (missing, partial, not a results file) makes the merge fail, naming it.
# (When `moebench report A.h5 B.h5 --compare` exists, this can call it instead.)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${MOEBENCH_BIN:-$root/build/release/moebench}
out=""
if [ "${1:-}" = -o ]; then out=${2:?-o needs a file}; shift 2; fi
[ $# -ge 1 ] || { echo "usage: $0 DIR | $0 -o OUT.txt FILE.h5..." >&2; exit 2; }
if [ $# -eq 1 ] && [ -d "$1" ]; then
  dir=$1
  [ -n "$out" ] || out=$dir/comparison.txt
  shopt -s nullglob
  files=("$dir"/*.h5)
  [ ${#files[@]} -gt 0 ] || { echo "merge.sh: $dir: no .h5 results files in the folder" >&2; exit 1; }
else
  files=("$@")
fi
[ -x "$bin" ] || { echo "merge.sh: MOEBENCH_BIN=$bin: no moebench binary" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
width=4
for f in "${files[@]}"; do l=$(basename "$f" .h5); [ ${#l} -le $width ] || width=${#l}; done
header="" legend=""
: > "$tmp/rows"; : > "$tmp/runs"
for f in "${files[@]}"; do
  label=$(basename "$f" .h5)
  "$bin" report "$f" > "$tmp/one" 2> "$tmp/err" || { echo "merge.sh: $f: report failed: $(head -1 "$tmp/err")" >&2; exit 1; }
  h=$(grep -m1 '^router ' "$tmp/one") || { echo "merge.sh: $f: no router table in its report" >&2; exit 1; }
  status=$(grep -m1 '^status:' "$tmp/one" || echo "status: ?")
  [[ $status == "status: complete"* ]] || { echo "merge.sh: $f: $status (not a finished run)" >&2; exit 1; }
  if [ -z "$header" ]; then header=$h
  elif [ "$h" != "$header" ]; then echo "merge.sh: $f: its table has other columns than the first file's (a different backend?): $h" >&2; exit 1; fi
  printf '%-*s  %s | %s\n' "$width" "$label" "$(grep -m1 '^command:' "$tmp/one")" "$status" >> "$tmp/runs"
  awk -v w="$width" -v l="$label" 'started && NF == 0 {exit} started && /^[a-z_]+\/?[a-z_]*:/ {exit}
       started {printf "%-*s  %s\n", w, l, $0} /^router / {started = 1}' "$tmp/one" >> "$tmp/rows"
  [ -n "$legend" ] || legend=$(awk '/^router /{s=1; next} s && /^[a-z_\/*]+:/ {p=1} p' "$tmp/one")
done
{
  echo "moebench comparison of ${#files[@]} results files"
  cat "$tmp/runs"
  echo
  printf '%-*s  %s\n' "$width" file "$header"
  cat "$tmp/rows"
  echo "$legend"
} > "$tmp/comparison"
if [ -n "$out" ]; then cp "$tmp/comparison" "$out"; fi
cat "$tmp/comparison"
