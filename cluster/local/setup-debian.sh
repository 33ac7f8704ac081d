#!/usr/bin/env bash
# Installs what moebench needs on Debian 12 (bookworm) or newer, then configures and builds it.
#   cluster/local/setup-debian.sh [PRESET]      (PRESET: release (default), dev, asan)
# Runs apt-get only for packages that are missing; needs root (or sudo) for that.
set -euo pipefail
preset=${1:-release}
root=$(cd "$(dirname "$0")/../.." && pwd)
pkgs=(build-essential cmake ninja-build git libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools
      libboost-program-options-dev libgtest-dev libbenchmark-dev)
# For the tests of cluster/ (a throw-away local Slurm, network-namespace hosts); installed the same way.
cluster_test_pkgs=(slurm-wlm munge iproute2 iputils-ping)
missing=()
for p in "${pkgs[@]}" "${cluster_test_pkgs[@]}"; do
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
