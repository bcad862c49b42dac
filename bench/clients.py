"""The load generators: wrk (small files), `iocomp bench` (large files with
large reads, and the line protocol), curl (parallel and single large
downloads), and a Python holder of idle keep-alive connections. Each returns
a dict of figures; every client's own CPU time is recorded too, because a
client at 100 % of its core measures itself, not the server."""

import json
import os
import re
import subprocess
import time

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def run(argv, limit, cpu_list=None):
    """Runs argv (on cpu_list), returns (stdout, wall seconds); fails loudly."""
    if cpu_list is not None:
        argv = ["taskset", "-c", cpu_list] + argv
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise SystemExit(f"bench: {argv[0]} ran past {limit} s")
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} failed ({p.returncode}): {err.decode(errors='replace')[-500:]}")
    return out.decode(errors="replace"), wall


class ChildCpu:
    """CPU seconds used by children reaped between enter and exit."""

    def __enter__(self):
        r = os.times()
        self.t = r.children_user + r.children_system
        return self

    def __exit__(self, *a):
        r = os.times()
        self.seconds = r.children_user + r.children_system - self.t


def ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def wrk(url, conns, duration, cpu_list, script=None):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if script:
        argv += ["-s", script]
    with ChildCpu() as c:
        out, wall = run(argv + [url], duration + 30, cpu_list)
    r = {"client_cpu_s": c.seconds, "wall_s": wall}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", out)
    r["requests"] = int(m.group(1))
    r["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        r[f"p{pct}_ms"] = ms(m.group(1)) if m else None
    m = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    r["max_ms"] = ms(m.group(1)) if m else None
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    r["errors"] = errors
    return r


def iocomp_bench(iocomp, url, conns, duration, cpu_list, raw=False, size=None, threads=1):
    argv = [iocomp, "bench", url, "-c", str(conns), "-d", f"{duration}s", "-t", str(threads), "--json"]
    if raw:
        argv += ["--raw"] + (["--size", str(size)] if size is not None else [])
    with ChildCpu() as c:
        out, wall = run(argv, duration + 60, cpu_list)
    j = json.loads(out.strip().splitlines()[-1])
    lat = j["latency_us"]
    return {
        "client_cpu_s": c.seconds,
        "wall_s": wall,
        "requests": j["requests"],
        "rps": j["requests_per_s"],
        "bytes": j["body_bytes"],
        "gibps": j["bytes_per_s"] / 2**30,
        "p50_ms": lat["p50"] / 1000,
        "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000,
        "errors": sum(j["errors"].values()),
    }


def curl_parallel(urls, size_each, cpu_list, duration):
    """`curl -Z`: every URL at once, the batch repeated until `duration`
    seconds have passed (at least once, so that the server's CPU time is more
    than a few clock ticks); GiB/s over all batches."""
    argv = ["curl", "-s", "-S", "-Z", "--parallel-max", str(len(urls)), "-w", "%{size_download}\\n"]
    for u in urls:
        argv += ["-o", "/dev/null", u]
    sizes, wall, batches = [], 0.0, 0
    with ChildCpu() as c:
        while wall < duration or not batches:
            out, w = run(argv, 300, cpu_list)
            sizes += [int(x) for x in out.split()]
            wall += w
            batches += 1
    got = sum(sizes)
    want = size_each * len(urls) * batches
    urls = urls * batches
    errors = sum(1 for s in sizes if s != size_each) + max(0, len(urls) - len(sizes))
    return {"client_cpu_s": c.seconds, "wall_s": wall, "bytes": got, "gibps": got / wall / 2**30,
            "errors": errors if got != want or errors else 0}


# The one cipher suite of the tls-* scenarios (rustls' name; OpenSSL's below).
TLS_SUITE = "TLS13_AES_128_GCM_SHA256"


def iocomp_bench_tls(iocomp, url, conns, duration, cpu_list, cacert, new_connection=False):
    """`iocomp bench` over TLS, offering only TLS_SUITE; with
    `new_connection`, one request per connection (requests/s are then full
    handshakes/s)."""
    argv = [iocomp, "bench", url, "-c", str(conns), "-d", f"{duration}s", "-t", "1", "--json",
            "--cacert", cacert, "--tls-suite", TLS_SUITE]
    if new_connection:
        argv.append("--new-connection")
    with ChildCpu() as c:
        out, wall = run(argv, duration + 60, cpu_list)
    j = json.loads(out.strip().splitlines()[-1])
    lat = j["latency_us"]
    return {
        "client_cpu_s": c.seconds,
        "wall_s": wall,
        "requests": j["requests"],
        "connects": j["connects"],
        "rps": j["requests_per_s"],
        "bytes": j["body_bytes"],
        "gibps": j["bytes_per_s"] / 2**30,
        "p50_ms": lat["p50"] / 1000,
        "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000,
        "errors": sum(j["errors"].values()),
    }


def curl_tls(urls, size_each, cpu_list, duration, cacert):
    """curl_parallel over TLS: TLS 1.3 with AES-128-GCM only, trusting
    `cacert`; GiB/s over all batches (every byte counted as it arrives, so a
    1 GiB file needs no rounding to whole responses)."""
    argv = ["curl", "-s", "-S", "-Z", "--parallel-max", str(len(urls)), "-w", "%{size_download}\\n",
            "--cacert", cacert, "--tlsv1.3", "--tls13-ciphers", "TLS_AES_128_GCM_SHA256", "--no-sessionid"]
    for u in urls:
        argv += ["-o", "/dev/null", u]
    sizes, wall, batches = [], 0.0, 0
    with ChildCpu() as c:
        while wall < duration or not batches:
            out, w = run(argv, 300, cpu_list)
            sizes += [int(x) for x in out.split()]
            wall += w
            batches += 1
    got = sum(sizes)
    errors = sum(1 for s in sizes if s != size_each) + max(0, len(urls) * batches - len(sizes))
    return {"client_cpu_s": c.seconds, "wall_s": wall, "bytes": got, "gibps": got / wall / 2**30,
            "errors": errors}


HOLD = r"""
import socket, sys
port, conns, sources = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
req = b"GET /idle.txt HTTP/1.1\r\nHost: idle\r\n\r\n"
held, errors = [], 0
def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d: raise OSError("EOF before the response head")
        buf += d
    head, body = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"): raise OSError("bad response")
    n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
    while len(body) < n:
        d = s.recv(4096)
        if not d: raise OSError("EOF in the body")
        body += d
batch = []
for i in range(conns):
    try:
        s = socket.socket()
        s.settimeout(20)
        s.bind(("127.0.0.%d" % (2 + i % sources), 0))
        s.connect(("127.0.0.1", port))
        s.sendall(req)
        batch.append(s)
    except OSError:
        errors += 1
    if len(batch) == 100 or i == conns - 1:
        for b in batch:
            try:
                read_response(b); held.append(b)
            except OSError:
                errors += 1
        batch = []
print("ready", len(held), errors, flush=True)
sys.stdin.read()
"""


class Idle:
    """Holds `conns` idle keep-alive connections (each made one request)."""

    def __init__(self, port, conns, sources=4):
        self.p = subprocess.Popen(["python3", "-c", HOLD, str(port), str(conns), str(sources)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().split()
        if len(line) != 3 or line[0] != "ready":
            self.close()
            raise SystemExit(f"bench: the idle-connection client failed: {line}")
        self.held, self.errors = int(line[1]), int(line[2])

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait(timeout=60)
