#!/usr/bin/env bash
# bench/small-file.sh: requests/s for one small file over HTTP keep-alive, iocomp
# (both engine backends) beside nginx and lighttpd, all on 127.0.0.1, measured
# with wrk in interleaved rounds (A B C D A B C D …); prints medians and ratios.
#
#   SIZE=1024            file size in bytes
#   CONNS=50             wrk connections (-c); THREADS=1 wrk threads (-t)
#   DURATION=5           seconds per wrk run
#   ROUNDS=3             rounds; the table shows medians
#   WORKERS=1            server workers (iocomp --threads, nginx worker_processes,
#                        lighttpd server.max-worker)
#   BACKENDS="uring epoll"  iocomp backends, each its own server
#   IOCOMP_BIN=PATH      default <repo>/target/release/iocomp (build it first)
# Needs root for apt-get if wrk, nginx or lighttpd are missing. Loopback only;
# every run is bounded; a trap stops every server it started.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
SIZE=${SIZE:-1024} CONNS=${CONNS:-50} THREADS=${THREADS:-1} DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3} WORKERS=${WORKERS:-1} BACKENDS=${BACKENDS:-uring epoll}
IOCOMP_BIN=${IOCOMP_BIN:-$repo/target/release/iocomp}
die() { echo "small-file.sh: $*" >&2; exit 1; }
[[ -x $IOCOMP_BIN ]] || die "no iocomp binary at $IOCOMP_BIN (cargo build --release)"
need=()
command -v wrk > /dev/null || need+=(wrk)
command -v nginx > /dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v lighttpd > /dev/null || [[ -x /usr/sbin/lighttpd ]] || need+=(lighttpd)
if ((${#need[@]})); then
    apt-get install -y "${need[@]}" > /dev/null || die "cannot install ${need[*]}"
    # Debian starts the packaged services: stop them, they would hold port 80.
    systemctl stop nginx lighttpd 2> /dev/null || true
    pkill -x nginx 2> /dev/null || true
    pkill -x lighttpd 2> /dev/null || true
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
LIGHTTPD=$(command -v lighttpd || echo /usr/sbin/lighttpd)

WORK=$(mktemp -d /tmp/iocomp-small.XXXXXX)
declare -A PIDS=() PORTS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
    sleep 0.2
    for p in "${PIDS[@]}"; do kill -9 "$p" 2> /dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
mkdir -p "$WORK/www"
head -c "$SIZE" /dev/urandom > "$WORK/www/f.bin"
# nginx and lighttpd workers drop to an unprivileged user: let them read it.
chmod 755 "$WORK" "$WORK/www"
chmod 644 "$WORK/www/f.bin"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null && return 0; sleep 0.1; done
    die "nothing listens on port $1"
}

servers=()
for b in $BACKENDS; do
    name=iocomp-$b port=$(free_port)
    "$IOCOMP_BIN" serve "$WORK/www" --bind "127.0.0.1:$port" --threads "$WORKERS" --quiet --backend "$b" \
        > "$WORK/$name.out" 2> "$WORK/$name.err" &
    PIDS[$name]=$! PORTS[$name]=$port servers+=("$name")
done
port=$(free_port)
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" << CONF
daemon off; master_process on; worker_processes $WORKERS; pid $WORK/nginx/pid; error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 1000000; keepalive_timeout 65;
  types { application/octet-stream bin; }
  server { listen 127.0.0.1:$port; root $WORK/www; } }
CONF
"$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2> "$WORK/nginx.err" &
PIDS[nginx]=$! PORTS[nginx]=$port servers+=(nginx)
port=$(free_port)
cat > "$WORK/lighttpd.conf" << CONF
server.document-root = "$WORK/www"
server.port = $port
server.bind = "127.0.0.1"
server.max-worker = $((WORKERS > 1 ? WORKERS : 0))
server.max-keep-alive-requests = 1000000
server.network-backend = "sendfile"
server.errorlog = "$WORK/lighttpd.log"
mimetype.assign = ( ".bin" => "application/octet-stream" )
CONF
"$LIGHTTPD" -D -f "$WORK/lighttpd.conf" 2> "$WORK/lighttpd.err" &
PIDS[lighttpd]=$! PORTS[lighttpd]=$port servers+=(lighttpd)
for s in "${servers[@]}"; do wait_port "${PORTS[$s]}"; done

# CPU ticks of a server and its children (nginx workers, lighttpd workers).
ticks() {
    local pid=$1 t=0 p
    for p in $pid $(pgrep -P "$pid" || true); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2> /dev/null || echo 0)))
    done
    echo "$t"
}
RAW=$WORK/raw.tsv
: > "$RAW"
for round in $(seq "$ROUNDS"); do
    for s in "${servers[@]}"; do
        url="http://127.0.0.1:${PORTS[$s]}/f.bin"
        a=$(ticks "${PIDS[$s]}")
        out=$(timeout $((DURATION + 20)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url")
        b=$(ticks "${PIDS[$s]}")
        rps=$(awk '/^Requests\/sec/ {print $2}' <<< "$out")
        p99=$(awk '$1 == "99%" {print $2}' <<< "$out")
        errs=$(awk '/Non-2xx|Socket errors/ {print}' <<< "$out" | tr '\n' ' ')
        [[ -z $errs ]] || die "$s answered with errors: $errs"  # a server that fails cannot look fast
        reqs=$(awk '/requests in/ {print $1}' <<< "$out")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$round" "$rps" "$p99" "$((b - a))" "$reqs" >> "$RAW"
        echo "round $round $s: $rps req/s p99 $p99 ${errs:+errors: $errs}" >&2
    done
done
python3 - "$RAW" "$(getconf CLK_TCK)" "$SIZE" "$CONNS" "$THREADS" "$DURATION" "$ROUNDS" "$WORKERS" << 'PY'
import statistics, sys
raw, hz, size, conns, threads, dur, rounds, workers = sys.argv[1:]
rows = {}
for line in open(raw):
    s, _, rps, p99, ticks, reqs = line.rstrip("\n").split("\t")
    rows.setdefault(s, []).append((float(rps), p99, int(ticks) / int(hz), int(reqs)))
print(f"{size} B file, wrk -t{threads} -c{conns} -d{dur}s, keep-alive, {workers} server worker(s), "
      f"median of {rounds} interleaved rounds")
print(f"{'server':<14} {'req/s':>10} {'p99':>9} {'server CPU µs/req':>18}")
med = {}
for s, r in rows.items():
    rps = statistics.median(x[0] for x in r)
    cpu = statistics.median(x[2] / x[3] * 1e6 for x in r if x[3])
    p99 = sorted(x[1] for x in r)[len(r) // 2]
    med[s] = (rps, cpu)
    print(f"{s:<14} {rps:>10.0f} {p99:>9} {cpu:>18.1f}")
best = max((s for s in med if not s.startswith("iocomp")), key=lambda s: med[s][0], default=None)
if best:
    for s in med:
        if s.startswith("iocomp"):
            print(f"{s}/{best}: req/s {med[s][0] / med[best][0]:.2f}x, CPU per request {med[s][1] / med[best][1]:.2f}x")
PY
