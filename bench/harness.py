#!/usr/bin/env python3
"""iocomp beside nginx and lighttpd, scenario by scenario, in interleaved
rounds (A B C D A B C D ...) so that drift hits every server alike; two
layouts (unpinned; pinned: servers on CPU 0, the load generator on CPU 1).
Writes every run and the medians to JSON, prints a table of ratios to the
best peer, and (with bench/plot.py) draws the README's plot.

Started by bench/run, which installs the peers and builds iocomp first."""

import argparse
import datetime
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clients  # noqa: E402
import servers  # noqa: E402

KIB, MIB, GIB = 1024, 2**20, 2**30

# name: (client, path, connections, what it measures, servers)
SCENARIOS = {
    "1k-c50": ("wrk", "1k.bin", 50, "rps", "all"),
    "1k-c1000": ("wrk", "1k.bin", 1000, "rps", "all"),
    "files1000-c50": ("wrk-files", "files/", 50, "rps", "all"),
    "64k-c50": ("bench", "64k.bin", 50, "gibps", "all"),
    "1m-c8": ("bench", "1m.bin", 8, "gibps", "all"),
    "100m-x8-curl": ("curl-z", "100m.bin", 8, "gibps", "all"),
    "1g-curl": ("curl-z", "1g.bin", 1, "gibps", "all"),
    "line-1k-c50": ("bench-raw", "1k.bin", 50, "rps", "iocomp"),
    "idle-5000": ("idle", "idle.txt", 5000, "full_bytes_per_conn", "all"),
    "idle-10000": ("idle", "idle.txt", 10000, "full_bytes_per_conn", "all"),
    # HTTPS against nginx (OpenSSL): ECDSA P-256 certificate, TLS 1.3 with
    # AES-128-GCM only, no resumption (see tls_setup); `--scenarios tls` runs
    # these three alone.
    "tls-1k-c50": ("bench-tls", "1k.bin", 50, "rps", "tls"),
    "tls-handshake-c16": ("bench-tls-new", "1k.bin", 16, "rps", "tls"),
    "tls-1g-curl": ("curl-tls", "1g.bin", 1, "gibps", "tls"),
}
# Servers that speak TLS in the tls-* scenarios.
TLS_SERVERS = ("iocomp", "nginx")
FILES = {"1k.bin": KIB, "64k.bin": 64 * KIB, "1m.bin": MIB, "100m.bin": 100 * MIB, "1g.bin": GIB}
LAYOUTS = {"unpinned": (None, None), "pinned": ("0", "1")}
HIGHER_BETTER = {"rps": True, "gibps": True, "full_bytes_per_conn": False}


class H:
    """Settings shared by servers and scenarios."""


def make_files(www):
    os.makedirs(os.path.join(www, "files"), exist_ok=True)
    for name, size in FILES.items():
        p = os.path.join(www, name)
        if not os.path.exists(p) or os.path.getsize(p) != size:
            with open(p, "wb") as f:
                block = os.urandom(MIB)
                left = size
                while left:
                    n = min(left, len(block))
                    f.write(block[:n])
                    left -= n
                f.flush()
                os.fsync(f.fileno())
    for i in range(1000):
        with open(os.path.join(www, "files", f"f{i}.bin"), "wb") as f:
            f.write(os.urandom(KIB))
    with open(os.path.join(www, "idle.txt"), "w") as f:
        f.write("a small file for the idle-connection test\n")
    # Workers that drop privileges (nginx, lighttpd) must read the tree.
    for d, _, fs in os.walk(www):
        os.chmod(d, 0o755)
        for x in fs:
            os.chmod(os.path.join(d, x), 0o644)


