#!/usr/bin/env bash
# bench/big-file.sh: ONE large download from iocomp and from nginx, side by side,
# over loopback (127.0.0.1), interleaved rounds, medians. See bench/README.md.
#
# Environment (all optional):
#   SIZE_MIB=1024       size of the test file in MiB
#   ROUNDS=5            rounds per layout; each round = iocomp, nginx (python), nginx (curl)
#   WORKERS="1 2"       worker layouts: iocomp --threads N and nginx worker_processes N
#   CURL=1              0 = skip the curl cross-check transfer for nginx
#   DATA=zero           zero | random: content of the test file (both servers send the same bytes)
#   TIMEOUT_S=120       limit for one transfer (the client gives up; the script fails)
#   IOCOMP_BIN=PATH     iocomp binary (default: <repo>/target/release/iocomp)
#   BACKENDS="uring epoll"  iocomp engine backends measured, each as its own server (iocomp-uring, iocomp-epoll)
#   BENCH_TMP=DIR       where the temp dir (test file, nginx prefix) goes (default: $TMPDIR or /tmp);
#                       use a disk file system, not tmpfs, for page-cache realism
#   RESULTS=PATH        also write every transfer's raw figures (TSV) to PATH
set -euo pipefail

die() { echo "big-file.sh: error: $*" >&2; exit 1; }
note() { echo "big-file.sh: $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

SIZE_MIB=${SIZE_MIB:-1024}
ROUNDS=${ROUNDS:-5}
WORKERS=${WORKERS:-"1 2"}
CURL=${CURL:-1}
DATA=${DATA:-zero}
TIMEOUT_S=${TIMEOUT_S:-120}
IOCOMP_BIN=${IOCOMP_BIN:-$repo/target/release/iocomp}
BACKENDS=${BACKENDS:-uring epoll}
BENCH_TMP=${BENCH_TMP:-${TMPDIR:-/tmp}}
RESULTS=${RESULTS:-}

is_posint() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
is_posint "$SIZE_MIB" || die "SIZE_MIB must be a positive integer (got '$SIZE_MIB')"
is_posint "$ROUNDS" || die "ROUNDS must be a positive integer (got '$ROUNDS')"
is_posint "$TIMEOUT_S" || die "TIMEOUT_S must be a positive integer (got '$TIMEOUT_S')"
[[ -n ${WORKERS// /} ]] || die "WORKERS is empty"
for w in $WORKERS; do is_posint "$w" || die "WORKERS must be positive integers (got '$WORKERS')"; done
case $DATA in zero | random) ;; *) die "DATA must be zero or random (got '$DATA')" ;; esac
case $CURL in 0 | 1) ;; *) die "CURL must be 0 or 1 (got '$CURL')" ;; esac

SIZE=$((SIZE_MIB * 1024 * 1024))
NAME=big.bin

# ---------------------------------------------------------------- dependencies
[[ -x $IOCOMP_BIN ]] || die "no iocomp binary at $IOCOMP_BIN: build it first (cargo build --release) or set IOCOMP_BIN"
command -v python3 > /dev/null || die "python3 is required (the download client is a Python script)"
command -v timeout > /dev/null || die "timeout (coreutils) is required"

# apt_install PKG: installs a Debian package, as root or through sudo -n.
apt_install() {
    local pkg=$1 sudo=() log
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo > /dev/null && sudo -n true 2> /dev/null \
            || die "$pkg is missing and installing it needs root (run as root or install $pkg)"
        sudo=(sudo -n)
    fi
    command -v apt-get > /dev/null || die "$pkg is missing and there is no apt-get to install it"
    note "installing $pkg with apt-get ..."
    log=$(mktemp)
    if ! DEBIAN_FRONTEND=noninteractive timeout 600 "${sudo[@]}" apt-get install -y -q "$pkg" > "$log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive timeout 300 "${sudo[@]}" apt-get update -q >> "$log" 2>&1 || true
        if ! DEBIAN_FRONTEND=noninteractive timeout 600 "${sudo[@]}" apt-get install -y -q "$pkg" >> "$log" 2>&1; then
            tail -20 "$log" >&2
            rm -f "$log"
            die "apt-get install $pkg failed"
        fi
    fi
    rm -f "$log"
}

