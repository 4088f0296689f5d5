#!/usr/bin/env python3
"""Draw bench/results/agent.json as an SVG bar chart (no dependencies): per dataplane and scale,
the API server's own write latency beside the time from that write to the agent having the
change programmed (p50 bar, p99 whisker), on a log scale, with the 100 ms target line.

Usage: scripts/plot-agent.py bench/results/agent.json docs/agent-latency.svg
"""
import json
import math
import sys

results = json.load(open(sys.argv[1]))
W, row_h = 900, 46
left, right, top = 260, 40, 70
H = top + row_h * len(results) * 2 + 70
lo, hi = 1.0, 20000.0  # ms, log scale


def x(ms):
    ms = min(max(ms, lo), hi)
    return left + (math.log10(ms) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (W - left - right)


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="white"/>',
       '<text x="10" y="20" font-size="14" font-weight="bold">Policy change through the API server: write vs. enforced on the node (bar p50, whisker p99, log scale)</text>',
       '<rect x="10" y="32" width="12" height="12" fill="#9ab"/><text x="28" y="43">API server write</text>',
       '<rect x="150" y="32" width="12" height="12" fill="#2a6"/><text x="168" y="43">write to enforced in the kernel</text>']
for tick in (1, 10, 100, 1000, 10000):
    tx = x(tick)
    color = "#c00" if tick == 100 else "#bbb"
    out.append(f'<line x1="{tx:.1f}" y1="{top - 5}" x2="{tx:.1f}" y2="{H - 45}" stroke="{color}" stroke-dasharray="3,3"/>')
    out.append(f'<text x="{tx:.1f}" y="{H - 30}" text-anchor="middle" fill="#555">{tick} ms</text>')
out.append(f'<text x="{x(100) + 4:.1f}" y="{top - 8}" fill="#c00">target p99 100 ms</text>')
y = top
for r in results:
    label = f'{r["dataplane"]}: {r["pods"]:,} pods, {r["policies"]:,} policies'
    out.append(f'<text x="10" y="{y + row_h - 4:.1f}">{label}</text>')
    for p50, p99, color in ((r["api_write_p50_ms"], r["api_write_p99_ms"], "#9ab"),
                            (r["enforced_p50_ms"], r["enforced_p99_ms"], "#2a6")):
        out.append(f'<rect x="{left}" y="{y + 4:.1f}" width="{x(p50) - left:.1f}" height="{row_h - 14}" fill="{color}"/>')
        mid = y + 4 + (row_h - 14) / 2
        out.append(f'<line x1="{x(p50):.1f}" y1="{mid:.1f}" x2="{x(p99):.1f}" y2="{mid:.1f}" stroke="#333"/>')
        out.append(f'<line x1="{x(p99):.1f}" y1="{mid - 6:.1f}" x2="{x(p99):.1f}" y2="{mid + 6:.1f}" stroke="#333"/>')
        out.append(f'<text x="{x(p99) + 6:.1f}" y="{mid + 4:.1f}" fill="#333">{p50:.0f} / {p99:.0f} ms</text>')
        y += row_h - 8
    y += 16
out.append('</svg>')
open(sys.argv[2], "w").write("\n".join(out) + "\n")
