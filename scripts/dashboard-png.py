#!/usr/bin/env python3
"""Draws the wsgate Grafana dashboard from real Prometheus query_range results.

Input: the JSON tools/obscheck writes with WSGATE_DASHBOARD_OUT (panels with their grid
position, unit and, per query, the series Prometheus returned). Output: a PNG laid out on the
dashboard's 24-column grid, in Grafana's dark colours. Run by scripts/dashboard-png.sh.
"""
import json
import math
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.gridspec import GridSpec  # noqa: E402

BG, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a", "#96d98d", "#ff9830"]


def legend(fmt, labels):
    name = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "")
    return name.strip() or "value"


def unit_label(unit):
    return {"s": "seconds", "Bps": "bytes/s", "bytes": "bytes", "reqps": "per second", "short": ""}.get(unit, unit)


def main(src, dst):
    data = json.load(open(src))
    panels = [p for p in data["panels"] if p.get("targets")]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    t0 = min(v[0] for p in panels for t in p["targets"] for s in t["series"] for v in s["values"])
    fig = plt.figure(figsize=(24, rows * 0.62), facecolor=BG)
    gs = GridSpec(rows, 24, figure=fig, hspace=1.6, wspace=1.2, left=0.03, right=0.99, top=0.975, bottom=0.01)
    fig.suptitle(f"{data['title']}: dashboard panels from real Prometheus query results "
                 f"({data['load_seconds']:.0f}s of load, 1s scrapes)", color=TEXT, fontsize=15)
    for p in panels:
        g = p["gridPos"]
        ax = fig.add_subplot(gs[g["y"]:g["y"] + g["h"] - 1, g["x"]:g["x"] + g["w"]])
        ax.set_facecolor(PANEL)
        for side in ax.spines.values():
            side.set_color(GRID)
        ax.tick_params(colors=TEXT, labelsize=8)
        ax.grid(color=GRID, linewidth=0.6)
        ax.set_title(p["title"], color=TEXT, fontsize=11, loc="left")
        ax.set_ylabel(unit_label(p["unit"]), color=TEXT, fontsize=8)
        i = 0
        for t in p["targets"]:
            for s in t["series"]:
                pts = [(v[0] - t0, v[1]) for v in s["values"] if not math.isnan(v[1])]
                if not pts:
                    continue
                xs, ys = zip(*pts)
                ax.plot(xs, ys, color=PALETTE[i % len(PALETTE)], linewidth=1.4, label=legend(t["legend"], s["metric"]))
                i += 1
        if i:
            ax.legend(fontsize=7, facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, loc="upper left", ncol=2 if i > 4 else 1)
        ax.set_xlabel("seconds into the load", color=TEXT, fontsize=7)
    fig.savefig(dst, dpi=60, facecolor=BG)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