if ! command -v curl > /dev/null; then apt_install curl; fi
NGINX=$(command -v nginx || true)
[[ -n $NGINX || ! -x /usr/sbin/nginx ]] || NGINX=/usr/sbin/nginx
if [[ -z $NGINX ]]; then
    apt_install nginx
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    [[ -x $NGINX ]] || die "nginx was installed but no nginx binary was found"
    # Debian's postinst may start the system nginx (port 80) where services are allowed
    # to start; it was started by this install, so stop it: no process is left behind.
    if [[ -s /run/nginx.pid ]]; then
        sysng=$(cat /run/nginx.pid)
        if [[ $(cat "/proc/$sysng/comm" 2> /dev/null) == nginx ]]; then
            note "stopping the system nginx (pid $sysng) that the package install started"
            kill -QUIT "$sysng" 2> /dev/null || true
            for _ in $(seq 50); do kill -0 "$sysng" 2> /dev/null || break; sleep 0.1; done
            kill -KILL "$sysng" 2> /dev/null || true
        fi
    fi
fi

CLK_TCK=$(getconf CLK_TCK)
is_posint "$CLK_TCK" || die "getconf CLK_TCK gave '$CLK_TCK'"

# ------------------------------------------------------------ temp dir, cleanup
mkdir -p "$BENCH_TMP"
WORK=$(mktemp -d "$BENCH_TMP/iocomp-bench.XXXXXX")
# nginx workers run as an unprivileged user when started as root: they must reach the file.
chmod 755 "$WORK"
WWW=$WORK/www
mkdir -m 755 "$WWW"
FILE=$WWW/$NAME
RAW=$WORK/results.tsv

NGX_PID=
NGX_WORKERS=

# stop_pid PID SIGNAL: signal, wait up to 5 s, then SIGKILL; reaps our child.
stop_pid() {
    local pid=$1 sig=$2
    [[ -n $pid ]] || return 0
    kill "-$sig" "$pid" 2> /dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2> /dev/null; then
        note "pid $pid did not stop on SIG$sig, killing it"
        kill -KILL "$pid" 2> /dev/null || true
    fi
    wait "$pid" 2> /dev/null || true
}

stop_iocomp() {
    local b
    for b in "${!IOCOMP_PIDS[@]}"; do stop_pid "${IOCOMP_PIDS[$b]}" TERM; done
    IOCOMP_PIDS=()
}

stop_nginx() {
    local p
    stop_pid "$NGX_PID" QUIT
    # If the master had to be killed, its workers would be orphans: end them too.
    for p in $NGX_WORKERS; do
        if kill -0 "$p" 2> /dev/null; then kill -KILL "$p" 2> /dev/null || true; fi
    done
    NGX_PID=
    NGX_WORKERS=
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_iocomp
    stop_nginx
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ the client
# One transfer per invocation. Prints: bytes secs srv_user srv_sys cli_user cli_sys
#   srv_*: CPU seconds of the server pids (user, sys) from /proc/PID/stat, delta over the transfer
#          (all threads of each process; the total is exact, the user/sys split is tick-sampled)
#   cli_*: CPU seconds of the client (getrusage of this process, or wait4 of curl)
cat > "$WORK/client.py" << 'PY'
import os, resource, socket, subprocess, sys, time

mode, port, name, clk_tck, timeout_s, pids = sys.argv[1:7]
port, clk_tck, timeout_s = int(port), int(clk_tck), float(timeout_s)
pids = [int(p) for p in pids.split(",") if p]

def server_cpu():
    u = s = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        rest = st[st.rindex(")") + 2:].split()  # rest[0] is field 3 (state)
        u += int(rest[11])  # field 14: utime (all threads of the process)
        s += int(rest[12])  # field 15: stime
    return u / clk_tck, s / clk_tck

BUF = bytearray(1 << 20)
VIEW = memoryview(BUF)

def drain(sock):
    total = 0
    while True:
        n = sock.recv_into(VIEW)
        if n == 0:
            return total
        total += n

def line_client():
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(name.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        return drain(s)

def http_client():
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(b"GET /" + name.encode() + b" HTTP/1.0\r\n\r\n")
        head = b""
        total = 0
        while True:  # read until the end of the header, keeping only the header's bytes
            n = s.recv_into(VIEW)
            if n == 0:
                sys.exit(f"http: connection closed inside the header: {head[:200]!r}")
            head += bytes(VIEW[:n])
            end = head.find(b"\r\n\r\n")
            if end >= 0:
                hlen = end + 4
                total = len(head) - hlen
                head = head[:hlen]
                break
            if len(head) > 65536:
                sys.exit("http: header longer than 64 KiB")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            sys.exit(f"http: status line {status!r}")
        return total + drain(s)

def curl_client():
    url = f"http://127.0.0.1:{port}/{name}"
    p = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "--max-time", str(int(timeout_s)),
                          "-w", "%{size_download} %{http_code}", url], stdout=subprocess.PIPE)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"curl failed with status {os.waitstatus_to_exitcode(status)}")
    size, code = out.decode().split()
    if code != "200":
        sys.exit(f"curl: HTTP status {code}")
    return int(size), ru.ru_utime, ru.ru_stime

