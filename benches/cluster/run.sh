#!/usr/bin/env bash
# One command for the cluster benchmark on a fresh Debian/Ubuntu machine: installs etcd
# (package etcd-server) if it is missing, builds corral and the benchmark in release
# mode from this tree, and runs it. Arguments go to the benchmark, e.g.
#   benches/cluster/run.sh --quick
#   benches/cluster/run.sh --markdown cluster-bench.md
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

if ! command -v etcd >/dev/null 2>&1; then
    echo "etcd not found: installing the Debian package etcd-server" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y etcd-server
fi
# On a machine with systemd the package starts a system etcd; it idles on its own
# ports, but it shares the CPU with the benchmark.
if pgrep -x etcd >/dev/null 2>&1; then
    echo "note: an etcd process is already running (system service?); it shares the CPU with the benchmark" >&2
fi

cargo build --release -p corral -p corral-cluster-bench
target="${CARGO_TARGET_DIR:-$root/target}"
exec "$target/release/corral-cluster-bench" --corral "$target/release/corral" "$@"
