#!/usr/bin/env python3
"""The overload benchmark's table and plot (issue 15 item 3), from a run of
`benches/peers/run.sh --scenarios M5 --peers sse-edge,axum --out DIR`:

    python3 benches/peers/overload.py DIR/full [--md OUT.md] [--svg OUT.svg] [--results RESULTS.md]

With --results, the section from report.py's OVERLOAD_MARK to the next section mark in
RESULTS.md is replaced (or appended) with the table, the plot's link and `--intro` text;
report.py keeps that section.

Per rate step and peer: events/s offered and accepted, publish answers by status, readers'
p50/p99 (publish stamp to receipt, so a publish parked by the server counts), readers' p99
from acceptance (the publish's 2xx answer to receipt, sse-load's `accept_latency_ms`), the server's
own delivery-lag p99 (accept to kernel, a histogram bucket bound), the highest sse_loop_saturation sampled during the step
(sse-edge only), and server CPU per million deliveries. The plot draws readers' p99 and the
accepted rate against the offered rate, one line per peer.
"""

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import OVERLOAD_MARK, svg_doc, write_section  # noqa: E402  (the peer report's SVG frame)

PEERS = ["sse-edge", "axum"]
COLORS = {"sse-edge": "#2b6cb0", "axum": "#c05621"}


def steps(run_dir, peer):
    """(rate, report, max saturation or None) for every M5 step of `peer`, by rate."""
    d = os.path.join(run_dir, peer)
    if not os.path.isdir(d):
        return []
    out = []
    for name in os.listdir(d):
        if not (name.startswith("M5-") and name.endswith(".json")):
            continue
        rate = int(name[3:-5])
        with open(os.path.join(d, name)) as f:
            rep = json.load(f)
        sat = None
        path = os.path.join(d, f"M5-{rate}.saturation")
        if peer == "sse-edge" and os.path.exists(path):
            vals = [float(x) for x in open(path).read().split() if x.strip()]
            sat = max(vals) if vals else 0.0
        out.append((rate, rep, sat))
    return sorted(out, key=lambda s: s[0])


