#!/usr/bin/python3
"""Draws the README's plot from a bench/harness.py JSON file: for each
layout, each iocomp backend's ratio to the best peer per scenario (above 1.0
is better than the best peer; for memory the ratio is inverted so that
higher is better there too). Needs matplotlib (Debian: python3-matplotlib)."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    res = json.load(open(src))
    rows = res["ratios"]
    layouts = [l for l in res["settings"]["layouts"] if any(r["layout"] == l for r in rows)]
    fig, axes = plt.subplots(len(layouts), 1, figsize=(11, 3.6 * len(layouts)), squeeze=False)
    for ax, lay in zip(axes[:, 0], layouts):
        rs = [r for r in rows if r["layout"] == lay]
        scens = list(dict.fromkeys(r["scenario"] for r in rs))
        backends = list(dict.fromkeys(r["server"] for r in rs))
        width = 0.8 / max(1, len(backends))
        for i, b in enumerate(backends):
            xs, ys = [], []
            for j, s in enumerate(scens):
                r = next((r for r in rs if r["scenario"] == s and r["server"] == b), None)
                if r and r["ratio"]:
                    xs.append(j + i * width - 0.4 + width / 2)
                    ys.append(1 / r["ratio"] if r["metric"] == "full_bytes_per_conn" else r["ratio"])
            bars = ax.bar(xs, ys, width, label=b)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(scens)))
        ax.set_xticklabels(scens, rotation=15, fontsize=8)
        ax.set_ylabel("× best peer (higher is better)")
        ax.set_title(f"{lay}: iocomp vs the best of nginx and lighttpd per scenario", fontsize=10)
        ax.legend(fontsize=8)
    v = res["versions"]
    fig.suptitle(f"{res['date'][:10]} · {v['cpus']} CPUs · Linux {v['kernel']} · {v['nginx']} · {v['lighttpd']}",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
