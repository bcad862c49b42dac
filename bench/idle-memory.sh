#!/usr/bin/env bash
# bench/idle-memory.sh: server memory per idle keep-alive connection, iocomp
# (each engine backend) beside nginx, measured the same way: CONNS connections
# from several loopback source addresses (127.0.0.2, 127.0.0.3, ...), each
# makes one HTTP/1.1 request for a small file and then stays open, idle; the
# server's resident memory (VmRSS, summed over all its processes for nginx)
# before and after, divided by CONNS. Socket buffers are kernel memory and not
# part of either figure.
#
#   CONNS=10000          idle connections held at once
#   SOURCES=4            source addresses 127.0.0.2 .. 127.0.0.(SOURCES+1)
#   WORKERS=1            iocomp --threads / nginx worker_processes
#   BACKENDS="uring epoll"  iocomp backends, each its own server
#   IOCOMP_BIN=PATH      default <repo>/target/release/iocomp (build it first)
# Needs python3; installs nginx with apt-get if missing (root). Loopback only;
# every wait is bounded; a trap stops every server it started.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
CONNS=${CONNS:-10000} SOURCES=${SOURCES:-4} WORKERS=${WORKERS:-1}
BACKENDS=${BACKENDS:-uring epoll}
IOCOMP_BIN=${IOCOMP_BIN:-$repo/target/release/iocomp}
die() { echo "idle-memory.sh: $*" >&2; exit 1; }
[[ -x $IOCOMP_BIN ]] || die "no iocomp binary at $IOCOMP_BIN (cargo build --release)"
if ! command -v nginx > /dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    apt-get install -y nginx > /dev/null || die "cannot install nginx"
    systemctl stop nginx 2> /dev/null || true
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v python3 > /dev/null || die "python3 is required"

need=$((CONNS + 4096))
ulimit -n "$need" 2> /dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= CONNS + 256)) || die "RLIMIT_NOFILE $(ulimit -n) is too low for $CONNS connections"

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
    sleep 0.5
    for p in "${pids[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
chmod 755 "$tmp" # nginx's workers run as nobody
mkdir -p "$tmp/root" "$tmp/nginx"
printf 'a small file for the idle-connection test\n' > "$tmp/root/ok.txt"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# rss_kib PID...: VmRSS summed over the processes and their children.
rss_kib() {
    local total=0 p kids
    for p in "$@"; do
        kids=$(ps -o pid= --ppid "$p" 2> /dev/null || true)
        for q in $p $kids; do
            total=$((total + $(awk '/^VmRSS:/ {print $2}' /proc/"$q"/status 2> /dev/null || echo 0)))
        done
    done
    echo "$total"
}

# hold PORT: opens the connections, prints "ready", waits for stdin to close.
hold_py='
import socket, sys
port, conns, sources = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
req = b"GET /ok.txt HTTP/1.1\r\nHost: idle\r\n\r\n"
held = []
def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d: raise SystemExit("EOF before the response head")
        buf += d
    head, body = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"): raise SystemExit("bad response: %r" % head[:80])
    n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
    while len(body) < n:
        d = s.recv(4096)
        if not d: raise SystemExit("EOF in the body")
        body += d
batch = []
for i in range(conns):
    s = socket.socket()
    s.settimeout(20)
    s.bind(("127.0.0.%d" % (2 + i % sources), 0))
    s.connect(("127.0.0.1", port))
    s.sendall(req)
    batch.append(s)
    if len(batch) == 100 or i == conns - 1:
        for b in batch: read_response(b)
        held.extend(batch); batch = []
print("ready", len(held), flush=True)
sys.stdin.read()
'

# measure NAME PID...: prints "NAME per-connection-bytes rss-before rss-after".
measure() {
    local name=$1 port=$2
    shift 2
    local before after
    # Warm-up: a few hundred connections, closed again.
    python3 -c "$hold_py" "$port" 200 1 < /dev/null > /dev/null
    sleep 0.5
    before=$(rss_kib "$@")
    coproc HOLD { timeout 300 python3 -c "$hold_py" "$port" "$CONNS" "$SOURCES"; }
    local line
    read -r -t 240 line <&"${HOLD[0]}" || die "$name: the client did not get ready"
    [[ $line == "ready $CONNS" ]] || die "$name: client says '$line'"
    sleep 1
    after=$(rss_kib "$@")
    eval "exec ${HOLD[1]}>&-"
    wait "$HOLD_PID" 2> /dev/null || true
    echo "$name $(((after - before) * 1024 / CONNS)) $before $after"
}

results=()
for backend in $BACKENDS; do
    port=$(free_port)
    "$IOCOMP_BIN" serve "$tmp/root" --bind "127.0.0.1:$port" --threads "$WORKERS" --backend "$backend" \
        --access-log off --quiet --max-conns $((CONNS + 1000)) --idle-timeout 600s > /dev/null 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2> /dev/null && break; sleep 0.1; done
    results+=("$(measure "iocomp-$backend" "$port" "$pid")")
    kill -TERM "$pid"
    wait "$pid" 2> /dev/null || true
done

port=$(free_port)
cat > "$tmp/nginx/nginx.conf" << EOF
worker_processes $WORKERS;
worker_rlimit_nofile $((CONNS + 4096));
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
daemon off;
events { worker_connections $((CONNS + 1000)); }
http {
    access_log off;
    sendfile on;
    keepalive_timeout 600s;
    keepalive_requests 100000;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    server {
        listen 127.0.0.1:$port;
        root $tmp/root;
    }
}
EOF
"$NGINX" -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" > /dev/null 2>&1 &
pid=$!
pids+=("$pid")
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2> /dev/null && break; sleep 0.1; done
results+=("$(measure nginx "$port" "$pid")")

nginx_per=$(printf '%s\n' "${results[@]}" | awk '$1 == "nginx" {print $2}')
printf '%d idle keep-alive connections from %d source addresses, %d worker(s)\n' "$CONNS" "$SOURCES" "$WORKERS"
printf '%-14s %14s %12s %12s %10s\n' server bytes/conn "RSS before" "RSS after" "vs nginx"
for r in "${results[@]}"; do
    read -r name per before after <<< "$r"
    printf '%-14s %14d %9d KiB %9d KiB %9.2fx\n' "$name" "$per" "$before" "$after" \
        "$(python3 -c "print($per / max($nginx_per, 1))")"
done
