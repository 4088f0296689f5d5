#!/usr/bin/env python3
"""Draw bench/results/detection.json as an SVG (no dependencies): per detector and dataplane,
each trial's latency from the attack's start to the alert (dots) and the median (bar).

Usage: scripts/plot-detection.py bench/results/detection.json docs/detection-latency.svg
"""
import json
import sys

rows = json.load(open(sys.argv[1]))
W, left, top, row_h = 900, 330, 50, 26
H = top + row_h * len(rows) + 50
hi = max(max(r["seconds"]) for r in rows) * 1.15
colors = {"iptables": "#d62728", "ebpf": "#1f77b4"}


def x(v):
    return left + v / hi * (W - left - 30)


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="white"/>',
       '<text x="10" y="20" font-size="14" font-weight="bold">Detection latency: attack start to alert, two-node lab (dot: trial, bar: median)</text>']
t = 0.0
while t <= hi:
    out.append(f'<line x1="{x(t):.1f}" y1="{top - 5}" x2="{x(t):.1f}" y2="{H - 35}" stroke="#ddd"/>')
    out.append(f'<text x="{x(t):.1f}" y="{H - 20}" text-anchor="middle" fill="#555">{t:.1f} s</text>')
    t += 0.5
for i, r in enumerate(rows):
    y = top + i * row_h
    c = colors.get(r["dataplane"], "#333")
    out.append(f'<text x="10" y="{y + 15}">{r["detector"]} ({r["dataplane"]})</text>')
    out.append(f'<rect x="{left}" y="{y + 4}" width="{x(r["median_seconds"]) - left:.1f}" height="{row_h - 10}" fill="{c}" opacity="0.35"/>')
    for s in r["seconds"]:
        out.append(f'<circle cx="{x(s):.1f}" cy="{y + row_h / 2 - 1}" r="3" fill="{c}"/>')
out.append('</svg>')
open(sys.argv[2], "w").write("\n".join(out) + "\n")
