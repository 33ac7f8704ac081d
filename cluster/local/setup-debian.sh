#!/usr/bin/env bash
# Installs what moebench needs on Debian 12 (bookworm) or newer, then configures and builds it.
#   cluster/local/setup-debian.sh [PRESET]                   (PRESET: release (default), dev, asan, fuzz)
#   cluster/local/setup-debian.sh [PRESET] --test-packages   also what the tests use (.ci/run)
# Runs apt-get only for packages that are missing; needs root (or sudo) for that.
set -euo pipefail
preset=release
test_packages=0
for a in "$@"; do
  case $a in
  --test-packages) test_packages=1 ;;
  *) preset=$a ;;
  esac
done
root=$(cd "$(dirname "$0")/../.." && pwd)
pkgs=(build-essential cmake ninja-build git libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools
      libboost-program-options-dev libgtest-dev libbenchmark-dev)
# What the tests use besides (--test-packages; .ci/run): the PyTorch capture script; analysis/plot.py
# and analysis/realism.py (the HTML check runs chromium); cluster/ (a throw-away local Slurm,
# network-namespace hosts). Tests skip without them.
trace_test_pkgs=(python3-torch python3-h5py python3-numpy)
analysis_test_pkgs=(python3 python3-h5py python3-numpy python3-matplotlib chromium fonts-dejavu-core)
cluster_test_pkgs=(slurm-wlm munge iproute2 iputils-ping)
# The libFuzzer targets (tests/fuzz, the fuzz preset): clang 16 (14 lacks std::source_location with
# GCC 12's library) and its runtime with -fsanitize=fuzzer.
fuzz_test_pkgs=(clang-16 libclang-rt-16-dev)
[ "$test_packages" -eq 1 ] && pkgs+=("${trace_test_pkgs[@]}" "${analysis_test_pkgs[@]}" "${cluster_test_pkgs[@]}" "${fuzz_test_pkgs[@]}")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cd "$root"
cmake --preset "$preset" > /dev/null
cmake --build --preset "$preset" -j "$(nproc)"
echo "setup: built $root/build/$preset/moebench"
