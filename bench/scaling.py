#!/usr/bin/env python3
"""Thread scaling, the seed's claim ("performance grows linearly with the
number of CPUs"): 1 KiB and 1 MiB responses with 1, 2, 4 and 8 server
workers on the first half of the CPUs, the load generator (`iocomp bench`,
one thread per client CPU; it travels as one binary, so this runs where wrk
does not) on the other half. Worker counts above the server half are
skipped (a 2-CPU machine runs 1 worker). Rounds are interleaved across the
servers, as in harness.py.

For each server and worker count: the median figure, the figure per worker,
and its efficiency against linear scaling from that server's own 1-worker
figure (1.00 = linear). Started by `bench/run --scaling`."""

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clients  # noqa: E402
import servers  # noqa: E402

KIB, MIB = 1024, 2**20
# name: (file, size, connections per worker, metric)
SCENARIOS = {"1k": ("1k.bin", KIB, 50, "rps"), "1m": ("1m.bin", MIB, 8, "gibps")}


class H:
    """Settings the server module reads."""


def cpu_halves(n):
    """(server CPU list, client CPU list, server CPU count) for n CPUs."""
    if n < 2:
        return "0", "0", 1
    half = n // 2
    return f"0-{half - 1}", f"{half}-{n - 1}", half


def make_files(www):
    os.makedirs(www, exist_ok=True)
    for name, size, _, _ in SCENARIOS.values():
        with open(os.path.join(www, name), "wb") as f:
            f.write(os.urandom(size))
    for d, _, fs in os.walk(www):
        os.chmod(d, 0o755)
        for x in fs:
            os.chmod(os.path.join(d, x), 0o644)


def measure(h, srv, scen, workers, client_cpus, client_threads):
    name, size, per_worker, _ = SCENARIOS[scen]
    with open(os.path.join(h.www, name), "rb") as f:
        f.read()
    u0, s0 = srv.cpu()
    r = clients.iocomp_bench(h.iocomp, srv.url(name), per_worker * workers, h.duration, client_cpus,
                             threads=client_threads)
    u1, s1 = srv.cpu()
    r["server_cpu_s"] = (u1 - u0) + (s1 - s0)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iocomp", required=True, help="the iocomp binary (server and load generator)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=4, help="seconds per timed run")
    ap.add_argument("--workers", default="1,2,4,8", help="worker counts to try")
    ap.add_argument("--servers", default="iocomp-uring,iocomp-epoll,nginx,lighttpd")
    ap.add_argument("--out", required=True, help="JSON results file")
    a = ap.parse_args()

    ncpu = os.cpu_count() or 1
    scpus, ccpus, nserver = cpu_halves(ncpu)
    nclient = max(1, ncpu - nserver)
    counts = [w for w in (int(x) for x in a.workers.split(",")) if w <= nserver]
    skipped = [x for x in a.workers.split(",") if int(x) > nserver]
    h = H()
    h.iocomp, h.duration = os.path.abspath(a.iocomp), a.duration
    h.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    h.lighttpd = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
    h.tls_cert = None
    h.work = tempfile.mkdtemp(prefix="iocomp-scaling.")
    os.chmod(h.work, 0o755)
    h.www = os.path.join(h.work, "www")
    make_files(h.www)
    names = [n for n in a.servers.split(",") if n]
    avail = [n for n in names if n.startswith("iocomp-") or os.path.exists(getattr(h, n, "")) or shutil.which(n)]
    srvs = [servers.Server(n, "iocomp", h, backend=n.split("-", 1)[1]) if n.startswith("iocomp-")
            else servers.Server(n, n, h) for n in avail]
    print(f"scaling: {ncpu} CPUs; servers on CPUs {scpus}, `iocomp bench -t {nclient}` on CPUs {ccpus}; "
          f"workers {counts}" + (f" (skipped {','.join(skipped)}: more than the server half)" if skipped else "")
          + (f"; not installed: {', '.join(sorted(set(names) - set(avail)))}" if set(names) - set(avail) else ""),
          file=sys.stderr)
    runs = []
    try:
        for w in counts:
            h.workers = w
            for srv in srvs:
                srv.start(scpus)
            try:
                for scen in SCENARIOS:
                    for rnd in range(1, a.rounds + 1):
                        for srv in srvs:
                            r = measure(h, srv, scen, w, ccpus, nclient)
                            r.update(workers=w, scenario=scen, server=srv.name, round=rnd)
                            runs.append(r)
                            fig = f"{r['rps']:.0f} req/s" if SCENARIOS[scen][3] == "rps" else f"{r['gibps']:.2f} GiB/s"
                            print(f"{w} worker(s) {scen} round {rnd} {srv.name}: {fig}, errors {r['errors']}, "
                                  f"server CPU {r['server_cpu_s']:.2f} s", file=sys.stderr, flush=True)
            finally:
                for srv in srvs:
                    srv.stop()
    finally:
        for srv in srvs:
            srv.stop()
        shutil.rmtree(h.work, ignore_errors=True)

    rows = []
    for scen, (_, _, _, metric) in SCENARIOS.items():
        base = {}
        for w in counts:
            for srv in srvs:
                vals = [r[metric] for r in runs if r["scenario"] == scen and r["workers"] == w
                        and r["server"] == srv.name]
                if not vals:
                    continue
                med = statistics.median(vals)
                base.setdefault(srv.name, med / w)
                rows.append({"scenario": scen, "metric": metric, "workers": w, "server": srv.name, "value": med,
                             "per_worker": med / w, "efficiency": med / (w * base[srv.name]) if base[srv.name] else None,
                             "errors": max(r["errors"] for r in runs if r["scenario"] == scen and r["workers"] == w
                                           and r["server"] == srv.name)})
    for row in rows:
        peer = next((x for x in rows if x["server"] == "nginx" and x["scenario"] == row["scenario"]
                     and x["workers"] == row["workers"]), None)
        row["vs_nginx"] = row["value"] / peer["value"] if peer and peer["value"] else None
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "cpus": ncpu, "server_cpus": scpus, "client_cpus": ccpus, "rounds": a.rounds,
              "duration_s": a.duration, "workers": counts, "skipped_workers": skipped,
              "versions": servers.versions(h), "runs": runs, "rows": rows}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)

    def f(x, d=2):
        return "–" if x is None else f"{x:.{d}f}"

    v = result["versions"]
    print(f"\n{result['date']}, {ncpu} CPUs ({v['cpu']}), Linux {v['kernel']}; {v['iocomp']}, {v['nginx']}, "
          f"{v['lighttpd']}; servers on CPUs {scpus}, load generator on {ccpus}; medians of {a.rounds} "
          f"interleaved rounds, {a.duration} s each\n")
    print("| scenario | workers | server | value | per worker | vs linear | vs nginx |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        unit, d = ("req/s", 0) if r["metric"] == "rps" else ("GiB/s", 2)
        print(f"| {r['scenario']} | {r['workers']} | {r['server']} | {r['value']:.{d}f} {unit} | "
              f"{r['per_worker']:.{d}f} | {f(r['efficiency'])} | {f(r['vs_nginx'])} |")
    for r in (x for x in runs if x.get("errors")):
        print(f"errors: {r['workers']} worker(s) {r['scenario']} round {r['round']} {r['server']}: {r['errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