s0 = server_cpu()
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
if mode == "line":
    nbytes = line_client()
elif mode == "http":
    nbytes = http_client()
elif mode == "curl":
    nbytes, cu, cs = curl_client()
else:
    sys.exit(f"unknown mode {mode}")
t1 = time.perf_counter()
r1 = resource.getrusage(resource.RUSAGE_SELF)
time.sleep(0.05)  # let the server finish closing before its CPU is read
s1 = server_cpu()
if mode != "curl":
    cu, cs = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
print(nbytes, f"{t1 - t0:.6f}", f"{s1[0] - s0[0]:.2f}", f"{s1[1] - s0[1]:.2f}",
      f"{cu:.4f}", f"{cs:.4f}")
PY

# ----------------------------------------------------------------- test file
avail_kib=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
((avail_kib > SIZE_MIB * 1024 + 65536)) || die "not enough free disk space in $WORK for a $SIZE_MIB MiB file"
memavail_kib=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
if ((memavail_kib < SIZE_MIB * 1024 * 3 / 2)); then
    note "warning: MemAvailable is $((memavail_kib / 1024)) MiB: a $SIZE_MIB MiB file may not stay in page cache"
fi
fstype=$(stat -f -c %T "$WORK")
[[ $fstype != tmpfs ]] || note "warning: $WORK is on tmpfs, not a disk file system (set BENCH_TMP)"

note "writing the $SIZE_MIB MiB test file ($DATA) to $FILE ..."
if [[ $DATA == zero ]]; then
    dd if=/dev/zero of="$FILE" bs=1M count="$SIZE_MIB" status=none
elif command -v openssl > /dev/null; then
    openssl rand -out "$FILE" "$SIZE"
else
    head -c "$SIZE" /dev/urandom > "$FILE"
fi
chmod 644 "$FILE"
sync "$FILE" # written back now, not during the first transfers
[[ $(stat -c %s "$FILE") -eq $SIZE ]] || die "test file has the wrong size"
(($(stat -c %b "$FILE") * $(stat -c %B "$FILE") >= SIZE)) || die "test file is sparse"
cat "$FILE" > /dev/null
resident=
if command -v fincore > /dev/null; then
    resident=$(fincore -b -n -o RES "$FILE" 2> /dev/null | tr -d ' ' || true)
fi

# Busy CPUs over one second before the run: other work on the machine skews the figures.
busy_before=$(python3 -c '
import time
def busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]) - v[3] - v[4], sum(v[:8])
b0, t0 = busy(); time.sleep(1); b1, t1 = busy()
ncpu = sum(1 for l in open("/proc/stat") if l[:3] == "cpu" and l[3].isdigit())
print(f"{(b1 - b0) / max(t1 - t0, 1) * ncpu:.2f}")')
if python3 -c "import sys; sys.exit(0 if float('$busy_before') > 0.25 else 1)"; then
    note "warning: $busy_before CPUs were busy with other work just before the run: expect noisy figures"
fi

# --------------------------------------------------------------------- servers
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }

