#!/usr/bin/env bash
# HTTP/1.1 keep-alive with wrk: the copas hello-world server (examples/http.rs) against
# the same server with a thread per connection (examples/http_threads.rs) and on a tokio
# current_thread runtime (`copas-bench serve-tokio-http`); optionally the hand-written
# epoll loop (`epoll`) and may_minihttp with one worker (`may`). copas-bench's own HTTP
# tables (`cargo run --release -p copas-bench -- --sections http,mt2`) cover the same
# servers with 2-thread rows; this script adds the pipelined variant. Each server runs once, on its
# own free loopback port; the wrk runs are interleaved (pass after pass, the servers'
# order rotating), and around every run the script samples the server's CPU time
# (utime + stime in /proc/PID/stat), wrk's (bash `time`) and the machine's (/proc/stat).
# Prints a Markdown table of medians. About 2 minutes with the defaults.
#
#   scripts/http-bench.sh
#   HTTP_BENCH_PASSES=5 HTTP_BENCH_DURATION=8 scripts/http-bench.sh
#
# Settings (environment):
#   HTTP_BENCH_PASSES       passes over servers x variants; medians reported (default 3)
#   HTTP_BENCH_DURATION     seconds per wrk run (default 5)
#   HTTP_BENCH_CONNECTIONS  wrk -c (default 100)
#   HTTP_BENCH_THREADS      wrk -t (default 2)
#   HTTP_BENCH_DEPTH        requests per write in the pipelined variant (default 16)
#   HTTP_BENCH_VARIANTS     any of "keepalive pipelined" (default both)
#   HTTP_BENCH_SERVERS      any of "copas threads tokio epoll may" (default "copas threads
#                           tokio"; the first is the baseline of the ratio columns)
#   HTTP_BENCH_NO_BUILD     set to 1 to skip cargo build
#
# Exits non-zero if a server fails to start or dies, or wrk fails or reports socket
# errors or non-2xx/3xx responses (the table is printed all the same).
set -euo pipefail
cd "$(dirname "$0")/.."

passes="${HTTP_BENCH_PASSES:-3}"
duration="${HTTP_BENCH_DURATION:-5}"
connections="${HTTP_BENCH_CONNECTIONS:-100}"
wrk_threads="${HTTP_BENCH_THREADS:-2}"
depth="${HTTP_BENCH_DEPTH:-16}"
read -r -a variants <<<"${HTTP_BENCH_VARIANTS:-keepalive pipelined}"
read -r -a servers <<<"${HTTP_BENCH_SERVERS:-copas threads tokio}"

command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
hz="$(getconf CLK_TCK)"
ncpu="$(nproc)"

work="$(mktemp -d)"
declare -A pid_of addr_of
cleanup() {
    local s p
    for s in "${!pid_of[@]}"; do
        p="${pid_of[$s]}"
        if kill -0 "$p" 2>/dev/null; then
            kill "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

server_cmd() {
    case "$1" in
    copas) echo "target/release/examples/http" ;;
    threads) echo "target/release/examples/http_threads" ;;
    tokio) echo "target/release/copas-bench serve-tokio-http" ;;
    epoll) echo "target/release/copas-bench serve-epoll-http" ;;
    may) echo "target/release/copas-bench serve-may-http --workers 1" ;;
    *) echo "unknown server '$1' (copas, threads, tokio, epoll, may)" >&2; return 1 ;;
    esac
}
for s in "${servers[@]}"; do server_cmd "$s" >/dev/null; done

if [ "${HTTP_BENCH_NO_BUILD:-0}" != 1 ]; then
    echo "== building release binaries" >&2
    cargo build --release --quiet -p copas --example http --example http_threads
    cargo build --release --quiet -p copas-bench
fi

# One GET with Connection: close over bash's /dev/tcp; prints the response.
probe() {
    local port="$1"
    timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port
        printf 'GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3
        cat <&3"
}