def warm(paths):
    """Reads the files back into the page cache (this machine evicts file
    pages left untouched for about a minute); returns the cached share."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(4 * MIB):
                pass
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE"] + paths,
                         capture_output=True, text=True).stdout.split()
    # A file smaller than a page is cached as a whole page: cap each at its size.
    res = sum(min(int(r), int(s)) for r, s in zip(out[0::2], out[1::2]))
    size = sum(int(x) for x in out[1::2])
    return round(100.0 * res / size, 1) if size else 100.0


def scenario_paths(h, scen):
    client, path = SCENARIOS[scen][0], SCENARIOS[scen][1]
    if path.endswith("/"):
        return [os.path.join(h.www, path, f"f{i}.bin") for i in range(1000)]
    return [os.path.join(h.www, path)]


def cpu_busy(cpus):
    """Busy seconds (everything but idle and iowait) of the CPUs in a list
    like "0" or "0-1", from /proc/stat."""
    lo, _, hi = cpus.partition("-")
    want = {f"cpu{i}" for i in range(int(lo), int(hi or lo) + 1)}
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            x = line.split()
            if x[0] in want:
                busy += sum(int(v) for v in x[1:9]) - int(x[4]) - int(x[5])
    return busy / servers.HZ


def one(h, srv, scen, client_cpus, server_cpus=None):
    """One measurement of one server in one scenario. Pinned, it also records
    how much of the server's CPU went to anything but the server
    (`foreign_cpu_s`: other processes, interrupts for others): a round where
    others took the server's core is not comparable, since a starved server
    batches more and its CPU per request or per GiB falls."""
    client, path, conns, _, _ = SCENARIOS[scen]
    cache = warm(scenario_paths(h, scen))
    b0 = cpu_busy(server_cpus) if server_cpus else None
    u0, s0 = srv.cpu()
    if client == "wrk":
        r = clients.wrk(srv.url(path), conns, h.duration, client_cpus)
        r["bytes"] = r["requests"] * FILES[path]
    elif client == "wrk-files":
        r = clients.wrk(srv.url(""), conns, h.duration, client_cpus, script=h.lua)
        r["bytes"] = r["requests"] * KIB
    elif client == "bench":
        r = clients.iocomp_bench(h.iocomp, srv.url(path), conns, h.duration, client_cpus)
    elif client == "bench-raw":
        r = clients.iocomp_bench(h.iocomp, f"127.0.0.1:{srv.port}/{path}", conns, h.duration, client_cpus,
                                 raw=True, size=FILES[path])
        r["bytes"] = r["requests"] * FILES[path]
    elif client == "curl-z":
        r = clients.curl_parallel([srv.url(path)] * conns, FILES[path], client_cpus, h.duration)
    elif client in ("bench-tls", "bench-tls-new"):
        r = clients.iocomp_bench_tls(h.iocomp, srv.tls_url(path), conns, h.duration, client_cpus, h.tls_cert,
                                     new_connection=client == "bench-tls-new")
    elif client == "curl-tls":
        r = clients.curl_tls([srv.tls_url(path)] * conns, FILES[path], client_cpus, h.duration, h.tls_cert)
    else:
        raise ValueError(client)
    u1, s1 = srv.cpu()
    r.update(server_user_s=u1 - u0, server_sys_s=s1 - s0, cache_pct=cache)
    if b0 is not None:
        r["foreign_cpu_s"] = max(0.0, cpu_busy(server_cpus) - b0 - r["server_user_s"] - r["server_sys_s"])
    cpu = r["server_user_s"] + r["server_sys_s"]
    if r.get("requests"):
        r["server_cpu_us_per_req"] = cpu / r["requests"] * 1e6
        r["requests_per_cpu_s"] = r["requests"] / cpu if cpu else None
    if r.get("bytes"):
        r["server_cpu_s_per_gib"] = cpu / (r["bytes"] / GIB)
    return r


def idle(h, srv, scen, server_cpus):
    """Memory per idle keep-alive connection: a fresh server, a warm-up of
    200 connections, then `conns` held; (RSS after − RSS before) / conns is the
    marginal cost, and (RSS after − RSS of a fresh server with a capacity of
    512) / conns the full cost, counting preallocations sized by capacity."""
    conns = SCENARIOS[scen][2]
    srv.start(server_cpus, capacity=512)
    time.sleep(0.3)
    small = srv.rss()
    srv.stop()
    srv.start(server_cpus, capacity=conns + 2000)
    try:
        clients.Idle(srv.port, 200, 1).close()
        time.sleep(0.3)
        before = srv.rss()
        hold = clients.Idle(srv.port, conns)
        time.sleep(1.0)
        after = srv.rss()
        hold.close()
    finally:
        srv.stop()
    return {"held": hold.held, "errors": hold.errors + (conns - hold.held - hold.errors),
            "rss_small": small, "rss_before": before, "rss_after": after,
            "bytes_per_conn": (after - before) / conns, "full_bytes_per_conn": (after - small) / conns}


def tls_setup(h):
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 (CA:FALSE, so that
    rustls takes it as its own trust anchor) for every server's TLS listener;
    sets h.tls_cert and h.tls_key."""
    h.tls_cert = os.path.join(h.work, "tls-cert.pem")
    h.tls_key = os.path.join(h.work, "tls-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", h.tls_key, "-out", h.tls_cert, "-days", "30", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, capture_output=True)
    os.chmod(h.tls_key, 0o644)


