#!/usr/bin/env python3
"""iocomp file I/O against fio and dd, side by side on one file, interleaved rounds.

Run through bench/file/run (which installs fio and builds the examples). Every case runs
every side once per round, rotating which goes first; the table shows medians and the
last lines are the ratios (see bench/README.md):

  ratio randread-warm R     iocomp uring IOPS / fio io_uring IOPS, 4 KiB, QD 32, cached   (>= 0.9)
  ratio randread-cold R     the same with the file's pages dropped before each run        (>= 0.9)
  ratio epoll-vs-psync R    iocomp epoll IOPS / fio psync with POOL jobs, cold             (>= 0.8)
  ratio epoll-vs-psync-warm R   the same, cached                                           (>= 0.8)
  ratio epoll-cpus-vs-psync[-warm] R   the same with fileio --threads = CPUs (information)
  ratio seqread R           iocomp uring MiB/s / fio io_uring MiB/s, 1 MiB, QD 8, cold    (>= 0.9)
  ratio seqwrite R          the same for writes into a new file, nothing synced           (>= 0.9)
  ratio filecopy-warm R     filecopy time / dd bs=1M time (lower is better)               (<= 1.1)
  ratio filecopy-cold R     the same with the source's pages dropped first                (<= 1.1)
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

RATIOS = [
    # name, case, iocomp side, peer side, higher is better, target (None: information)
    ("randread-warm", "randread-warm", "iocomp-uring", "fio-io_uring", True, 0.9),
    ("randread-cold", "randread-cold", "iocomp-uring", "fio-io_uring", True, 0.9),
    # The epoll target compares a port (and a thread) per CPU with fio's POOL psync processes, which use
    # every CPU; one iocomp thread uses one CPU: its figures are information (bench/README.md, "file/").
    ("epoll-cpus-vs-psync", "randread-cold", "iocomp-epoll-cpus", "fio-psync", True, 0.8),
    ("epoll-cpus-vs-psync-warm", "randread-warm", "iocomp-epoll-cpus", "fio-psync", True, 0.8),
    ("epoll-vs-psync", "randread-cold", "iocomp-epoll", "fio-psync", True, None),
    ("epoll-vs-psync-warm", "randread-warm", "iocomp-epoll", "fio-psync", True, None),
    ("seqread", "seqread-cold", "iocomp-uring", "fio-io_uring", True, 0.9),
    ("seqwrite", "seqwrite", "iocomp-uring", "fio-io_uring", True, 0.9),
    ("filecopy-warm", "filecopy-warm", "iocomp-filecopy", "dd", False, 1.1),
    ("filecopy-cold", "filecopy-cold", "iocomp-filecopy", "dd", False, 1.1),
    # With --fileio-base: this build against another one, in the same rounds (an A/B of a change).
    ("randread-warm-vs-base", "randread-warm", "iocomp-uring", "iocomp-uring-base", True, None),
    ("randread-cold-vs-base", "randread-cold", "iocomp-uring", "iocomp-uring-base", True, None),
]


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def cpu_of(fn):
    """Runs fn (which waits for its child processes) and adds the CPU seconds, user + system, that those
    processes and their threads used (io_uring's io-wq workers included) to its result as "cpu"."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res


def drop(paths, how):
    """Evicts the files' pages from the page cache (cold runs)."""
    os.sync()
    if how == "global":
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(path):
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass


def cached_pct(path):
    """How much of the file is in the page cache (fincore), in percent."""
    try:
        out = sh(["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", path]).stdout.split()
        return 100.0 * int(out[0]) / max(1, int(out[1]))
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return float("nan")


def fio(args, path, size, rw, bs, qd, runtime, engine, jobs=1):
    cmd = [
        "fio", "--name=bench", f"--filename={path}", f"--size={size}", f"--rw={rw}", f"--bs={bs}",
        f"--ioengine={engine}", "--invalidate=0", "--norandommap", "--randrepeat=0",
        "--fallocate=none", "--output-format=json",
        # Page-aligned buffers, as fileio's and filecopy's (and dd's): fio's
        # malloc'd buffers otherwise start 16 bytes past a page, where the
        # kernel's copy to and from them runs at about half speed.
        "--iomem_align=4k",
    ]
    if engine == "psync":
        cmd += [f"--numjobs={jobs}", "--group_reporting"]
    else:
        cmd += [f"--iodepth={qd}"]
    if runtime:
        cmd += ["--time_based", f"--runtime={runtime}"]
    out = sh(cmd, timeout=300).stdout
    j = json.loads(out[out.index("{"):])["jobs"][0]["write" if rw == "write" else "read"]
    return {"iops": j["iops"], "mibs": j["bw_bytes"] / 2**20, "wall": j["runtime"] / 1000}


def fileio(args, backend, path, size, rw, bs, qd, runtime, threads=1, exe=None):
    cmd = [exe or args.fileio, "--file", path, "--rw", rw, "--bs", str(bs), "--qd", str(qd), "--size", str(size),
           "--threads", str(threads)]
    if runtime:
        cmd += ["--runtime", str(runtime)]
    env = dict(os.environ, IOCOMP_BACKEND=backend)
    out = sh(cmd, env=env, timeout=300).stdout
    m = dict(re.findall(r"(\w+)=([\w.]+)", out.strip().splitlines()[-1]))
    if m.get("backend") != backend:
        sys.exit(f"fileio ran on backend {m.get('backend')}, not {backend}: {out}")
    return {"iops": float(m["iops"]), "mibs": float(m["mibs"]), "wall": float(m["secs"])}


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def dd(args, src, dst, size):
    secs = timed(lambda: sh(["dd", f"if={src}", f"of={dst}", "bs=1M"], timeout=600))
    return {"secs": secs, "mibs": size / 2**20 / secs}


def filecopy(args, src, dst, size, depth, chunk_kib):
    # Wall time of the whole process, as dd's; the comparison with the source is left out (dd has none).
    cmd = [args.filecopy, "--no-verify", src, dst, str(depth), str(chunk_kib)]
    env = dict(os.environ, IOCOMP_BACKEND="uring")
    secs = timed(lambda: sh(cmd, env=env, timeout=600))
    if os.path.getsize(dst) != size:
        sys.exit(f"filecopy made {os.path.getsize(dst)} bytes, not {size}")
    return {"secs": secs, "mibs": size / 2**20 / secs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fileio", required=True)
    ap.add_argument("--filecopy", required=True)
    ap.add_argument("--dir", required=True, help="where the test files go (deleted at the end by run)")
    ap.add_argument("--pool", type=int, required=True, help="threads of the epoll blocking pool")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runtime", type=float, default=3.0, help="seconds per random-read run")
    ap.add_argument("--size", type=int, default=2 << 30, help="bytes of the test file")
    ap.add_argument("--qd", type=int, default=32, help="queue depth of random reads")
    ap.add_argument("--seq-qd", type=int, default=8, help="queue depth of sequential 1 MiB runs")
    ap.add_argument("--copy-depth", type=int, default=8, help="filecopy's operations in flight")
    ap.add_argument("--copy-kib", type=int, default=1024, help="filecopy's chunk in KiB")
    ap.add_argument("--drop", choices=["file", "global"], default="file",
                    help="cold runs: posix_fadvise(DONTNEED) on the files, or echo 3 > drop_caches")
    ap.add_argument("--fileio-base", help="another build's fileio: adds side iocomp-uring-base to the "
                    "random-read cases, and the ratios *-vs-base (information)")
    ap.add_argument("--cases", help="comma-separated cases to run (default: all)")
    ap.add_argument("--out", required=True, help="markdown results (a .json goes beside it)")
    args = ap.parse_args()

    src = os.path.join(args.dir, "src")
    wfile = os.path.join(args.dir, "wfile")
    dst = os.path.join(args.dir, "dst")
    size = args.size
    rt = args.runtime
    rt_fio = max(1, round(rt))  # fio's --runtime is whole seconds
    if not os.path.exists(src) or os.path.getsize(src) != size:
        print(f"bench/file: writing {size >> 20} MiB of random data to {src}", file=sys.stderr)
        with open("/dev/urandom", "rb") as r, open(src, "wb") as w:
            left = size
            while left:
                n = min(left, 1 << 20)
                w.write(r.read(n))
                left -= n
        os.sync()

    def prep_warm():
        warm(src)

    def prep_cold():
        drop([src], args.drop)

    def fresh_write():
        for p in (wfile, dst):
            if os.path.exists(p):
                os.unlink(p)
        os.sync()

    def prep_copy_warm():
        fresh_write()
        warm(src)

    def prep_copy_cold():
        fresh_write()
        drop([src], args.drop)

    q, sq, pool = args.qd, args.seq_qd, args.pool
    cpus = os.cpu_count() or 1
    cases = [
        ("randread-warm", "4 KiB random reads, QD %d, cached" % q, "iops", prep_warm, [
            ("fio-io_uring", lambda: fio(args, src, size, "randread", 4096, q, rt_fio, "io_uring")),
            ("iocomp-uring", lambda: fileio(args, "uring", src, size, "randread", 4096, q, rt)),
            ("fio-psync", lambda: fio(args, src, size, "randread", 4096, q, rt_fio, "psync", pool)),
            ("iocomp-epoll", lambda: fileio(args, "epoll", src, size, "randread", 4096, q, rt)),
            ("iocomp-epoll-cpus", lambda: fileio(args, "epoll", src, size, "randread", 4096, q, rt, cpus)),
        ]),
        ("randread-cold", "4 KiB random reads, QD %d, pages dropped first" % q, "iops", prep_cold, [
            ("fio-io_uring", lambda: fio(args, src, size, "randread", 4096, q, rt_fio, "io_uring")),
            ("iocomp-uring", lambda: fileio(args, "uring", src, size, "randread", 4096, q, rt)),
            ("fio-psync", lambda: fio(args, src, size, "randread", 4096, q, rt_fio, "psync", pool)),
            ("iocomp-epoll", lambda: fileio(args, "epoll", src, size, "randread", 4096, q, rt)),
            ("iocomp-epoll-cpus", lambda: fileio(args, "epoll", src, size, "randread", 4096, q, rt, cpus)),
        ]),
        ("seqread-cold", "1 MiB sequential reads, QD %d, one pass, pages dropped first" % sq, "mibs", prep_cold, [
            ("fio-io_uring", lambda: fio(args, src, size, "read", 1 << 20, sq, 0, "io_uring")),
            ("iocomp-uring", lambda: fileio(args, "uring", src, size, "read", 1 << 20, sq, 0)),
            ("iocomp-epoll", lambda: fileio(args, "epoll", src, size, "read", 1 << 20, sq, 0)),
        ]),
        ("seqwrite", "1 MiB sequential writes, QD %d, one pass into a new file, no sync" % sq, "mibs", fresh_write, [
            ("fio-io_uring", lambda: fio(args, wfile, size, "write", 1 << 20, sq, 0, "io_uring")),
            ("iocomp-uring", lambda: fileio(args, "uring", wfile, size, "write", 1 << 20, sq, 0)),
            ("iocomp-epoll", lambda: fileio(args, "epoll", wfile, size, "write", 1 << 20, sq, 0)),
        ]),
        ("filecopy-warm", "copy of the file, source cached, no sync", "secs", prep_copy_warm, [
            ("dd", lambda: dd(args, src, dst, size)),
            ("iocomp-filecopy", lambda: filecopy(args, src, dst, size, args.copy_depth, args.copy_kib)),
        ]),
        ("filecopy-cold", "copy of the file, source pages dropped first, no sync", "secs", prep_copy_cold, [
            ("dd", lambda: dd(args, src, dst, size)),
            ("iocomp-filecopy", lambda: filecopy(args, src, dst, size, args.copy_depth, args.copy_kib)),
        ]),
    ]

    if args.fileio_base:
        for c in cases:
            if c[0].startswith("randread"):
                c[4].insert(2, ("iocomp-uring-base", lambda: fileio(args, "uring", src, size, "randread", 4096, q,
                                                                    rt, exe=args.fileio_base)))
    if args.cases:
        want = args.cases.split(",")
        unknown = set(want) - {c[0] for c in cases}
        if unknown:
            sys.exit(f"bench/file: unknown cases {sorted(unknown)}")
        cases = [c for c in cases if c[0] in want]

    load0 = os.getloadavg()
    t0 = time.time()
    runs = {}  # (case, side) -> [result]
    for rnd in range(args.rounds):
        for case, _, metric, prep, sides in cases:
            # Rotate the order each round: drift, and whatever makes the first run of a case slower (the
            # writeback and reclaim left by the case before), hit every side alike.
            k = rnd % len(sides)
            order = sides[k:] + sides[:k]
            for side, fn in order:
                prep()
                res = cpu_of(fn)
                res["round"] = rnd + 1
                runs.setdefault((case, side), []).append(res)
                print(f"round {rnd + 1} {case:14} {side:16} {metric} {res[metric]:.3f}", file=sys.stderr)
        fresh_write()
    load1 = os.getloadavg()

    med = {k: statistics.median(r[m] for r in v)
           for k, v in runs.items()
           for m in [next(c[2] for c in cases if c[0] == k[0])]}
    lines = [
        f"# File I/O: iocomp against fio and dd ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))})",
        "",
        f"`bench/file/run`: {args.rounds} interleaved round(s), medians; file of {size >> 20} MiB in {args.dir}; "
        f"random-read runs of {rt} s; cold = pages dropped with "
        f"{'posix_fadvise(DONTNEED)' if args.drop == 'file' else 'echo 3 > /proc/sys/vm/drop_caches'} before each run; "
        f"epoll blocking pool: {pool} threads (fio psync: {pool} jobs). "
        f"{os.cpu_count()} CPUs, load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end; "
        f"{sh(['fio', '--version']).stdout.strip()}; kernel {os.uname().release}.",
        "",
        "CPU s: user + system seconds of the measured process and its threads (fio: its job processes; io_uring's "
        "io-wq workers included), median; on a loaded machine it is steadier than the wall-clock figures.",
        "",
        "| case | what | side | median | unit | CPU s | runs |",
        "|---|---|---|---:|---|---:|---|",
    ]
    unit = {"iops": "IOPS", "mibs": "MiB/s", "secs": "s"}
    for case, what, metric, _, sides in cases:
        for side, _ in sides:
            vals = [r[metric] for r in runs[(case, side)]]
            cpu = statistics.median(r["cpu"] for r in runs[(case, side)])
            lines.append(f"| {case} | {what} | {side} | {med[(case, side)]:.{3 if metric == 'secs' else 0}f} | "
                         f"{unit[metric]} | {cpu:.2f} | {', '.join(f'{v:.3g}' for v in vals)} |")
    lines += ["", "Ratio: of the medians. Paired: the median over rounds of the ratio within a round (the two runs "
              "next to each other in time, so load that drifts over minutes cancels out).", "",
              "| ratio | iocomp | against | value | paired | target |", "|---|---|---|---:|---:|---|"]
    ratios = []
    for name, case, mine, peer, higher, target in RATIOS:
        if (case, mine) not in med or (case, peer) not in med:
            continue
        r = med[(case, mine)] / med[(case, peer)]
        metric = next(c[2] for c in cases if c[0] == case)
        paired = statistics.median(a[metric] / b[metric] for a, b in zip(runs[(case, mine)], runs[(case, peer)]))
        ok = target is None or (r >= target if higher else r <= target)
        ratios.append((name, r))
        if target is None:
            verdict = "information"
        else:
            verdict = f"{'≥' if higher else '≤'} {target} {'met' if ok else '**missed**'}"
        lines.append(f"| {name} | {mine} | {peer} | {r:.2f} | {paired:.2f} | {verdict} |")
    # Work per CPU-second: fio's psync jobs may use every CPU, the one iocomp thread one.
    def per_cpu(case, side):
        metric = next(c[2] for c in cases if c[0] == case)
        return statistics.median(r[metric] * r["wall"] / max(r["cpu"], 1e-9) for r in runs[(case, side)])
    for case in ("randread-warm", "randread-cold"):
        if (case, "iocomp-epoll") not in runs or (case, "fio-psync") not in runs:
            continue
        r = per_cpu(case, "iocomp-epoll") / per_cpu(case, "fio-psync")
        name = "epoll-vs-psync-per-cpu" + ("-warm" if case.endswith("warm") else "")
        ratios.append((name, r))
        lines.append(f"| {name} | iocomp-epoll | fio-psync | {r:.2f} | | IOPS per CPU-second (information) |")
    md = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(md)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"runs": {f"{c}/{s}": v for (c, s), v in runs.items()},
                   "medians": {f"{c}/{s}": v for (c, s), v in med.items()},
                   "ratios": dict(ratios), "load": [load0, load1], "size": size, "rounds": args.rounds,
                   "drop": args.drop, "pool": pool}, f, indent=1)
    print(md)
    for name, r in ratios:
        print(f"ratio {name} {r:.2f}")


if __name__ == "__main__":
    main()
