#!/usr/bin/env python3
"""Small outboxes against the default (issue 15 item 2), from a run of
`benches/peers/run.sh --peers sse-edge --scenarios O [--repeat N] [--out DIR]`:

    python3 benches/peers/outbox.py DIR/full [--results RESULTS.md] [--intro TEXT]

M4 (10,000 streams, 20% never read, 200 events/s of 1 KiB) on a fresh sse-edge per run, with the
default outbox (files O-default-rN.json) and with `--outbox-max-bytes 16384` (O-16384-rN.json),
alternating. Per run: deliveries/s, what the readers missed and the gap notices they got,
readers' p50/p99 from acceptance (the publish's 2xx) and from the publisher's stamp, accepted
publishes, server CPU per delivery, frames per `writev` (from the run's /metrics). Then the
ratio of the medians, 16 KiB against the default: the target is at least 0.9× the deliveries/s,
readers' p99 under the lag budget, no reader losing an event. With --results, the section
from report.py's OUTBOX_MARK to the next mark in RESULTS.md is replaced (or appended).
"""

import argparse
import json
import math
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import OUTBOX_MARK, write_section  # noqa: E402


def runs(run_dir):
    """{size: [(tag, report, frames per write or None)]} for every O- run found."""
    d = os.path.join(run_dir, "sse-edge")
    out = {}
    for name in os.listdir(d) if os.path.isdir(d) else []:
        m = re.fullmatch(r"O-(\w+)-r(\d+)\.json", name)
        if not m:
            continue
        with open(os.path.join(d, name)) as f:
            rep = json.load(f)
        out.setdefault(m.group(1), []).append((int(m.group(2)), rep, frames_per_write(d, name[:-5])))
    return {size: [(f"r{n}", rep, fpw) for n, rep, fpw in sorted(rs, key=lambda r: r[0])] for size, rs in out.items()}


def frames_per_write(d, tag):
    """sse_frames_written_total / sse_writes_total of the run's final /metrics scrape."""
    try:
        with open(os.path.join(d, tag + ".metrics")) as f:
            text = f.read()
    except OSError:
        return None
    total = {}
    for line in text.splitlines():
        m = re.match(r"(sse_frames_written_total|sse_writes_total)\{[^}]*\} (\S+)", line)
        if m:
            total[m.group(1)] = total.get(m.group(1), 0.0) + float(m.group(2))
    writes = total.get("sse_writes_total")
    return total["sse_frames_written_total"] / writes if writes else None


def figures(rep):
    sub, pub, srv = rep["subscribers"], rep["publisher"], rep["server"]
    raw, praw = sub["raw"], pub["raw"]
    acc = sub.get("accept_latency_ms") or {}
    return {
        "dps": sub.get("deliveries_per_s", 0.0),
        "missing": raw.get("missing_total", 0),
        "gaps": raw.get("gap_notices", 0),
        "p50": sub["latency_ms"]["p50"],
        "p99": sub["latency_ms"]["p99"],
        "acc_p50": acc.get("p50", float("nan")),
        "acc_p99": acc.get("p99", float("nan")),
        "accepted": praw.get("accepted", 0),
        "planned": praw.get("planned", 0),
        "cpu": nan_if_none(srv.get("cpu_s_per_million_deliveries")),
    }


def nan_if_none(x):
    return float("nan") if x is None else x


def label(size):
    return "1 MiB (default)" if size == "default" else f"{int(size) // 1024} KiB"


def table(by_size):
    lines = [
        "| `--outbox-max-bytes` | run | deliveries/s | missed by readers / gap notices | "
        "readers' p50 / p99 from acceptance ms | from the stamp ms | accepted publishes | "
        "CPU-s per 10⁶ deliveries | frames per `writev` |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in ("default", "16384"):
        for tag, rep, fpw in by_size.get(size, []):
            f = figures(rep)
            lines.append(
                f"| {label(size)} | {tag} | {f['dps']:,.0f} | {f['missing']:,} / {f['gaps']:,} | "
                f"{f['acc_p50']:,.0f} / {f['acc_p99']:,.0f} | {f['p50']:,.0f} / {f['p99']:,.0f} | "
                f"{f['accepted']:,} of {f['planned']:,} | {f['cpu']:.2f} | "
                f"{'–' if fpw is None else f'{fpw:.1f}'} |"
            )
    return "\n".join(lines) + "\n"


def summary(by_size):
    """The ratio of the median deliveries/s and the worst readers' p99 from acceptance."""
    med = {s: statistics.median(figures(r)["dps"] for _, r, _ in by_size[s]) for s in by_size if by_size[s]}
    if "default" not in med or "16384" not in med or not med["default"]:
        return "Both sizes, with deliveries, are needed for the ratio.\n"
    p99s = [figures(r)["acc_p99"] for _, r, _ in by_size["16384"]]
    worst = float("nan") if any(math.isnan(p) for p in p99s) else max(p99s)
    lost = sum(figures(r)["missing"] for _, r, _ in by_size["16384"])
    return (
        f"\n16 KiB against the default, medians of {len(by_size['16384'])} and {len(by_size['default'])} "
        f"runs: **{med['16384'] / med['default']:.2f}× the deliveries/s** "
        f"({med['16384']:,.0f} against {med['default']:,.0f}); readers' worst p99 from acceptance "
        f"{worst:,.0f} ms; events the readers missed with 16 KiB: {lost:,}.\n"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--results", help="RESULTS.md whose outbox section to write")
    ap.add_argument("--intro", default="", help="text before the table (date, command, findings)")
    a = ap.parse_args()
    by_size = runs(a.run_dir)
    md = table(by_size) + summary(by_size)
    sys.stdout.write(md)
    if a.results:
        write_section(a.results, OUTBOX_MARK, "Small outboxes keep the node's throughput (M4)", a.intro, md)


if __name__ == "__main__":
    main()
