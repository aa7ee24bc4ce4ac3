#!/usr/bin/env bash
# A bounded soak of the echo example: connection churn (connect, exchange a few lines,
# close; plus abrupt resets, oversize lines, clients that leave mid-line, and connections
# held open for a while) against a release build, checking that the server's open
# descriptors and resident memory are the same after the soak as after a warm-up with the
# same load. Exits non-zero on a leak, a wrong echo, or a server that died.
#
#   scripts/soak.sh                       # about 2 minutes
#   SOAK_SECONDS=600 scripts/soak.sh      # longer
#
# Settings (environment):
#   SOAK_SECONDS       churn after the warm-up, in seconds (default 100)
#   WARMUP_SECONDS     churn before the baseline is taken (default 20)
#   SOAK_WORKERS       client threads (default 8)
#   SOAK_RSS_MARGIN_KB allowed growth of VmRSS after the soak (default 1024)
#   SOAK_FD_MARGIN     allowed growth of open descriptors (default 0)
set -euo pipefail
cd "$(dirname "$0")/.."

soak_seconds="${SOAK_SECONDS:-100}"
warmup_seconds="${WARMUP_SECONDS:-20}"
workers="${SOAK_WORKERS:-8}"
rss_margin_kb="${SOAK_RSS_MARGIN_KB:-1024}"
fd_margin="${SOAK_FD_MARGIN:-0}"

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

echo "== building the echo example (release)"
cargo build --release --example echo --quiet
echo_bin="target/release/examples/echo"

echo "== starting it on a free port"
"$echo_bin" --addr 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
addr=""
for _ in $(seq 1 100); do
    addr="$(sed -n 's/^echo server listening on \(.*\)$/\1/p' "$work/server.out")"
    [ -n "$addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.err"; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "the server did not say where it listens"; exit 1; }
port="${addr##*:}"
echo "   pid $server_pid, $addr"

fds() { ls "/proc/$server_pid/fd" | wc -l; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status"; }
alive() {
    kill -0 "$server_pid" 2>/dev/null || {
        echo "FAIL: the server died"
        cat "$work/server.err"
        exit 1
    }
}

# Waits until the server has closed every connection: its descriptor count stays the
# same for two seconds (at most 60 s).
settle() {
    local last=-1 same=0 now
    for _ in $(seq 1 300); do
        alive
        now="$(fds)"
        if [ "$now" = "$last" ]; then
            same=$((same + 1))
            [ "$same" -ge 10 ] && return 0
        else
            same=0
            last="$now"
        fi
        sleep 0.2
    done
    echo "FAIL: the server's descriptors did not settle (last $last)"
    exit 1
}

cat >"$work/churn.py" <<'PY'
"""Connection churn against a line echo server; prints one summary line."""
import random, socket, struct, sys, threading, time

port, seconds, workers = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + seconds
lock = threading.Lock()
stats = dict(connections=0, lines=0, resets=0, oversize=0, held=0, errors=0)
failures = []


def count(key, n=1):
    with lock:
        stats[key] += n


def fail(msg):
    with lock:
        failures.append(msg)


def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def exchange(f, s, line):
    s.sendall(line + b"\n")
    back = f.readline()
    if back != line + b"\n":
        fail("echo of %r came back as %r" % (line[:40], back[:40]))
        return False
    return True


def worker(seed):
    rnd = random.Random(seed)
    held = []
    while time.monotonic() < deadline:
        try:
            kind = rnd.random()
            s = connect()
            count("connections")
            f = s.makefile("rb")
            if kind < 0.70:  # a few lines, then a normal close
                for i in range(rnd.randint(1, 5)):
                    line = b"%d-%d-" % (seed, i) + b"x" * rnd.randint(0, 2000)
                    if not exchange(f, s, line):
                        break
                    count("lines")
                if rnd.random() < 0.3:
                    held.append((s, f))  # keep it open for a while
                    count("held")
                else:
                    f.close()
                    s.close()
            elif kind < 0.80:  # an exchange, then half a line and a reset
                exchange(f, s, b"before reset")
                s.sendall(b"half a li")
                f.close()
                reset(s)
                count("resets")
            elif kind < 0.85:  # a reset with an echo on its way back
                s.sendall(b"unread echo\n" * 50)
                f.close()
                reset(s)
                count("resets")
            elif kind < 0.90:  # a line over the server's limit: it must hang up
                s.sendall(b"y" * (70 * 1024) + b"\n")
                s.shutdown(socket.SHUT_WR)
                try:
                    rest = f.read()
                    if rest:
                        fail("an oversize line was answered: %r" % rest[:40])
                except ConnectionResetError:
                    pass
                f.close()
                s.close()
                count("oversize")
            elif kind < 0.95:  # quit
                exchange(f, s, b"hello")
                s.sendall(b"quit\n")
                if f.read() != b"":
                    fail("data after quit")
                f.close()
                s.close()
            else:  # connect and leave at once
                f.close()
                s.close()
            while len(held) > 20 or (held and rnd.random() < 0.2):
                hs, hf = held.pop(rnd.randrange(len(held)))
                exchange(hf, hs, b"still here")
                hf.close()
                hs.close()
        except OSError as e:
            count("errors")
            fail("%s: %s" % (type(e).__name__, e))
    for hs, hf in held:
        hf.close()
        hs.close()


threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(" ".join("%s=%d" % kv for kv in sorted(stats.items())))
for f in failures[:10]:
    print("failure:", f)
sys.exit(1 if failures else 0)
PY

idle_fds="$(fds)"
idle_rss="$(rss_kb)"
echo "   idle: fds=$idle_fds rss=${idle_rss}kB"

echo "== warm-up: ${warmup_seconds}s of churn"
python3 "$work/churn.py" "$port" "$warmup_seconds" "$workers"
settle
base_fds="$(fds)"
base_rss="$(rss_kb)"
echo "   after warm-up: fds=$base_fds rss=${base_rss}kB"

echo "== soak: ${soak_seconds}s of churn"
python3 "$work/churn.py" "$port" "$soak_seconds" "$workers"
settle
after_fds="$(fds)"
after_rss="$(rss_kb)"
echo "   after soak: fds=$after_fds rss=${after_rss}kB"
alive

status=0
if [ "$after_fds" -gt $((base_fds + fd_margin)) ] || [ "$base_fds" -ne "$idle_fds" ]; then
    echo "FAIL: descriptors leak: idle $idle_fds, after warm-up $base_fds, after soak $after_fds"
    status=1
fi
if [ "$after_rss" -gt $((base_rss + rss_margin_kb)) ]; then
    echo "FAIL: memory grows: ${base_rss}kB after warm-up, ${after_rss}kB after soak" \
        "(margin ${rss_margin_kb}kB)"
    status=1
fi
[ "$status" -eq 0 ] && echo "== soak passed: fds $base_fds -> $after_fds, rss ${base_rss}kB -> ${after_rss}kB"
exit "$status"
