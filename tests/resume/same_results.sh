#!/usr/bin/env bash
# same_results.sh A.h5 B.h5: exit 0 when two results files hold the same data, as h5diff sees it,
# apart from the fields that the files themselves list as varying between runs of one
# configuration (root attribute `varying`: timings, hosts, how the run was started). Prints the
# differences otherwise.
set -u
a=$1 b=$2
attr() { h5dump -a "/$2" "$1" 2>/dev/null | sed -n 's/^ *(0): "\(.*\)"$/\1/p' | sed 's/\\000//g'; }
varying=$(attr "$a" varying)
[ -n "$varying" ] || { echo "same_results: $a has no 'varying' attribute"; exit 2; }
[ "$varying" = "$(attr "$b" varying)" ] || { echo "same_results: the files list different varying fields"; exit 1; }
vattrs=${varying#attributes: }; vattrs=${vattrs%%;*}
vdsets=${varying#*datasets: }
excl=()
for r in $(attr "$a" routers | tr ',' ' '); do
  for d in $vdsets; do excl+=(--exclude-path "/runs/$r/$d"); done
done
# Datasets and the attributes of every object but the root.
if ! out=$(h5diff -r --exclude-attribute / "${excl[@]}" "$a" "$b" 2>&1); then
  echo "$out" | grep -E "^(dataset|attribute|group|Not comparable)|^[1-9][0-9]* differences|not in|only in" | head -40
  exit 1
fi
# Root attributes, except the varying ones.
names() { h5dump -H -g / "$1" 2>/dev/null | sed -n 's/^ *ATTRIBUTE "\(.*\)" {$/\1/p' | sort; }
[ "$(names "$a")" = "$(names "$b")" ] || { echo "same_results: root attribute names differ:"; diff <(names "$a") <(names "$b"); exit 1; }
for n in $(names "$a"); do
  case " $vattrs " in *" $n "*) continue ;; esac
  [ "$(attr "$a" "$n")" = "$(attr "$b" "$n")" ] || { echo "same_results: root attribute $n differs: '$(attr "$a" "$n")' vs '$(attr "$b" "$n")'"; exit 1; }
done
exit 0
