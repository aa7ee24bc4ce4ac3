#!/usr/bin/env bash
# Every measurement the docs quote, in one run on a quiet machine, each printed under a
# heading; the copas-bench report also lands in docs/bench-results.md and .svg. About
# 25 minutes on 2 cores.
#
#   scripts/bench-all.sh 2>&1 | tee /tmp/bench-all.log
#
# 1. criterion: corosensei's raw switch against copas's task switch and spawn+join
# 2. the embedding benches (unblock stall, remote spawn latency, channels)
# 3. copas-bench: echo, 2 threads, churn, open loop, HTTP, TLS, idle memory (2 passes)
# 4. the blocked-loop watchdog on against off (scripts/watchdog-bench.sh)
# 5. kv against redis-server (scripts/kv-bench.sh)
# 6. L1d misses and instructions per HTTP request (scripts/l1d.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# bench-all $(date -u +%FT%TZ) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "## 1. criterion: raw switch, task switch, spawn+join"
cargo bench -q --bench runtime -- 'raw|ping-pong|inside a task' 2>&1 | grep -E '^[a-z].*time:|time:' || true
echo "## 2. embedding"
cargo bench -q --bench embed 2>&1 | tail -n 40
echo "## 3. copas-bench"
cargo run -q --release -p copas-bench -- --passes "${BENCH_PASSES:-2}"
echo "## 4. watchdog on/off"
WD_ROUNDS=3 scripts/watchdog-bench.sh
echo "## 5. kv vs redis-server"
KV_ROUNDS=2 scripts/kv-bench.sh
echo "## 6. L1d per HTTP request"
L1D_SERVERS="copas tokio may_minihttp epoll" scripts/l1d.sh