start_server() {
    local s="$1" cmd p addr=""
    cmd="$(server_cmd "$s")"
    # shellcheck disable=SC2086 # the command holds a subcommand word
    $cmd --addr 127.0.0.1:0 >"$work/$s.out" 2>"$work/$s.err" &
    p=$!
    pid_of[$s]=$p
    for _ in $(seq 1 100); do
        addr="$(sed -n 's#^.*listening on http://\([^/]*\)/.*$#\1#p' "$work/$s.out")"
        [ -n "$addr" ] && break
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        echo "FAIL: server $s did not start" >&2
        cat "$work/$s.err" >&2
        exit 1
    fi
    if ! probe "${addr##*:}" | grep -q 'Hello, World!'; then
        echo "FAIL: server $s ($addr) does not answer GET /" >&2
        exit 1
    fi
    addr_of[$s]=$addr
    echo "   $s: pid $p, http://$addr/" >&2
}

# utime and stime of a process, in ticks.
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'
}
# Busy and total ticks of the whole machine (all CPUs): user nice system irq softirq steal.
machine_ticks() {
    awk '/^cpu / { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat
}
# wrk's latency average ("910.00us", "1.02ms", "1.5s") in µs.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000;
        else if (v ~ /s$/) print n * 1000000; else print n }'
}

failed=0
results="$work/results"
: >"$results"

# One wrk run against server $1 with variant $2; appends a line to $results.
# $3 = "warmup" runs 1 s and records nothing.
run_wrk() {
    local s="$1" variant="$2" mode="${3:-}" p url secs out c0 c1 m0 m1 wt
    p="${pid_of[$s]}"
    url="http://${addr_of[$s]}/"
    secs="$duration"
    [ "$mode" = warmup ] && secs=1
    local -a args=(-t"$wrk_threads" -c"$connections" -d"${secs}s" --latency)
    if [ "$variant" = pipelined ]; then
        args+=(-s scripts/http-pipeline.lua "$url" -- "$depth")
    else
        args+=("$url")
    fi
    out="$work/wrk.out"
    c0="$(cpu_ticks "$p")"
    m0="$(machine_ticks)"
    local rc=0 TIMEFORMAT='%3U %3S'
    { time timeout $((secs + 30)) wrk "${args[@]}" >"$out" 2>&1 || rc=$?; } 2>"$work/wrk.time"
    m1="$(machine_ticks)"
    if ! kill -0 "$p" 2>/dev/null; then
        echo "FAIL: server $s died" >&2
        cat "$work/$s.err" >&2
        exit 1
    fi
    c1="$(cpu_ticks "$p")"
    wt="$(awk -v hz="$hz" '{ printf "%d", ($1 + $2) * hz + 0.5 }' "$work/wrk.time")"
    [ "$mode" = warmup ] && return 0

    local requests rps lat errs non2xx
    requests="$(awk '/ requests in / { print $1 }' "$out")"
    rps="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    lat="$(awk '$1 == "Latency" { print $2; exit }' "$out")"
    errs="$(sed -n 's/^ *Socket errors: //p' "$out")"
    non2xx="$(sed -n 's/^ *Non-2xx or 3xx responses: //p' "$out")"
    if [ "$rc" != 0 ] || [ -z "$requests" ] || [ "$requests" = 0 ] || [ -n "$errs" ] || [ -n "$non2xx" ]; then
        echo "FAIL: wrk against $s ($variant): exit $rc${errs:+, socket errors: $errs}${non2xx:+, non-2xx/3xx: $non2xx}" >&2
        cat "$out" >&2
        failed=1
        if [ -z "$requests" ] || [ "$requests" = 0 ]; then return 0; fi
    fi
    # server µs/request, server % of a core, wrk %, other % (machine busy minus both).
    local m0b m0t m1b m1t u0 s0 u1 s1
    read -r m0b m0t <<<"$m0"
    read -r m1b m1t <<<"$m1"
    read -r u0 s0 <<<"$c0"
    read -r u1 s1 <<<"$c1"
    awk -v v="$variant" -v s="$s" -v req="$requests" -v rps="$rps" -v lat="$(to_us "$lat")" \
        -v sc=$((u1 + s1 - u0 - s0)) -v uc=$((u1 - u0)) -v wc="$wt" -v mb=$((m1b - m0b)) -v mt=$((m1t - m0t)) \
        -v hz="$hz" -v ncpu="$ncpu" 'BEGIN {
            wall = mt / ncpu                       # ticks of one CPU
            if (wall <= 0) wall = 1
            other = (mb - sc - wc) / wall * 100
            if (other < 0) other = 0
            printf "%s %s %.0f %.3f %.1f %.1f %.1f %.1f %.3f\n", v, s, rps,
                sc * 1e6 / hz / req, sc / wall * 100, wc / wall * 100, other, lat,
                uc * 1e6 / hz / req
        }' >>"$results"
    tail -n 1 "$results" | awk '{ printf "   %-9s %-7s %9d req/s  %7.3f us/req (user %.3f)  server %5.1f%%  wrk %5.1f%%  other %5.1f%%  lat %s us\n", $1, $2, $3, $4, $9, $5, $6, $7, $8 }' >&2
}

echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $ncpu CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "== starting servers" >&2
for s in "${servers[@]}"; do start_server "$s"; done
echo "== warm-up (1 s each)" >&2
for s in "${servers[@]}"; do
    for v in "${variants[@]}"; do run_wrk "$s" "$v" warmup; done
done

n="${#servers[@]}"
for pass in $(seq 1 "$passes"); do
    echo "== pass $pass/$passes" >&2
    for v in "${variants[@]}"; do
        for i in $(seq 0 $((n - 1))); do
            run_wrk "${servers[$(((i + pass - 1) % n))]}" "$v"
        done
    done
done

# Medians per (variant, server); ratios against the first server.
label() {
    case "$1" in
    keepalive) echo "\`-t$wrk_threads -c$connections\`" ;;
    pipelined) echo "\`-t$wrk_threads -c$connections\`, $depth pipelined" ;;
    esac
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -v v="$1" -v s="$2" -v c="$3" '$1 == v && $2 == s { print $c }' "$results"; }

echo
echo "| wrk | server | requests/s | (min–max) | vs ${servers[0]} | server CPU µs/request | vs ${servers[0]} | of which user µs | server CPU % | wrk CPU % | other CPU % | latency avg |"
echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
for v in "${variants[@]}"; do
    base_rps="$(col "$v" "${servers[0]}" 3 | median)"
    base_us="$(col "$v" "${servers[0]}" 4 | median)"
    for s in "${servers[@]}"; do
        [ -n "$(col "$v" "$s" 3)" ] || continue
        rps="$(col "$v" "$s" 3 | median)"
        lo="$(col "$v" "$s" 3 | sort -g | head -n1)"
        hi="$(col "$v" "$s" 3 | sort -g | tail -n1)"
        us="$(col "$v" "$s" 4 | median)"
        awk -v lbl="$(label "$v")" -v s="$s" -v rps="$rps" -v lo="$lo" -v hi="$hi" -v us="$us" \
            -v brps="$base_rps" -v bus="$base_us" -v spct="$(col "$v" "$s" 5 | median)" \
            -v wpct="$(col "$v" "$s" 6 | median)" -v opct="$(col "$v" "$s" 7 | median)" \
            -v lat="$(col "$v" "$s" 8 | median)" -v user="$(col "$v" "$s" 9 | median)" 'BEGIN {
                lats = lat >= 1000 ? sprintf("%.2f ms", lat / 1000) : sprintf("%.0f µs", lat)
                printf "| %s | %s | %d | %d–%d | %.2f× | %.2f | %.2f× | %.2f | %.0f | %.0f | %.0f | %s |\n",
                    lbl, s, rps, lo, hi, (brps > 0 ? rps / brps : 0), us, (bus > 0 ? us / bus : 0),
                    user, spct, wpct, opct, lats
            }'
    done
done
echo
echo "$passes pass(es) of ${duration} s per cell, medians; server CPU is utime + stime from /proc/PID/stat (ticks of 1/$hz s) over the wrk run, divided by the requests wrk reports; CPU % is of one core."

if [ "$failed" != 0 ]; then
    echo "FAIL: some wrk runs reported errors (see above)" >&2
    exit 1
fi