declare -A IOCOMP_PORTS=() IOCOMP_PIDS=()
# start_iocomp WORKERS BACKEND
start_iocomp() {
    local w=$1 b=$2 line= pid out=$WORK/iocomp-$2.out err=$WORK/iocomp-$2.err
    "$IOCOMP_BIN" serve "$WWW" --bind 127.0.0.1:0 --threads "$w" --quiet --backend "$b" \
        > "$out" 2> "$err" &
    pid=$!
    IOCOMP_PIDS[$b]=$pid
    for _ in $(seq 100); do
        line=$(grep -m1 '^listening on ' "$out" || true)
        [[ -z $line ]] || break
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.1
    done
    if [[ -z $line ]]; then
        cat "$err" >&2
        die "iocomp ($b) did not print 'listening on' within 10 s"
    fi
    IOCOMP_PORTS[$b]=${line##*:}
    is_posint "${IOCOMP_PORTS[$b]}" || die "cannot parse iocomp's port from '$line'"
}

NGX_PORT=
start_nginx() {
    local w=$1 prefix=$WORK/nginx-$1 attempt p eflag=()
    mkdir -p "$prefix/temp"
    if "$NGINX" -h 2>&1 | grep -- "-e filename" > /dev/null; then eflag=(-e "$prefix/error.log"); fi
    for attempt in 1 2 3 4 5; do
        NGX_PORT=$(free_port)
        cat > "$prefix/nginx.conf" << EOF
daemon off;
master_process on;
worker_processes $w;
error_log $prefix/error.log warn;
pid $prefix/nginx.pid;
events {}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    client_body_temp_path $prefix/temp/body;
    proxy_temp_path $prefix/temp/proxy;
    fastcgi_temp_path $prefix/temp/fastcgi;
    uwsgi_temp_path $prefix/temp/uwsgi;
    scgi_temp_path $prefix/temp/scgi;
    server {
        listen 127.0.0.1:$NGX_PORT;
        root $WWW;
    }
}
EOF
        "$NGINX" "${eflag[@]}" -c "$prefix/nginx.conf" -p "$prefix/" > "$prefix/stdout" 2>&1 &
        NGX_PID=$!
        for _ in $(seq 100); do
            port_open "$NGX_PORT" && break
            kill -0 "$NGX_PID" 2> /dev/null || break
            sleep 0.1
        done
        if kill -0 "$NGX_PID" 2> /dev/null && port_open "$NGX_PORT"; then
            break
        fi
        stop_nginx
        if ! grep -q 'Address already in use' "$prefix/error.log" "$prefix/stdout" 2> /dev/null || ((attempt == 5)); then
            cat "$prefix/stdout" "$prefix/error.log" >&2 2> /dev/null || true
            die "nginx did not start (config $prefix/nginx.conf)"
        fi
    done
    # The worker processes are the master's children; wait until all $w are there.
    for _ in $(seq 100); do
        NGX_WORKERS=
        for p in $(pgrep -P "$NGX_PID" || true); do
            grep -q 'worker process' "/proc/$p/cmdline" 2> /dev/null && NGX_WORKERS+="$p "
        done
        [[ $(wc -w <<< "$NGX_WORKERS") -eq $w ]] && break
        sleep 0.1
    done
    [[ $(wc -w <<< "$NGX_WORKERS") -eq $w ]] || die "nginx has workers '$NGX_WORKERS', expected $w"
}

# transfer WORKERS SERVER CLIENT ROUND
transfer() {
    local w=$1 server=$2 client=$3 round=$4 port pids mode out bytes
    case $server in
        iocomp-*) port=${IOCOMP_PORTS[${server#iocomp-}]} pids=${IOCOMP_PIDS[${server#iocomp-}]} ;;
        nginx) port=$NGX_PORT pids=$(tr ' ' ',' <<< "${NGX_WORKERS% }") ;;
    esac
    case $client in
        python) [[ $server == iocomp-* ]] && mode=line || mode=http ;;
        curl) mode=curl ;;
    esac
    cat "$FILE" > /dev/null # into page cache (idle page cache is evicted after a while)
    if ! out=$(timeout -k 5 $((TIMEOUT_S + 15)) python3 "$WORK/client.py" \
        "$mode" "$port" "$NAME" "$CLK_TCK" "$TIMEOUT_S" "$pids"); then
        die "$server/$client (workers=$w, round $round): the download failed"
    fi
    read -r bytes _ <<< "$out"
    [[ $bytes == "$SIZE" ]] \
        || die "$server/$client (workers=$w, round $round): received $bytes bytes, expected $SIZE"
    case $server in
        iocomp-*) kill -0 "$pids" 2> /dev/null || die "$server exited during the transfer" ;;
        nginx) kill -0 "$NGX_PID" 2> /dev/null || die "nginx exited during the transfer" ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\n' "$w" "$server" "$client" "$round" "${out// /$'\t'}" >> "$RAW"
    read -r _ secs su ss cu cs <<< "$out"
    note "$(printf 'workers=%s round %s/%s  %-12s %-6s %8.3f s  server usr %s sys %s  client %.2f s' \
        "$w" "$round" "$ROUNDS" "$server" "$client" "$secs" "$su" "$ss" "$(echo "$cu $cs" | awk '{print $1 + $2}')")"
}

