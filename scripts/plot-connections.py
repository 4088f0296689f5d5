#!/usr/bin/env python3
"""Draw bench/results/connections.json as an SVG strip plot (no dependencies): one row per
comparison (a set-up against its reference, on one path), one panel per metric (new TCP
connections, new UDP exchanges, established request/response); each dot is one pair of
adjacent slices' ratio, the bar the median. Dashed red lines mark the targets: 0.90 (eBPF,
10,000 rules against 1), 0.85 (iptables), 0.95 and 0.90 (flow records on against off).

Usage: scripts/plot-connections.py bench/results/connections.json docs/connection-rates.svg
"""
import json
import sys

results = json.load(open(sys.argv[1]))
metrics = [("tcp_connections", "new TCP connections"), ("udp_exchanges", "new UDP exchanges"),
           ("request_response", "established request/response")]
rows = []
for r in results:
    key = (r["mode"], r["rules"], r["reference"], r["reference_rules"], r["path"])
    if key not in [k for k, _ in rows]:
        rows.append((key, {}))
    dict(rows)[key][r["metric"]] = r
W = 1100
left, top, row_h = 420, 60, 26
H = top + row_h * len(rows) + 60
lo, hi = 0.0, 1.5
panel_w = (W - left - 20 - 2 * 25) / 3


def x(v, panel):
    v = min(max(v, lo), hi)
    return left + panel * (panel_w + 25) + (v - lo) / (hi - lo) * panel_w


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       '<rect width="100%" height="100%" fill="white"/>',
       '<text x="10" y="20" font-size="14" font-weight="bold">Rates against a reference measured in alternating 300 ms slices (dot: one slice pair, bar: median; red: 0.85 and 0.90)</text>']
for panel, (_, title) in enumerate(metrics):
    cx = left + panel * (panel_w + 25)
    out.append(f'<text x="{cx}" y="45" font-weight="bold">{title}</text>')
    for tick in (0.0, 0.5, 0.85, 0.9, 1.0, 1.5):
        tx = x(tick, panel)
        color = "#c00" if tick in (0.85, 0.9) else "#bbb"
        out.append(f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{H - 40}" stroke="{color}" stroke-dasharray="3,3"/>')
        if tick not in (0.85, 0.9):  # the target lines are named in the title, not labelled
            out.append(f'<text x="{tx:.1f}" y="{H - 25}" text-anchor="middle" fill="#555">{tick}</text>')
for i, (key, by_metric) in enumerate(rows):
    mode, rules, ref, ref_rules, path = key
    y = top + row_h * (i + 0.5)
    a = f"{mode}, {rules} rules" if rules else mode
    b = f"{ref}, {ref_rules} rules" if ref_rules else ref
    out.append(f'<text x="10" y="{y + 4:.1f}">{a} / {b} ({path})</text>')
    for panel, (metric, _) in enumerate(metrics):
        r = by_metric.get(metric)
        if not r:
            continue
        for v in r["ratios"]:
            out.append(f'<circle cx="{x(v, panel):.1f}" cy="{y:.1f}" r="3" fill="#36c" fill-opacity="0.45"/>')
        mx = x(r["ratio"], panel)
        out.append(f'<line x1="{mx:.1f}" y1="{y - 9:.1f}" x2="{mx:.1f}" y2="{y + 9:.1f}" stroke="black" stroke-width="3"/>')
        out.append(f'<text x="{mx + 4:.1f}" y="{y - 4:.1f}">{r["ratio"]:.2f}</text>')
out.append('</svg>')
open(sys.argv[2], "w").write("\n".join(out) + "\n")
