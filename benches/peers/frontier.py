#!/usr/bin/env python3
"""The latency/CPU frontier (issue 14 item 2), from a run of
`benches/peers/run.sh --scenarios F --peers sse-edge,axum [--out DIR]`:

    python3 benches/peers/frontier.py DIR/full [--svg OUT.svg] [--results RESULTS.md] [--intro TEXT]

M2 (10,000 subscribers × 50 events/s × 100 B) on a fresh sse-edge at each --write-delay-ms
(files F-d<ms>.json) and once on every other peer (F-base.json). Per point: readers' p50 and
p99, server CPU-s per million deliveries, deliveries and the ratios against axum of the same
run. The plot draws p99 against CPU per delivery, sse-edge's points joined in delay order.
With --results, the section from report.py's FRONTIER_MARK to the next mark in RESULTS.md is
replaced (or appended).
"""

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import FRONTIER_MARK, svg_doc, write_section  # noqa: E402

COLORS = {"sse-edge": "#2b6cb0", "axum": "#c05621", "node": "#2f855a", "nchan": "#6b46c1", "pushpin": "#b7791f"}


def points(run_dir):
    """[(peer, delay ms or None, report)] for every frontier run found."""
    out = []
    for peer in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []:
        d = os.path.join(run_dir, peer)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if not (name.startswith("F-") and name.endswith(".json")):
                continue
            tag = name[2:-5]
            delay = int(tag[1:]) if tag.startswith("d") else None
            with open(os.path.join(d, name)) as f:
                out.append((peer, delay, json.load(f)))
    return sorted(out, key=lambda p: (p[0] != "sse-edge", p[0], p[1] if p[1] is not None else -1))


def scenario(rep):
    """What the runs measured, from the first report's configuration."""
    c = rep["config"]
    return (
        f"M2: {c['sub'].get('streams', 0):,} streams × {c['publish']['rate']:g} events/s × "
        f"{c['publish']['payload_bytes']} B"
    )


def p99(rep):
    return rep["subscribers"]["latency_ms"]["p99"]


def cpu(rep):
    return rep["server"].get("cpu_s_per_million_deliveries") or float("nan")


def delivered(rep):
    raw = rep["subscribers"]["raw"]
    return raw.get("deliveries", 0), raw.get("expected_deliveries", 0)


def table(pts):
    base = next((rep for peer, _, rep in pts if peer == "axum"), None)
    lines = [
        "| server | write delay | readers' p50 / p99 ms | CPU-s per 10⁶ deliveries | deliveries | "
        "p99 / axum | CPU / axum |",
        "|---|---|---|---|---|---|---|",
    ]
    for peer, delay, rep in pts:
        lat = rep["subscribers"]["latency_ms"]
        got, want = delivered(rep)
        ratio = "–"
        if base is not None and peer != "axum":
            ratio = f"{p99(rep) / p99(base):.2f}× | {cpu(rep) / cpu(base):.2f}×"
        else:
            ratio = "– | –"
        lines.append(
            f"| {peer} | {'–' if delay is None else f'{delay} ms'} | {lat['p50']:,.0f} / {lat['p99']:,.0f} "
            f"| {cpu(rep):.2f} | {got:,} of {want:,} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def plot(pts):
    w, h, pad = 640, 400, 64
    if not pts:
        return svg_doc(w, h, [], "no frontier data")
    xs = [cpu(r) for _, _, r in pts if not math.isnan(cpu(r))]
    ys = [max(p99(r), 1.0) for _, _, r in pts]
    x0, x1 = 0.0, max(xs) * 1.15
    y0, y1 = math.log10(min(ys)) - 0.1, math.log10(max(ys)) + 0.1

    def x(v):
        return pad + (v - x0) / (x1 - x0) * (w - 2 * pad)

    def y(v):
        return h - pad - (math.log10(max(v, 1.0)) - y0) / (y1 - y0) * (h - 2 * pad)

    body = [
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#999"/>',
        f'<text x="{w / 2}" y="{h - 20}" font-size="12" text-anchor="middle">'
        "server CPU-s per 10⁶ deliveries (lower is better)</text>",
        f'<text x="18" y="{h / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 18 {h / 2})">readers\' p99 ms (log)</text>',
        f'<text x="{pad}" y="{pad - 24}" font-size="13">{scenario(pts[0][2])}</text>',
    ]
    step = 0.25 if x1 <= 2.5 else 0.5
    v = 0.0
    while v <= x1:
        body.append(f'<text x="{x(v):.1f}" y="{h - pad + 16}" font-size="10" text-anchor="middle">{v:g}</text>')
        v += step
    for k in range(int(math.floor(y0)), int(math.ceil(y1)) + 1):
        for m in (1, 1.5, 2, 3, 5, 7):
            val = m * 10**k
            if y0 <= math.log10(val) <= y1:
                body.append(
                    f'<text x="{pad - 6}" y="{y(val) + 3:.1f}" font-size="10" text-anchor="end">{val:g}</text>'
                )
    edge = [(d, r) for p, d, r in pts if p == "sse-edge"]
    if edge:
        line = " ".join(f"{x(cpu(r)):.1f},{y(p99(r)):.1f}" for _, r in edge)
        body.append(f'<polyline points="{line}" fill="none" stroke="{COLORS["sse-edge"]}" stroke-width="2"/>')
    for peer, delay, rep in pts:
        color = COLORS.get(peer, "#444")
        cx, cy = x(cpu(rep)), y(p99(rep))
        label = f"{delay} ms" if delay is not None else peer
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{color}"/>')
        body.append(f'<text x="{cx + 7:.1f}" y="{cy - 6:.1f}" font-size="11" fill="{color}">{label}</text>')
    body.append(
        f'<text x="{w - pad}" y="{pad - 24}" font-size="11" text-anchor="end" fill="{COLORS["sse-edge"]}">'
        "sse-edge by --write-delay-ms</text>"
    )
    return svg_doc(w, h, body, "Latency/CPU frontier: p99 against CPU per delivery")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--svg")
    ap.add_argument("--results", help="RESULTS.md whose frontier section to write")
    ap.add_argument("--intro", default="", help="text before the table (date, command, findings)")
    a = ap.parse_args()
    pts = points(a.run_dir)
    md = table(pts)
    sys.stdout.write(md)
    if a.svg:
        with open(a.svg, "w") as f:
            f.write(plot(pts))
    if a.results:
        write_section(
            a.results, FRONTIER_MARK, "The latency/CPU frontier: `--write-delay-ms` on M2", a.intro, md,
            a.svg, "Frontier: readers' p99 against server CPU per delivery",
        )

if __name__ == "__main__":
    main()
