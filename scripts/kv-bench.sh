#!/usr/bin/env bash
# examples/kv.rs against Debian's redis-server, both single-threaded, side by side in one
# run: `redis-benchmark -t ping_mbulk,set,get -c 50` with -P 1 and -P 16, the two servers
# interleaved, ROUNDS rounds. Prints a Markdown table of requests/s and server CPU per
# request (utime + stime from /proc/PID/stat around each redis-benchmark invocation), with
# kv / redis-server ratios.
#
#   scripts/kv-bench.sh                  # 3 rounds
#   KV_ROUNDS=1 scripts/kv-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${KV_ROUNDS:-3}"
for cmd in redis-server redis-benchmark; do
    command -v "$cmd" >/dev/null || { echo "kv-bench: $cmd is not installed (apt-get install redis-server redis-tools)" >&2; exit 2; }
done
cargo build -q --release --example kv
kv_port=6381 redis_port=6391
target/release/examples/kv --addr 127.0.0.1:$kv_port >/dev/null &
kv_pid=$!
redis-server --port $redis_port --save '' --appendonly no --bind 127.0.0.1 >/dev/null &
redis_pid=$!
trap 'kill $kv_pid $redis_pid 2>/dev/null || true' EXIT
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
echo "| test | round | kv req/s | redis req/s | kv/redis req/s | kv µs CPU/req | redis µs CPU/req | kv/redis CPU |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$rounds"); do
    for P in 1 16; do
        n=$([ "$P" = 1 ] && echo 200000 || echo 2000000)
        for t in ping_mbulk set get; do
            declare -A rps cpu
            for who in kv redis; do
                port=$([ $who = kv ] && echo $kv_port || echo $redis_port)
                pid=$([ $who = kv ] && echo $kv_pid || echo $redis_pid)
                before=$(ticks "$pid")
                out=$(redis-benchmark -p "$port" -t "$t" -c 50 -P "$P" -n "$n" -q 2>/dev/null | tr '\r' '\n' | grep 'requests per second' | tail -1)
                after=$(ticks "$pid")
                rps[$who]=$(echo "$out" | sed -E 's/.*: ([0-9.]+) requests per second.*/\1/')
                cpu[$who]=$(awk -v a="$after" -v b="$before" -v hz="$hz" -v n="$n" 'BEGIN {printf "%.2f", (a - b) / hz / n * 1e6}')
            done
            awk -v t="$t" -v P="$P" -v r="$round" -v k="${rps[kv]}" -v s="${rps[redis]}" -v kc="${cpu[kv]}" -v sc="${cpu[redis]}" \
                'BEGIN {printf "| %s -P %s | %s | %.0f | %.0f | %.2f | %s | %s | %.2f |\n", toupper(t), P, r, k, s, k / s, kc, sc, (sc > 0 ? kc / sc : 0)}'
        done
    done
done
