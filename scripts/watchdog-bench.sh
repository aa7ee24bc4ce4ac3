#!/usr/bin/env bash
# The blocked-loop watchdog's cost: examples/echo.rs with the warning on (the default,
# 100 ms) and off (COPAS_BLOCK_WARNING=off), side by side, interleaved ROUNDS times: 64 B
# echo, closed loop, at 50 and 1000 connections, server CPU per round trip from
# /proc/PID/stat (copas-bench load --server-pid).
#
#   scripts/watchdog-bench.sh            # 3 rounds, 5 s windows
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${WD_ROUNDS:-3}" duration="${WD_DURATION:-5}"
cargo build -q --release --example echo -p copas
cargo build -q --release -p copas-bench
bench=target/release/copas-bench
echo "| connections | round | on: µs CPU/rt | off: µs CPU/rt | on / off |"
echo "|---:|---:|---:|---:|---:|"
for conns in 50 1000; do
    for round in $(seq 1 "$rounds"); do
        declare -A cpu
        for mode in on off; do
            port=$((7400 + RANDOM % 500))
            if [ $mode = off ]; then
                COPAS_BLOCK_WARNING=off target/release/examples/echo --addr 127.0.0.1:$port >/dev/null &
            else
                target/release/examples/echo --addr 127.0.0.1:$port >/dev/null &
            fi
            pid=$!
            sleep 0.3
            out=$($bench load --addr 127.0.0.1:$port --mode echo --connections "$conns" --warmup 1 --duration "$duration" --server-pid $pid 2>&1)
            kill $pid; wait $pid 2>/dev/null || true
            cpu[$mode]=$(echo "$out" | grep -oE 'server CPU[^0-9]*[0-9.]+ µs' | grep -oE '[0-9.]+' | head -1)
        done
        awk -v c="$conns" -v r="$round" -v a="${cpu[on]}" -v b="${cpu[off]}" 'BEGIN {printf "| %s | %s | %s | %s | %.3f |\n", c, r, a, b, a / b}'
    done
done