def summarise(runs):
    keys = ["rps", "gibps", "bytes_per_conn", "full_bytes_per_conn", "p50_ms", "p99_ms", "max_ms",
            "server_cpu_us_per_req", "requests_per_cpu_s", "server_cpu_s_per_gib", "server_user_s", "server_sys_s",
            "client_cpu_s", "errors", "cache_pct", "foreign_cpu_s"]
    groups = {}
    for r in runs:
        groups.setdefault((r["layout"], r["scenario"], r["server"]), []).append(r)
    med = {}
    for (lay, scen, srv), rs in groups.items():
        m = {"rounds": len(rs)}
        for k in keys:
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                m[k] = max(vals) if k == "errors" else statistics.median(vals)
        med.setdefault(lay, {}).setdefault(scen, {})[srv] = m
    return med


def ratios(med):
    """For each layout and scenario: the best peer on the scenario's own
    figure, and each iocomp's ratio to it (and to its CPU cost)."""
    out = []
    for lay, scens in med.items():
        for scen, srvs in scens.items():
            metric = SCENARIOS[scen][3]
            hb = HIGHER_BETTER[metric]
            peers = {s: m for s, m in srvs.items() if not s.startswith("iocomp") and metric in m}
            if scen.startswith("line"):
                # No peer speaks the line protocol: compare with the best peer's HTTP at 1 KiB.
                peers = {f"{s} (HTTP)": m for s, m in scens.get("1k-c50", {}).items() if not s.startswith("iocomp")}
            if not peers:
                continue
            best = (max if hb else min)(peers, key=lambda s: peers[s][metric])
            for s, m in srvs.items():
                if not s.startswith("iocomp") or metric not in m:
                    continue
                row = {"layout": lay, "scenario": scen, "server": s, "metric": metric, "best_peer": best,
                       "value": m[metric], "peer_value": peers[best][metric],
                       "ratio": m[metric] / peers[best][metric] if peers[best][metric] else None}
                for cost in ("server_cpu_us_per_req", "server_cpu_s_per_gib", "p99_ms", "bytes_per_conn"):
                    if cost in m and peers[best].get(cost):
                        row[f"{cost}_ratio"] = m[cost] / peers[best][cost]
                if metric == "rps":
                    best_eff = max((p.get("requests_per_cpu_s") or 0) for p in peers.values())
                    if best_eff and m.get("requests_per_cpu_s"):
                        row["requests_per_cpu_s_ratio"] = m["requests_per_cpu_s"] / best_eff
                out.append(row)
    return out


