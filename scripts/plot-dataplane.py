#!/usr/bin/env python3
"""Draw bench/results/dataplane.json as an SVG strip plot (no dependencies): for each set-up,
every round's ratio to the baseline measured in the same round, and the median as a bar.

Usage: scripts/plot-dataplane.py bench/results/dataplane.json docs/dataplane-ratios.svg
"""
import json
import sys

results = json.load(open(sys.argv[1]))
metrics = [("throughput_ratio_per_round", "throughput_ratio_to_baseline", "bulk throughput"),
           ("rr_ratio_per_round", "rr_ratio_to_baseline", "request/response rate")]
W, H = 860, 150 + 70 * len(results)
left, right, top = 290, 30, 60
lo, hi = 0.6, 1.5
panel_w = (W - left - right - 30) / 2


def x(v, panel):
    v = min(max(v, lo), hi)
    return left + panel * (panel_w + 30) + (v - lo) / (hi - lo) * panel_w


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H - 80}" font-family="sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="white"/>',
       '<text x="10" y="20" font-size="14" font-weight="bold">Established TCP flow, ratio to no dataplane (each dot one round, bar the median)</text>']
for panel, (_, _, title) in enumerate(metrics):
    cx = left + panel * (panel_w + 30)
    out.append(f'<text x="{cx}" y="45" font-weight="bold">{title}</text>')
    for tick in (0.6, 0.8, 0.95, 1.0, 1.2, 1.4):
        tx = x(tick, panel)
        color = "#c00" if tick == 0.95 else "#bbb"
        out.append(f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{H - 130}" stroke="{color}" stroke-dasharray="3,3"/>')
        out.append(f'<text x="{tx:.1f}" y="{H - 115}" text-anchor="middle" fill="#555">{tick}</text>')
row_h = (H - 130 - top) / len(results)
for i, r in enumerate(results):
    y = top + row_h * (i + 0.5)
    label = r["mode"] + (f' ({r["path"]})' if r.get("path") else "")
    out.append(f'<text x="10" y="{y + 4:.1f}">{label}</text>')
    for panel, (rounds, med, _) in enumerate(metrics):
        for v in r[rounds]:
            out.append(f'<circle cx="{x(v, panel):.1f}" cy="{y:.1f}" r="4" fill="#36c" fill-opacity="0.5"/>')
        mx = x(r[med], panel)
        out.append(f'<line x1="{mx:.1f}" y1="{y - 12:.1f}" x2="{mx:.1f}" y2="{y + 12:.1f}" stroke="black" stroke-width="3"/>')
        out.append(f'<text x="{mx + 5:.1f}" y="{y - 8:.1f}" fill="#000">{r[med]:.3f}</text>')
out.append(f'<text x="10" y="{H - 90}" fill="#c00">red: the 5% target (0.95)</text>')
out.append('</svg>')
open(sys.argv[2], "w").write("\n".join(out) + "\n")
