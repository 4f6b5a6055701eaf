#!/usr/bin/env bash
# One command for the node-agents benchmark on a fresh Debian/Ubuntu machine: builds
# corral and the benchmark in release mode from this tree, then runs 2,000 `true` jobs
# through 3 managers and 3 real agents, and the same jobs through a tuned one-host
# Slurm (benches/agents/slurm.sh installs slurm-wlm and munge if missing). Arguments go
# to the benchmark, e.g.
#   benches/agents/run.sh --agent-jobs 500 --latency-samples 20
#   benches/agents/run.sh --markdown agents-bench.md
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
cargo build --release -p corral -p corral-cluster-bench
target="${CARGO_TARGET_DIR:-$root/target}"
exec "$target/release/corral-cluster-bench" --agents --corral "$target/release/corral" \
    --slurm-script "$root/benches/agents/slurm_bench.py" "$@"