def table(rows, med):
    def f(x, d=2):
        return "–" if x is None else f"{x:.{d}f}"

    unit = {"rps": "req/s", "gibps": "GiB/s", "full_bytes_per_conn": "B/conn"}
    lines = ["| layout | scenario | iocomp | value | best peer | peer value | ratio | server CPU ratio | p99 ratio |",
             "|---|---|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        cpu = r.get("server_cpu_us_per_req_ratio") or r.get("server_cpu_s_per_gib_ratio")
        if r["metric"] == "full_bytes_per_conn":
            # Memory rows: the full cost is the figure; the marginal cost's
            # ratio goes in the second column.
            cpu = r.get("bytes_per_conn_ratio")
        v = r["value"]
        pv = r["peer_value"]
        d = 0 if r["metric"] != "gibps" else 2
        lines.append(f"| {r['layout']} | {r['scenario']} | {r['server']} | {v:.{d}f} {unit[r['metric']]} | "
                     f"{r['best_peer']} | {pv:.{d}f} | **{f(r['ratio'])}×** | {f(cpu)} | "
                     f"{f(r.get('p99_ms_ratio'))} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iocomp", required=True, help="the iocomp binary")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per timed run")
    ap.add_argument("--workers", type=int, default=1, help="server worker threads/processes")
    ap.add_argument("--layouts", default="unpinned,pinned")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--servers", default="iocomp-uring,iocomp-epoll,nginx,lighttpd",
                    help="comma-separated; an A/B variant of iocomp is iocomp-BACKEND-LABEL=PATH (another build)")
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--data", help="where the test files live (default: a temp dir; 1.2 GiB)")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 20), hard))

    h = H()
    h.iocomp, h.duration, h.workers = os.path.abspath(a.iocomp), a.duration, a.workers
    h.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    h.lighttpd = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
    h.work = tempfile.mkdtemp(prefix="iocomp-bench.")
    os.chmod(h.work, 0o755)
    h.www = a.data or os.path.join(h.work, "www")
    print(f"bench: test files in {h.www}", file=sys.stderr)
    make_files(h.www)
    # Let the writeback of 1.2 GiB of fresh files finish before the first round.
    os.sync()
    time.sleep(5)
    h.lua = os.path.join(h.work, "files.lua")
    with open(h.lua, "w") as f:
        f.write('local n = 0\nrequest = function()\n  n = n + 1\n'
                '  return wrk.format(nil, "/files/f" .. (n % 1000) .. ".bin")\nend\n')

    def make(name):
        if name.startswith("iocomp-") and "=" in name:
            # A variant for an A/B: `iocomp-BACKEND-LABEL=PATH` runs the binary at PATH.
            name, path = name.split("=", 1)
            return servers.Server(name, "iocomp", h, backend=name.split("-")[1], binary=os.path.abspath(path))
        if name.startswith("iocomp-"):
            return servers.Server(name, "iocomp", h, backend=name.split("-", 1)[1])
        return servers.Server(name, name, h)

    srvs = [make(n) for n in a.servers.split(",")]
    # Group names: `tls` is every tls-* scenario.
    scens = [x for s in a.scenarios.split(",") if s
             for x in ([k for k in SCENARIOS if k.startswith("tls-")] if s == "tls" else [s])]
    h.tls_cert = h.tls_key = None
    if any(SCENARIOS.get(s, ("",) * 5)[4] == "tls" for s in scens):
        tls_setup(h)
    for s in scens:
        if s not in SCENARIOS:
            raise SystemExit(f"bench: unknown scenario {s}; known: {', '.join(SCENARIOS)}")
    runs = []
    started = time.time()
    try:
        for lay in a.layouts.split(","):
            scpu, ccpu = LAYOUTS[lay]
            timed = [s for s in scens if SCENARIOS[s][0] != "idle"]
            if timed:
                for srv in srvs:
                    srv.start(scpu)
                for scen in timed:
                    for rnd in range(1, a.rounds + 1):
                        for srv in srvs:
                            if SCENARIOS[scen][4] == "iocomp" and srv.kind != "iocomp":
                                continue
                            if SCENARIOS[scen][4] == "tls" and srv.kind not in TLS_SERVERS:
                                continue
                            r = one(h, srv, scen, ccpu, scpu)
                            r.update(layout=lay, scenario=scen, server=srv.name, round=rnd)
                            runs.append(r)
                            fig = f"{r['rps']:.0f} req/s" if "rps" in r else f"{r['gibps']:.2f} GiB/s"
                            print(f"{lay} {scen} round {rnd} {srv.name}: {fig}, errors {r['errors']}, "
                                  f"server CPU {r['server_user_s'] + r['server_sys_s']:.2f} s, "
                                  f"client CPU {r['client_cpu_s']:.2f} s, cache {r['cache_pct']}%"
                                  + (f", others on the server's CPU {r['foreign_cpu_s']:.2f} s"
                                     + (" (NOT comparable: the server was starved)"
                                        if r["foreign_cpu_s"] > 0.1 * r["wall_s"] else "")
                                     if "foreign_cpu_s" in r else ""),
                                  file=sys.stderr, flush=True)
                for srv in srvs:
                    srv.stop()
            for scen in (s for s in scens if SCENARIOS[s][0] == "idle"):
                for rnd in range(1, a.rounds + 1):
                    for srv in srvs:
                        r = idle(h, srv, scen, scpu)
                        r.update(layout=lay, scenario=scen, server=srv.name, round=rnd)
                        runs.append(r)
                        print(f"{lay} {scen} round {rnd} {srv.name}: {r['bytes_per_conn']:.0f} B/conn marginal, "
                              f"{r['full_bytes_per_conn']:.0f} B/conn full, errors {r['errors']}",
                              file=sys.stderr, flush=True)
    finally:
        for srv in srvs:
            srv.stop()
        if not a.data:
            shutil.rmtree(h.work, ignore_errors=True)
    med = summarise(runs)
    rows = ratios(med)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(time.time() - started),
        "settings": {"rounds": a.rounds, "duration_s": a.duration, "workers": a.workers,
                     "layouts": a.layouts.split(","), "scenarios": scens},
        "versions": servers.versions(h),
        "runs": runs, "medians": med, "ratios": rows,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    v = result["versions"]
    print(f"\n{result['date']}, {v['cpus']} CPUs ({v['cpu']}), {v['memory_gib']} GiB, Linux {v['kernel']}; "
          f"{v['iocomp']}, {v['nginx']}, {v['lighttpd']}, {v['wrk']}; "
          f"medians of {a.rounds} interleaved rounds, {a.duration} s each, {a.workers} worker(s)\n")
    print(table(rows, med))
    starved = [r for r in runs if r.get("foreign_cpu_s", 0) > 0.1 * r.get("wall_s", 1e9)]
    if starved:
        print(f"\nwarning: in {len(starved)} of {len(runs)} pinned runs other work took more than 10% of the "
              f"server's CPU; their CPU-per-request figures are not comparable (rerun on a quiet machine): "
              + ", ".join(f"{r['scenario']}/{r['server']}/{r['round']}" for r in starved))
    errs = [r for r in runs if r.get("errors")]
    for r in errs:
        print(f"errors: {r['layout']} {r['scenario']} round {r['round']} {r['server']}: {r['errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
