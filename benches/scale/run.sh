#!/usr/bin/env bash
# One command for the scale benchmark: builds corral and the benchmark in release mode
# from this tree, then, for each pool size, starts 3 managers (sled, fsync, shipped
# timings) and agents simulating 1,000 nodes each (`corral agent --simulate 1000`) and
# records time to register, the leader's and a follower's CPU and memory at steady
# state, raft entries/s, submit and submit-to-running latency, a 5,000-job burst (rate,
# failures, elections), and the node-loss case (one agent killed under 100 gangs).
# Arguments go to the benchmark, e.g.
#   benches/scale/run.sh --scale-nodes 1000,5000 --loss-gangs 0
#   benches/scale/run.sh --markdown scale-bench.md
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
cargo build --release -p corral -p corral-cluster-bench
target="${CARGO_TARGET_DIR:-$root/target}"
exec "$target/release/corral-cluster-bench" --scale --corral "$target/release/corral" "$@"