def lag_buckets(path):
    """{le: cumulative count} of sse_delivery_lag_seconds in a /metrics dump ({} if none)."""
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path):
        if line.startswith("sse_delivery_lag_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[math.inf if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def server_lag_p99(run_dir, peer):
    """{rate: the bucket bound under which 99 % of the step's deliveries were written}, from the
    server's own histogram (hub accept to bytes taken by the kernel; sse-edge only). The server
    runs every step, so each step's counts are its dump minus the previous step's."""
    d = os.path.join(run_dir, peer)
    out, prev = {}, {}
    for rate, _, _ in steps(run_dir, peer):
        cur = lag_buckets(os.path.join(d, f"M5-{rate}.metrics"))
        if cur:
            delta = sorted((le, n - prev.get(le, 0.0)) for le, n in cur.items())
            total = delta[-1][1]
            if total > 0:
                out[rate] = next(le for le, n in delta if n >= 0.99 * total)
        prev = cur
    return out


def accepted_per_s(rep):
    """Events accepted (2xx) per second of the step's planned duration."""
    duration = rep["config"]["publish"]["duration"] or 1
    return rep["publisher"]["raw"]["accepted"] / duration


def row(peer, rate, rep, sat, lag):
    p, s, v = rep["publisher"], rep["subscribers"], rep["server"]
    statuses = ", ".join(f"{k}: {n:,}" for k, n in sorted(p["raw"]["statuses"].items())) or "none"
    skipped = p["raw"].get("not_sent_inflight", 0) + p["raw"].get("not_sent_backlog", 0)
    lat = s["latency_ms"]
    acc = s.get("accept_latency_ms", {}).get("p99")
    cpu = v.get("cpu_s_per_million_deliveries")
    return (
        f"| {rate:,} | {peer} | {accepted_per_s(rep):,.0f} | {statuses}; {skipped:,} not offered "
        f"| {lat['p50']:,.0f} / {lat['p99']:,.0f} | {'–' if not acc else f'{acc:,.0f}'} "
        f"| {'–' if lag is None else f'≤ {lag * 1000:,.0f}'} | "
        f"{'–' if sat is None else f'{sat:.2f}'} | {'–' if cpu is None else f'{cpu:.2f}'} |"
    )


def table(run_dir):
    lines = [
        "| offered events/s | peer | accepted events/s | publish answers | readers' p50 / p99 ms "
        "| readers' p99 from acceptance ms | server's delivery lag p99 ms | max saturation "
        "| server CPU-s per 10⁶ deliveries |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_rate = {}
    for peer in PEERS:
        lags = server_lag_p99(run_dir, peer)
        for rate, rep, sat in steps(run_dir, peer):
            by_rate.setdefault(rate, []).append(row(peer, rate, rep, sat, lags.get(rate)))
    for rate in sorted(by_rate):
        lines.extend(by_rate[rate])
    return "\n".join(lines) + "\n"


def plot(run_dir):
    w, h, pad = 760, 340, 60
    series = {peer: steps(run_dir, peer) for peer in PEERS}
    rates = sorted({r for s in series.values() for r, _, _ in s})
    if not rates:
        return svg_doc(w, h, [], "no M5 data")
    lo, hi = math.log2(rates[0]), math.log2(rates[-1])
    half = (w - 3 * pad) / 2

    def x(rate, left):
        return left + (0 if hi == lo else (math.log2(rate) - lo) / (hi - lo) * half)

    body = []
    panels = [
        ("readers' p99 (ms, log)", lambda rep: rep["subscribers"]["latency_ms"]["p99"], pad),
        ("accepted events/s (log)", accepted_per_s, 2 * pad + half),
    ]
    for title, value, left in panels:
        vals = [max(value(rep), 1e-3) for s in series.values() for _, rep, _ in s]
        vlo, vhi = math.log10(min(vals)), math.log10(max(vals))
        if vhi - vlo < 1:
            vhi = vlo + 1

        def y(v):
            return h - pad - (math.log10(max(v, 1e-3)) - vlo) / (vhi - vlo) * (h - 2 * pad)

        body.append(f'<text x="{left}" y="{pad - 20}" font-size="13">{title}</text>')
        body.append(
            f'<line x1="{left}" y1="{h - pad}" x2="{left + half}" y2="{h - pad}" stroke="#999"/>'
            f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{h - pad}" stroke="#999"/>'
        )
        for r in rates:
            body.append(
                f'<text x="{x(r, left):.1f}" y="{h - pad + 16}" font-size="10" '
                f'text-anchor="middle">{r}</text>'
            )
        for k in range(int(math.floor(vlo)), int(math.ceil(vhi)) + 1):
            for m in (1, 2, 5):
                if vlo <= math.log10(m * 10**k) <= vhi:
                    body.append(
                        f'<text x="{left - 6}" y="{y(m * 10 ** k) + 3:.1f}" font-size="10" '
                        f'text-anchor="end">{m * 10 ** k:g}</text>'
                    )
        for peer, s in series.items():
            if not s:
                continue
            pts = " ".join(f"{x(r, left):.1f},{y(value(rep)):.1f}" for r, rep, _ in s)
            body.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS[peer]}" stroke-width="2"/>')
            for r, rep, _ in s:
                body.append(f'<circle cx="{x(r, left):.1f}" cy="{y(value(rep)):.1f}" r="3" fill="{COLORS[peer]}"/>')
        body.append(
            f'<text x="{left + half / 2}" y="{h - 18}" font-size="11" text-anchor="middle">'
            "offered events/s (10,000 streams × 100 B)</text>"
        )
    for i, peer in enumerate(PEERS):
        body.append(
            f'<rect x="{w - 150}" y="{12 + 16 * i}" width="10" height="10" fill="{COLORS[peer]}"/>'
            f'<text x="{w - 134}" y="{21 + 16 * i}" font-size="11">{peer}</text>'
        )
    return svg_doc(w, h, body, "M5 overload: p99 and accepted rate past the knee")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--md")
    ap.add_argument("--svg")
    ap.add_argument("--results", help="RESULTS.md whose overload section to write")
    ap.add_argument("--intro", default="", help="text before the table (date, command, findings)")
    a = ap.parse_args()
    md = table(a.run_dir)
    if a.results:
        write_section(
            a.results, OVERLOAD_MARK, "M5 — overload: 10,000 subscribers, publish rate ramped past the knee",
            a.intro, md, a.svg, "M5: readers' p99 and accepted events/s against the offered rate",
        )
    if a.md:
        with open(a.md, "w") as f:
            f.write(md)
    else:
        sys.stdout.write(md)
    if a.svg:
        with open(a.svg, "w") as f:
            f.write(plot(a.run_dir))


if __name__ == "__main__":
    main()