# ------------------------------------------------------------------------- run
printf 'workers\tserver\tclient\tround\tbytes\tsecs\tsrv_user\tsrv_sys\tcli_user\tcli_sys\n' > "$RAW"
clients=(python)
[[ $CURL == 1 ]] && clients+=(curl)
for w in $WORKERS; do
    for b in $BACKENDS; do start_iocomp "$w" "$b"; done
    start_nginx "$w"
    for b in $BACKENDS; do note "workers=$w: iocomp ($b) pid ${IOCOMP_PIDS[$b]} on 127.0.0.1:${IOCOMP_PORTS[$b]}"; done
    note "workers=$w: nginx master $NGX_PID workers ${NGX_WORKERS% } on 127.0.0.1:$NGX_PORT"
    for round in $(seq "$ROUNDS"); do
        for b in $BACKENDS; do transfer "$w" "iocomp-$b" python "$round"; done
        for c in "${clients[@]}"; do transfer "$w" nginx "$c" "$round"; done
    done
    stop_iocomp
    stop_nginx
done
[[ -z $RESULTS ]] || cp "$RAW" "$RESULTS"

# --------------------------------------------------------------------- summary
iocomp_ver=$("$IOCOMP_BIN" --version 2> /dev/null | head -n 1 || echo iocomp)
nginx_ver=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
python3 - "$RAW" "$SIZE" "$ROUNDS" "$iocomp_ver" "$nginx_ver" "$(uname -r)" "$(nproc)" "$resident" "$busy_before" << 'PY'
import statistics, sys
raw, size, rounds, iover, ngver, kernel, ncpu, resident, busy = sys.argv[1:10]
size = int(size)
gib = size / 2**30
rows = {}
with open(raw) as f:
    next(f)
    for line in f:
        w, server, client, _, b, secs, su, ss, cu, cs = line.split("\t")
        rows.setdefault((int(w), server, client), []).append(
            tuple(map(float, (secs, su, ss, cu, cs))))

def med(xs):
    return statistics.median(xs)

print(f"one {size // 2**20} MiB download over 127.0.0.1, median of {rounds} rounds, "
      f"file re-read into page cache before each transfer")
print(f"{iover}; nginx {ngver} (sendfile on); kernel {kernel}; {ncpu} CPUs"
      + (f"; page cache held {int(resident) // 2**20} of {size // 2**20} MiB after cat" if resident.isdigit() else "")
      + f"; {busy} CPUs busy with other work before the run")
print()
hdr = ("workers", "server", "client", "seconds", "GiB/s", "srv CPU s", "srv usr", "srv sys",
       "srv CPU s/GiB", "cli CPU s")
fmt = "{:>7}  {:<12}  {:<6}  {:>7}  {:>6}  {:>9}  {:>7}  {:>7}  {:>13}  {:>9}"
print(fmt.format(*hdr))
summary = {}
for key in sorted(rows, key=lambda k: (k[0], not k[1].startswith("iocomp"), k[1], k[2] != "python")):
    r = rows[key]
    secs = med([x[0] for x in r])
    rate = med([gib / x[0] for x in r])
    srv = med([x[1] + x[2] for x in r])
    cli = med([x[3] + x[4] for x in r])
    summary[key] = (rate, srv / gib)
    print(fmt.format(key[0], key[1], key[2], f"{secs:.3f}", f"{rate:.2f}", f"{srv:.2f}",
                     f"{med([x[1] for x in r]):.2f}", f"{med([x[2] for x in r]):.2f}",
                     f"{srv / gib:.2f}", f"{cli:.2f}"))
print()
def ratio(a, b):
    cpu = f"{a[1] / b[1]:.2f}x" if b[1] > 0 else "n/a (CPU below clock-tick resolution)"
    return f"throughput {a[0] / b[0]:.2f}x, server CPU s per GiB {cpu}"

for w in sorted({k[0] for k in rows}):
    ng = summary.get((w, "nginx", "python"))
    for srv in sorted({k[1] for k in rows if k[1].startswith("iocomp")}):
        a = summary.get((w, srv, "python"))
        if a and ng:
            print(f"workers={w}: {srv}/nginx (same Python client): {ratio(a, ng)}")
    u, e = summary.get((w, "iocomp-uring", "python")), summary.get((w, "iocomp-epoll", "python"))
    if u and e:
        print(f"workers={w}: iocomp epoll/uring: {ratio(e, u)}")
PY
