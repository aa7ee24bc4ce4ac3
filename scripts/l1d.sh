#!/usr/bin/env bash
# L1 data-cache misses per HTTP request, from valgrind's cachegrind cache simulation, for
# the copas hello-world server (examples/http.rs) and its tokio current_thread twin
# (`copas-bench serve-tokio-http`), optionally the epoll loop and may_minihttp.
#
# Each server runs under cachegrind twice, once serving SMALL and once LARGE keep-alive
# requests (`copas-bench load --mode http --count N`, a fixed request count over
# CONNECTIONS connections); the difference of the two runs divided by LARGE - SMALL
# removes start-up and shutdown, leaving the per-request cost. Prints a Markdown table:
# instructions, D1 read misses, D1 write misses and their sum per request, and the ratio
# of the sum to the first server's. About 30 s for four servers (cachegrind runs some 50x
# slower).
#
#   scripts/l1d.sh
#   L1D_SERVERS="copas tokio epoll may_minihttp" L1D_CONNECTIONS=400 scripts/l1d.sh
#
# Settings (environment):
#   L1D_SERVERS      any of "copas tokio epoll may_minihttp" (default "copas tokio"; the
#                    first is the baseline of the ratio column)
#   L1D_CONNECTIONS  keep-alive connections (default 50, as in issue 8's wrk runs)
#   L1D_SMALL        requests of the short run (default 2000)
#   L1D_LARGE        requests of the long run (default 22000)
#   L1D_NO_BUILD     set to 1 to skip cargo build
#
# The cache model is cachegrind's default for this machine (it reads the host's cache
# sizes; on a KVM guest it may fall back to its own defaults and says so on stderr). Only
# user space is simulated: the kernel's copies into and out of the servers' buffers do
# not evict or fill the simulated cache, so the numbers are the servers' own misses.
# Exits non-zero when a server fails to start or a load run fails.
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a servers <<<"${L1D_SERVERS:-copas tokio}"
connections="${L1D_CONNECTIONS:-50}"
small="${L1D_SMALL:-2000}"
large="${L1D_LARGE:-22000}"
if [ "$large" -le "$small" ]; then
    echo "l1d: L1D_LARGE ($large) must be above L1D_SMALL ($small)" >&2
    exit 2
fi
command -v valgrind >/dev/null || { echo "l1d: valgrind not found (apt-get install valgrind)" >&2; exit 1; }

server_cmd() {
    case "$1" in
    copas) echo "target/release/examples/http" ;;
    tokio) echo "target/release/copas-bench serve-tokio-http" ;;
    epoll) echo "target/release/copas-bench serve-epoll-http" ;;
    may_minihttp) echo "target/release/copas-bench serve-may-http --workers 1" ;;
    *) echo "l1d: unknown server '$1' (copas, tokio, epoll, may_minihttp)" >&2; return 1 ;;
    esac
}
for s in "${servers[@]}"; do server_cmd "$s" >/dev/null; done

if [ "${L1D_NO_BUILD:-0}" != 1 ]; then
    echo "== building release binaries" >&2
    cargo build --release --quiet -p copas --example http
    cargo build --release --quiet -p copas-bench
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 12000))  # below the ephemeral range (32768-)
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "l1d: no free port found" >&2
    return 1
}

# Runs server $1 under cachegrind for $2 requests; prints "Ir D1mr D1mw".
measure() {
    local s="$1" n="$2" port out cmd
    port="$(free_port)"
    out="$work/$s.$n.cg"
    cmd="$(server_cmd "$s")"
    # shellcheck disable=SC2086 # the command holds subcommand words
    valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file="$out" \
        $cmd --addr "127.0.0.1:$port" >"$work/$s.out" 2>"$work/$s.err" &
    server_pid=$!
    local up=0
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$up" != 1 ]; then
        echo "l1d: server $s did not start under valgrind" >&2
        cat "$work/$s.err" >&2
        exit 1
    fi
    if ! target/release/copas-bench load --addr "127.0.0.1:$port" --mode http \
        --connections "$connections" --threads 1 --count "$n" >"$work/load.out"; then
        echo "l1d: the load run against $s failed" >&2
        cat "$work/load.out" >&2
        exit 1
    fi
    if ! grep -q ' errors=0 ' "$work/load.out"; then
        echo "l1d: the load run against $s had errors:" >&2
        grep '^summary' "$work/load.out" >&2
        exit 1
    fi
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    if [ ! -s "$out" ]; then
        echo "l1d: cachegrind wrote no output for $s" >&2
        cat "$work/$s.err" >&2
        exit 1
    fi
    awk '
        /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i - 1 }
        /^summary:/ {
            for (i = 2; i <= NF; i++) v[i - 1] = $i
            print v[col["Ir"]], v[col["D1mr"]], v[col["D1mw"]]
        }' "$out"
}

echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), revision $(git rev-parse --short HEAD)" >&2
results="$work/results"
: >"$results"
for s in "${servers[@]}"; do
    echo "== $s: $small and $large requests over $connections connections" >&2
    # `measure` exits its subshell on failure; stop here too.
    m1="$(measure "$s" "$small")" || exit 1
    m2="$(measure "$s" "$large")" || exit 1
    read -r ir1 r1 w1 <<<"$m1"
    read -r ir2 r2 w2 <<<"$m2"
    echo "   raw: $small requests: Ir $ir1, D1mr $r1, D1mw $w1; $large requests: Ir $ir2, D1mr $r2, D1mw $w2" >&2
    if [ "$ir2" -le "$ir1" ]; then
        echo "l1d: $s: the $large-request run counted fewer instructions than the $small-request run; run again" >&2
        exit 1
    fi
    awk -v s="$s" -v n=$((large - small)) -v ir=$((ir2 - ir1)) -v r=$((r2 - r1)) -v w=$((w2 - w1)) \
        'BEGIN { printf "%s %.0f %.1f %.1f %.1f\n", s, ir / n, r / n, w / n, (r + w) / n }' >>"$results"
    tail -n 1 "$results" | awk '{ printf "   %s: %s instructions, %s D1 read + %s D1 write misses = %s per request\n", $1, $2, $3, $4, $5 }' >&2
done

echo
echo "| server | instructions/request | D1 read misses/request | D1 write misses/request | L1d misses/request | vs ${servers[0]} |"
echo "|---|--:|--:|--:|--:|--:|"
awk 'NR == 1 { base = $5 }
     { printf "| %s | %s | %s | %s | %s | %.2f× |\n", $1, $2, $3, $4, $5, (base > 0 ? $5 / base : 0) }' "$results"
echo
echo "cachegrind --cache-sim=yes, ($large − $small) keep-alive requests over $connections connections (copas-bench load --mode http --count N), the two runs' difference per request."
