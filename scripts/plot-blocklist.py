#!/usr/bin/env python3
"""Draw bench/results/blocklist.json as an SVG (no dependencies): per set-up, the receiving
side's CPU time per dropped packet at the same offered load (left), and the drop rate the
set-up sustains with the generator on the same core (right).

Usage: scripts/plot-blocklist.py bench/results/blocklist.json docs/blocklist.svg
"""
import json
import sys

rep = json.load(open(sys.argv[1]))
rows = [r for r in rep["results"] if r["setup"] != "sink"]
names = {"stack": "no blocklist (kernel drops at routing)", "iptables": "iptables raw table + ipset",
         "xdp": "eBPF: XDP + LPM map"}
colors = {"stack": "#999", "iptables": "#d62728", "xdp": "#1f77b4"}
W, left, top, row_h = 980, 270, 70, 34
panel_w = (W - left - 40) / 2
H = top + row_h * len(rows) + 65
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="white"/>',
       f'<text x="10" y="20" font-size="14" font-weight="bold">{rep["entries"]:,}-CIDR blocklist: XDP against the iptables raw table '
       f'(receive CPU ratio {rep["iptables_over_xdp_receive_cpu"]:.1f}x)</text>']
panels = [("receive_cpu_ns_per_packet", "receiving CPU per dropped packet (ns)"),
          ("max_rate_pps", "drop rate at full speed (packets/s)")]
for p, (key, title) in enumerate(panels):
    x0 = left + p * (panel_w + 20)
    out.append(f'<text x="{x0}" y="50" font-weight="bold">{title}</text>')
    hi = max(r[key] for r in rows) * 1.15
    for i, r in enumerate(rows):
        y = top + i * row_h
        w = r[key] / hi * (panel_w - 60)
        out.append(f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="{row_h - 10}" fill="{colors[r["setup"]]}"/>')
        label = f'{r[key]:,.0f}'
        out.append(f'<text x="{x0 + w + 5:.1f}" y="{y + row_h / 2}" fill="#333">{label}</text>')
for i, r in enumerate(rows):
    out.append(f'<text x="10" y="{top + i * row_h + row_h / 2}">{names[r["setup"]]}</text>')
out.append(f'<text x="10" y="{H - 30}" fill="#555">median of {rep["rounds"]} round-robin rounds; CPU at {rep["offered_load_pps"]:,.0f} pps '
           'for every set-up: all cores\' busy time per packet less the sink\'s (sending alone)</text>')
out.append(f'<text x="10" y="{H - 12}" fill="#555">full speed: the in-kernel generator shares the core with the receiving side</text>')
out.append('</svg>')
open(sys.argv[2], "w").write("\n".join(out) + "\n")
