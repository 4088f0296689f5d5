#!/usr/bin/env python3
"""Draw bench/results/services.json as an SVG strip plot (no dependencies): one row per
comparison (a set-up and its Service count against a reference), one panel per metric (new TCP
connections, the first packet's round trip, established request/response, new TCP connections
from outside to a node port); each dot is one
pair of adjacent slices' ratio (above 1: the set-up is faster), the bar the median. Dashed red
line: 0.90, the target for rampart with 10,000 Services against 10.

Usage: scripts/plot-services.py bench/results/services.json docs/service-rates.svg
"""
import json
import sys

results = json.load(open(sys.argv[1]))
metrics = [("tcp_connections", "new TCP connections"), ("first_packet", "first packet (connect) speed"),
           ("request_response", "established request/response"), ("outside_tcp_connections", "from outside, node port")]
rows = []
for r in results:
    key = (r["mode"], r["services"], r["reference"], r["reference_services"])
    if key not in [k for k, _ in rows]:
        rows.append((key, {}))
    dict(rows)[key][r["metric"]] = r
W = 1400
left, top, row_h = 400, 60, 26
H = top + row_h * len(rows) + 60
lo, hi = 0.0, 2.0
panel_w = (W - left - 20 - (len(metrics) - 1) * 25) / len(metrics)


def x(v, panel):
    v = min(max(v, lo), hi)
    return left + panel * (panel_w + 25) + (v - lo) / (hi - lo) * panel_w


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       '<rect width="100%" height="100%" fill="white"/>',
       '<text x="10" y="20" font-size="14" font-weight="bold">Services: set-up against reference in alternating 300 ms slices (dot: one slice pair, bar: median; above 1: faster)</text>']
for panel, (_, title) in enumerate(metrics):
    cx = left + panel * (panel_w + 25)
    out.append(f'<text x="{cx}" y="45" font-weight="bold">{title}</text>')
    for tick in (0.0, 0.5, 0.9, 1.0, 1.5, 2.0):
        tx = x(tick, panel)
        dash = ' stroke-dasharray="4,3"' if tick == 0.9 else ''
        colour = "#c00" if tick == 0.9 else ("#444" if tick == 1.0 else "#ddd")
        out.append(f'<line x1="{tx:.1f}" y1="{top - 8}" x2="{tx:.1f}" y2="{H - 45}" stroke="{colour}"{dash}/>')
        # 0.9 and 1 sit close: 0.9's label goes below the others.
        ty = H - 18 if tick == 0.9 else H - 30
        out.append(f'<text x="{tx:.1f}" y="{ty}" text-anchor="middle">{tick:g}</text>')
for i, ((mode, n, ref, rn), by) in enumerate(rows):
    y = top + i * row_h + row_h / 2
    out.append(f'<text x="10" y="{y + 4:.1f}">{mode}, {n:,} Services vs {ref}, {rn:,}</text>')
    for panel, (metric, _) in enumerate(metrics):
        r = by.get(metric)
        if not r:
            continue
        for v in r["ratios"]:
            out.append(f'<circle cx="{x(v, panel):.1f}" cy="{y:.1f}" r="2.5" fill="#3a7" fill-opacity="0.5"/>')
        mx = x(r["ratio"], panel)
        out.append(f'<line x1="{mx:.1f}" y1="{y - 8:.1f}" x2="{mx:.1f}" y2="{y + 8:.1f}" stroke="black" stroke-width="2"/>')
        out.append(f'<text x="{mx + 4:.1f}" y="{y - 5:.1f}" font-size="9">{r["ratio"]:.2f}</text>')
out.append('</svg>')
open(sys.argv[2], "w").write("\n".join(out) + "\n")
