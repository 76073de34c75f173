#!/usr/bin/env python3
"""Peer benchmark report: reads sse-load's JSON reports written by benches/peers/run.sh and writes
RESULTS.md (a table per scenario, machine facts, exact commands, date) and SVG plots drawn by
hand (standard library only).

    report.py OUTDIR [--results FILE] [--plots DIR]   the whole report
    report.py --summary RUN.json                      one line about one run (run.sh prints it)
    report.py --verdict RUN.json                      M3 step: "ok ..." or "fail: why"

Definitions (one place):
- delivered = 1 - missing / expected, where expected = accepted publishes x ready reading streams
  and missing = events a reading stream never got (sse-load's per-stream check on the stamped
  lane/seq in the data, so it does not depend on the peer's id format);
- an M3 step is sustained when every stream was ready, the peer accepted >= 99% of the scheduled
  publishes, delivered >= 99.9%, and the readers' p99 latency <= 1 s;
- load generator busy = sse-load CPU seconds / its elapsed seconds (1.0 = its core was full, so the
  step measured the load generator as much as the server).
"""

import argparse
import copy
import html
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER_ORDER = ["sse-edge", "nchan", "pushpin", "axum", "node"]
PEER_LABEL = {
    "sse-edge": "sse-edge",
    "nchan": "nginx + nchan",
    "pushpin": "Pushpin",
    "axum": "axum/tokio broadcast",
    "node": "Node.js http",
}
COLORS = {
    "sse-edge": "#d62728",
    "nchan": "#1f77b4",
    "pushpin": "#9467bd",
    "axum": "#2ca02c",
    "node": "#ff7f0e",
}
# sse-load counts an SSE id it cannot read as a number; nchan's ids are `<time>:<tag>`, so
# every nchan event adds one. Reported separately, not as a failure.
ID_FORMAT_ERROR = "parse error: non-numeric id"


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Run:
    """Derived figures of one sse-load fanout report."""

    def __init__(self, r):
        self.r = r
        sub = r.get("subscribers") or {}
        raw = sub.get("raw") or {}
        pub = r.get("publisher") or {}
        praw = pub.get("raw") or {}
        srv = r.get("server") or {}
        self.planned = raw.get("planned", 0)
        self.ready = raw.get("ready", 0)
        self.attempts = raw.get("attempts", 0)
        self.readers = raw.get("readers_ready", 0)
        self.failed = raw.get("failed", 0)
        self.lost = raw.get("lost", 0)
        self.deliveries = raw.get("deliveries", 0)
        self.expected = sub.get("expected_deliveries") or 0
        self.missing = raw.get("missing_total", 0)
        self.streams_missing = raw.get("streams_with_missing", 0)
        self.holes = raw.get("seq_holes", 0)
        self.seq_regressions = raw.get("seq_regressions", 0)
        self.id_regressions = raw.get("id_regressions", 0)
        self.gap_notices = raw.get("gap_notices", 0)
        self.other_events = raw.get("other_events", 0)
        self.delivered = 1 - self.missing / self.expected if self.expected else float("nan")
        # Of what was scheduled (every planned publish to every ready reader): a peer that slows or
        # refuses its publishers delivers "all it accepted" while delivering less than another.
        scheduled = praw.get("planned", 0) * self.readers
        self.of_scheduled = (self.expected - self.missing) / scheduled if scheduled else float("nan")
        self.accepted_share = praw.get("accepted", 0) / praw.get("planned", 1) if praw.get("planned") else float("nan")
        self.dps = sub.get("deliveries_per_s", 0.0)
        self.lat = sub.get("latency_ms") or {}
        self.connect = sub.get("connect_ms") or {}
        self.ttfb = sub.get("ttfb_ms") or {}
        self.lat_hist = raw.get("latency_us") or []
        self.connect_phase = r.get("connect_phase_seconds")
        self.pub_planned = praw.get("planned", 0)
        self.pub_accepted = praw.get("accepted", 0)
        self.pub_statuses = praw.get("statuses") or {}
        self.pub_errors = praw.get("errors") or {}
        self.pub_lat = pub.get("latency_ms") or {}
        self.target_rate = pub.get("target_rate", 0.0)
        self.accept_rate = pub.get("accept_rate", 0.0)
        self.rss_per_stream = srv.get("rss_per_stream_bytes")
        self.rss_growth = srv.get("rss_growth_during_run_bytes")
        # Host-wide, from /proc/net/sockstat: peak during the run − all ready (absent in old reports).
        self.kernel_tcp_growth = srv.get("kernel_tcp_mem_growth_bytes")
        self.cpu_run = srv.get("cpu_seconds_during_run")
        self.cpu_per_m = srv.get("cpu_s_per_million_deliveries")
        self.rss_start = sum(p["rss_bytes"] for p in srv.get("start", []))
        self.rss_ready = sum(p["rss_bytes"] for p in srv.get("ready", []))
        self.rss_end = sum(p["rss_bytes"] for p in srv.get("end", []))
        self.elapsed = r.get("elapsed_seconds", 0.0)
        self.loadgen_cpu = r.get("loadgen_cpu_seconds", 0.0)
        self.loadgen_busy = self.loadgen_cpu / self.elapsed if self.elapsed else 0.0
        window = (raw.get("last_delivery_us", 0) - praw.get("first_send_us", 0)) / 1e6
        self.run_window = window if window > 0 else None
        errs = dict(raw.get("errors") or {})
        self.id_format_errors = errs.pop(ID_FORMAT_ERROR, 0)
        self.sub_errors = errs

    def verdict(self):
        """M3 step: (ok, reason)."""
        if self.ready < self.planned:
            return False, f"{self.planned - self.ready} of {self.planned} streams not ready"
        if self.pub_planned and self.pub_accepted < 0.99 * self.pub_planned:
            return False, f"accepted {self.pub_accepted} of {self.pub_planned} publishes"
        if not self.expected:
            return False, "nothing expected (no publish accepted)"
        if self.delivered < 0.999:
            return False, f"delivered {pct(self.delivered)} ({fmt_int(self.missing)} missing)"
        p99 = self.lat.get("p99", float("inf"))
        if p99 > 1000:
            return False, f"p99 {p99:.0f} ms > 1 s"
        return True, f"p99 {p99:.1f} ms, delivered {pct(self.delivered)}"


def pct(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x >= 0.99995:
        return "100%"
    return f"{x * 100:.2f}%"


def fmt_int(n):
    return f"{int(n):,}" if n is not None else "–"


def fmt_ms(x):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_bytes(b):
    if b is None:
        return "–"
    a = abs(b)
    if a >= 1 << 30:
        return f"{b / (1 << 30):.2f} GiB"
    if a >= 1 << 20:
        return f"{b / (1 << 20):.1f} MiB"
    if a >= 1 << 10:
        return f"{b / (1 << 10):.1f} KiB"
    return f"{b:.0f} B"


def fmt_num(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


MEDIAN_ATTRS = (
    "rss_per_stream rss_growth cpu_per_m cpu_run dps delivered of_scheduled accepted_share missing "
    "streams_missing connect_phase loadgen_busy rss_start rss_ready rss_end gap_notices run_window "
    "deliveries expected ready readers attempts pub_accepted core_busy kernel_tcp_growth"
).split()
MEDIAN_DICTS = ("lat", "ttfb", "pub_lat", "connect")


def median(xs):
    xs = sorted(x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x)))
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def merge_reps(runs):
    """One Run standing for repetitions: each figure is the median over them; histograms and
    everything else come from the repetition with the median p99 latency."""
    if len(runs) == 1:
        runs[0].reps = runs
        return runs[0]
    by_p99 = sorted(runs, key=lambda r: r.lat.get("p99", 0.0))
    m = copy.copy(by_p99[len(by_p99) // 2])
    for a in MEDIAN_ATTRS:
        setattr(m, a, median([getattr(r, a) for r in runs]))
    for d in MEDIAN_DICTS:
        keys = set().union(*(getattr(r, d).keys() for r in runs))
        setattr(m, d, {k: median([getattr(r, d).get(k) for r in runs]) for k in keys})
    m.reps = runs
    return m


def spread(r, get, fmt):
    """`median` or `median (min–max)` over the repetitions behind r."""
    reps = getattr(r, "reps", [r])
    v = get(r)
    if v is None:
        return "–"
    vals = [get(x) for x in reps if get(x) is not None]
    if len(vals) < 2:
        return fmt(v)
    return f"{fmt(v)} ({fmt(min(vals))}–{fmt(max(vals))})"


def summary(path):
    r = load(path)
    if r is None:
        return f"{os.path.basename(path)}: no report"
    x = Run(r)
    parts = [
        f"{os.path.basename(path)}: ready {x.ready}/{x.planned}",
        f"deliv {fmt_int(x.deliveries)}/{fmt_int(x.expected)} ({pct(x.delivered)})",
        f"{x.dps:,.0f}/s",
        f"lat p50 {fmt_ms(x.lat.get('p50'))} p99 {fmt_ms(x.lat.get('p99'))} max {fmt_ms(x.lat.get('max'))} ms",
        f"rss/stream {fmt_bytes(x.rss_per_stream)} growth {fmt_bytes(x.rss_growth)}",
        f"cpu/M {fmt_num(x.cpu_per_m)} s",
        f"loadgen busy {x.loadgen_busy:.0%}",
    ]
    if x.sub_errors:
        parts.append(f"errors {x.sub_errors}")
    return ", ".join(parts)


# --- collection -------------------------------------------------------------------------------


def procs(path):
    """role -> (cpu_ticks, rss_kb) from a procs snapshot."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                role, _pid, ticks, rss = line.split()
                t, k = out.get(role, (0, 0))
                out[role] = (t + int(ticks), k + int(rss))
    except (OSError, ValueError):
        pass
    return out


def cpustat(path):
    """cpuN -> (busy ticks, total ticks) from saved /proc/stat lines."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]
                # busy in processes (user + nice + system); irq/softirq time is not charged to
                # any process, so it is left out of both sides of the comparison
                out[name] = (v[0] + v[1] + v[2], sum(v), v[5] + v[6])
    except (OSError, ValueError, IndexError):
        pass
    return out


def foreign_share(v, ticks_per_s):
    """Share of the server core (cpu0) that processes other than the peer ran on during a run."""
    b, a = v.get("cpu_before", {}), v.get("cpu_after", {})
    if "cpu0" not in b or "cpu0" not in a:
        return None
    busy = a["cpu0"][0] - b["cpu0"][0]
    total = a["cpu0"][1] - b["cpu0"][1]
    peer = sum(t for t, _ in v["after"].values()) - sum(t for t, _ in v["before"].values())
    peer += ksoftirqd_ticks(v) or 0
    if total <= 0:
        return None
    return max(busy - peer, 0) / total


def ksoftirqd_ticks(v):
    """CPU ticks of ksoftirqd on the server's core during a run (None when not recorded)."""
    if not v.get("kafter") or not v.get("kbefore"):
        return None
    return sum(t for t, _ in v["kafter"].values()) - sum(t for t, _ in v["kbefore"].values())


def core_busy(v):
    """Share of CPU 0 used by the peer's processes plus ksoftirqd/0 during a run. With tick-based
    accounting a process's system time already holds the softirq work done in its own context;
    the loopback work deferred to ksoftirqd/0 is the server's cost too. None when ksoftirqd was
    not recorded."""
    b, a = v.get("cpu_before", {}), v.get("cpu_after", {})
    k = ksoftirqd_ticks(v)
    if "cpu0" not in b or "cpu0" not in a or k is None:
        return None
    total = a["cpu0"][1] - b["cpu0"][1]
    peer = sum(t for t, _ in v["after"].values()) - sum(t for t, _ in v["before"].values())
    return (peer + k) / total if total > 0 else None


def read_text(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def collect(outdir):
    meta = load(os.path.join(outdir, "meta.json")) or {}
    peers = {}
    names = [p for p in PEER_ORDER if os.path.isdir(os.path.join(outdir, p))]
    names += sorted(
        p for p in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, p)) and p not in names + ["bin", "plots"]
    )
    for p in names:
        d = os.path.join(outdir, p)
        e = {
            "skipped": read_text(os.path.join(d, "SKIPPED")) or None,
            "failed": read_text(os.path.join(d, "FAILED")) or None,
            "publish_path": read_text(os.path.join(d, "publish_path")),
            "runs": {},  # base tag -> entry whose run is the median of its repetitions
            "all": {},  # every run, repetitions as TAG_rN
        }
        for f in sorted(os.listdir(d)):
            if f.endswith(".json"):
                tag = f[:-5]
                r = load(os.path.join(d, f))
                if r is None:
                    continue
                e["all"][tag] = {
                    "run": Run(r),
                    "cmd": read_text(os.path.join(d, tag + ".cmd")),
                    "loadavg": read_text(os.path.join(d, tag + ".loadavg")),
                    "before": procs(os.path.join(d, tag + ".procs.before")),
                    "after": procs(os.path.join(d, tag + ".procs.after")),
                    "kbefore": procs(os.path.join(d, tag + ".procs.before.kernel")),
                    "kafter": procs(os.path.join(d, tag + ".procs.after.kernel")),
                    "cpu_before": cpustat(os.path.join(d, tag + ".cpustat.before")),
                    "cpu_after": cpustat(os.path.join(d, tag + ".cpustat.after")),
                }
        for v in e["all"].values():
            v["run"].core_busy = core_busy(v)
        groups = {}
        for tag in e["all"]:
            groups.setdefault(tag.split("_r", 1)[0], []).append(tag)
        for base, tags in groups.items():
            first = e["all"][base] if base in e["all"] else e["all"][tags[0]]
            e["runs"][base] = dict(first, run=merge_reps([e["all"][t]["run"] for t in sorted(tags)]))
        peers[p] = e
    return meta, peers


def m3_attempts(e):
    """rate -> [Run per attempt, in order] (a step that failed is tried a second time)."""
    out = {}
    for tag in sorted(e["all"], key=tag_key):
        if tag.startswith("M3-"):
            out.setdefault(int(tag[3:].split("_r")[0]), []).append(e["all"][tag]["run"])
    return out


def m3_steps(e):
    """[(rate, Run)]: per step the first attempt that was sustained, else the last one."""
    steps = []
    for rate, runs in sorted(m3_attempts(e).items()):
        ok = [r for r in runs if r.verdict()[0]]
        steps.append((rate, ok[0] if ok else runs[-1]))
    return steps


def m3_ceiling(e):
    """(highest sustained rate or None, first failing (rate, reason) or None)."""
    best, fail = None, None
    for rate, run in m3_steps(e):
        ok, why = run.verdict()
        if ok:
            best = (rate, run)
        else:
            fail = (rate, why, run)
            break
    return best, fail


# --- SVG ------------------------------------------------------------------------------------


def svg_doc(w, h, body, title):
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        f'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">\n'
        f'<title>{html.escape(title)}</title>\n<rect width="{w}" height="{h}" fill="white"/>\n'
        + "\n".join(body)
        + "\n</svg>\n"
    )


def text(x, y, s, anchor="start", size=12, weight="normal", fill="#222", rotate=None):
    tr = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
        f'font-weight="{weight}" fill="{fill}"{tr}>{html.escape(str(s))}</text>'
    )


def log_ticks(lo, hi):
    ticks = []
    e = math.floor(math.log10(lo))
    while 10**e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10**e
            if lo * 0.9999 <= v <= hi * 1.0001:
                ticks.append(v)
        e += 1
    return ticks


def tick_label(v):
    if v >= 1000:
        return f"{v / 1000:g}k" if v < 1e6 else f"{v / 1e6:g}M"
    return f"{v:g}"


def line_chart(path, title, xlabels, series, ylabel, note=""):
    """series: [(peer, [y or None per x])], y on a log axis."""
    w, h, left, right, top, bottom = 760, 420, 70, 170, 40, 60
    vals = [y for _, ys in series for y in ys if y is not None and y > 0]
    if not vals:
        return False
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    if hi <= lo:
        hi = lo * 10
    pw, ph = w - left - right, h - top - bottom

    def xp(i):
        return left + (pw * i / (len(xlabels) - 1) if len(xlabels) > 1 else pw / 2)

    def yp(v):
        return top + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    body = [text(w / 2, 22, title, "middle", 15, "bold")]
    for t in log_ticks(lo, hi):
        y = yp(t)
        major = abs(math.log10(t) - round(math.log10(t))) < 1e-9
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="{"#ccc" if major else "#eee"}"/>'
        )
        body.append(text(left - 6, y + 4, tick_label(t), "end", 11))
    for i, lab in enumerate(xlabels):
        x = xp(i)
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#f2f2f2"/>')
        body.append(text(x, top + ph + 18, lab, "middle", 11))
    body.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    body.append(text(16, top + ph / 2, ylabel, "middle", 12, rotate=-90))
    for k, (peer, ys) in enumerate(series):
        c = COLORS.get(peer, "#555")
        pts = [(xp(i), yp(y)) for i, y in enumerate(ys) if y is not None and y > 0]
        if len(pts) > 1:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            body.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2.2"/>')
        for x, y in pts:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.2" fill="{c}"/>')
        ly = top + 10 + k * 20
        body.append(f'<line x1="{left + pw + 14}" y1="{ly}" x2="{left + pw + 38}" y2="{ly}" stroke="{c}" stroke-width="3"/>')
        body.append(text(left + pw + 44, ly + 4, PEER_LABEL.get(peer, peer), size=11))
    if note:
        body.append(text(left, h - 12, note, size=10, fill="#666"))
    with open(path, "w") as f:
        f.write(svg_doc(w, h, body, title))
    return True


def bar_chart(path, title, bars, unit_fmt, xlabel, refs=(), note="", log=False, ticks=None):
    """bars: [(peer, value or None, label)], horizontal; refs: [(value, label)] vertical lines."""
    bars = [b for b in bars if b[1] is not None]
    if not bars:
        return False
    w, left, right, bottom, bh = 760, 170, 90, 55, 28
    top = 40 + 13 * len(refs)
    h = top + bottom + bh * len(bars) + 10
    pw = w - left - right
    vmax = max([b[1] for b in bars] + [r[0] for r in refs]) * 1.08
    vmin = min([b[1] for b in bars if b[1] > 0] + [r[0] for r in refs], default=1)
    if log:
        lo = 10 ** math.floor(math.log10(max(vmin, 1e-9)))
        hi = 10 ** math.ceil(math.log10(vmax))

        def xv(v):
            return left + pw * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

        ticks = [t for t in ticks if lo <= t <= hi] if ticks else log_ticks(lo, hi)
    else:

        def xv(v):
            return left + pw * max(v, 0) / vmax

        step = 10 ** math.floor(math.log10(vmax / 5)) if vmax > 0 else 1
        for m in (1, 2, 5, 10):
            if vmax / (step * m) <= 6:
                step *= m
                break
        ticks = [i * step for i in range(int(vmax / step) + 1)]
    body = [text(w / 2, 22, title, "middle", 15, "bold")]
    ph = bh * len(bars) + 10
    for t in ticks:
        x = xv(t)
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#e6e6e6"/>')
        body.append(text(x, top + ph + 16, unit_fmt(t), "middle", 11))
    for i, (peer, v, lab) in enumerate(bars):
        y = top + 5 + i * bh
        c = COLORS.get(peer, "#555")
        x0 = xv(lo) if log else left
        body.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(xv(v) - x0, 1):.1f}" height="{bh - 8}" fill="{c}"/>')
        body.append(text(left - 8, y + bh / 2, PEER_LABEL.get(peer, peer), "end", 12))
        body.append(text(xv(v) + 6, y + bh / 2, lab, size=11))
    for k, (v, lab) in enumerate(refs):
        x = xv(v)
        body.append(f'<line x1="{x:.1f}" y1="{top - 18 - 13 * k}" x2="{x:.1f}" y2="{top + ph}" stroke="#444" stroke-dasharray="4,3"/>')
        body.append(text(x + 3, top - 8 - 13 * k, lab, size=10, fill="#444"))
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#888"/>')
    body.append(text(left + pw / 2, top + ph + 36, xlabel, "middle", 12))
    if note:
        body.append(text(left, h - 6, note, size=10, fill="#666"))
    with open(path, "w") as f:
        f.write(svg_doc(w, h, body, title))
    return True


# The latency quantiles the fan-out and slow-consumer charts draw.
LATENCY_QS = [0.5, 0.9, 0.99, 0.999, 1.0]


def hist_quantiles(buckets, qs):
    """Quantiles (ms) of sse-load's [value_us, count] buckets."""
    total = sum(c for _, c in buckets)
    if not total:
        return [None] * len(qs)
    out = []
    for q in qs:
        target, acc = q * total, 0
        v = buckets[-1][0]
        for val, c in buckets:
            acc += c
            if acc >= target:
                v = val
                break
        out.append(v / 1000)
    return out


def prom_hist(path, name):
    """[(upper bound s, cumulative count)] of a Prometheus histogram in a scraped text file."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name + "_bucket{"):
                    le = line.split('le="', 1)[1].split('"', 1)[0]
                    out.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(None, 1)[1])))
    except (OSError, ValueError, IndexError):
        return []
    return sorted(out)


def prom_quantile(h, q):
    total = h[-1][1] if h else 0
    for le, c in h:
        if total and c >= q * total:
            return le
    return float("nan")


# --- Markdown --------------------------------------------------------------------------------


def tag_key(t):
    base, _, rep = t.partition("_r")
    return (base[:2], int(base[3:]) if base.startswith("M3-") else 0, base, int(rep or 1))


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def label(p):
    return PEER_LABEL.get(p, p)


def run_of(e, tag):
    v = e["runs"].get(tag)
    return v["run"] if v else None


def not_run(e):
    return e["skipped"] and f"skipped: {e['skipped']}" or "not run"


def component_table(e, tag, ticks_per_s):
    v = e["runs"].get(tag)
    if not v or len(v["after"]) < 2:
        return None
    rows = []
    for role, (t1, rss1) in v["after"].items():
        t0, _ = v["before"].get(role, (t1, rss1))
        rows.append((role, f"{(t1 - t0) / ticks_per_s:.2f}", fmt_bytes(rss1 * 1024)))
    return table(["process", "CPU-s during the run", "RSS at end"], rows)


# What the fan-out table's columns mean (printed under M2's table; M2h's refers to it).
FANOUT_NOTES = (
    "\n'publishes accepted' = publishes answered 2xx within sse-load's 10 s answer timeout (a peer "
    "that is too busy answers late: its publishers slow down). 'delivered of scheduled' = distinct "
    "events received by the readers / (scheduled publishes × readers): the headline, since a peer "
    "that accepted fewer publishes can deliver 'all it accepted' and still deliver less. "
    "'server process busy' = the server processes' CPU-s / (first publish → last delivery); their "
    "CPU-s include the kernel's loopback work done in their own context (tick accounting), not "
    "the work deferred to ksoftirqd/0. 'CPU 0 busy' = (server processes + ksoftirqd/0) / wall "
    "time over the whole sse-load run, connect and drain included ('–' where ksoftirqd was not "
    "recorded); near 100% the core was saturated and latency is queueing. deliveries/s is over "
    "first → last delivery.\n"
)


def fanout_section(md, tag, title, intro, notes, prm, peers, order, plots_dir, rel_plots):
    """Appends to md the section of a fan-out scenario (M2, M2h): intro, its table, notes (under
    the table), a latency chart (<tag>_latency.svg) and a CPU chart (<tag>_cpu_per_million.svg).
    prm: the scenario's params from meta.json. Left out when no peer ran it and the run did not
    plan it."""
    if not any(run_of(peers[p], tag) for p in order) and not prm:
        return
    rate = f"{prm.get('rate', '?')} events/s"
    md.append(
        f"## {tag} — {title}: {fmt_int(prm.get('streams', 0))} subscribers × {rate} "
        f"of {prm.get('payload', '?')} B for {prm.get('seconds', '?')} s\n"
    )
    if intro:
        md.append(intro + "\n")
    rows, lat_series, cpu_bars = [], [], []
    for p in order:
        e = peers[p]
        r = run_of(e, tag)
        if not r:
            rows.append((label(p), not_run(e)) + ("",) * 10)
            continue
        busy = r.cpu_run / r.run_window if r.cpu_run is not None and r.run_window else None
        rows.append(
            (
                label(p),
                f"{r.dps:,.0f}",
                pct(r.accepted_share),
                f"**{pct(r.of_scheduled)}** ({pct(r.delivered)} of accepted)",
                fmt_int(r.streams_missing),
                fmt_ms(r.lat.get("p50")),
                "**" + spread(r, lambda x: x.lat.get("p99"), fmt_ms) + "**",
                fmt_ms(r.lat.get("max")),
                "**" + spread(r, lambda x: x.cpu_per_m, fmt_num) + "**",
                f"{busy:.0%}" if busy is not None else "–",
                f"{r.core_busy:.0%}" if getattr(r, "core_busy", None) is not None else "–",
                f"{r.loadgen_busy:.0%}",
            )
        )
        lat_series.append((p, hist_quantiles(r.lat_hist, LATENCY_QS)))
        if r.cpu_per_m is not None:
            cpu_bars.append((p, r.cpu_per_m, f"{r.cpu_per_m:.2f} s"))
    md.append(
        table(
            [
                "peer",
                "deliveries/s",
                "publishes accepted",
                "delivered of scheduled",
                "streams with gaps",
                "p50 (ms)",
                "p99 (ms)",
                "max (ms)",
                "server CPU-s per 10⁶ deliveries",
                "server process busy",
                "CPU 0 busy",
                "sse-load core busy",
            ],
            rows,
        )
    )
    md.append(notes)
    name = tag.lower()
    if line_chart(
        os.path.join(plots_dir, f"{name}_latency.svg"),
        f"{tag}: delivery latency percentiles ({fmt_int(prm.get('streams', 0))} subscribers × "
        f"{prm.get('rate', '?')} ev/s)",
        ["p50", "p90", "p99", "p99.9", "max"],
        lat_series,
        "latency (ms, log scale)",
    ):
        md.append(f"![{tag} latency]({rel_plots}/{name}_latency.svg)\n")
    if bar_chart(
        os.path.join(plots_dir, f"{name}_cpu_per_million.svg"),
        f"{tag}: server CPU seconds per million deliveries",
        cpu_bars,
        lambda v: f"{v:g}",
        "CPU-seconds per 10⁶ deliveries (lower is better)",
    ):
        md.append(f"![{tag} CPU]({rel_plots}/{name}_cpu_per_million.svg)\n")


def write_results(outdir, results, plots_dir):
    meta, peers = collect(outdir)
    os.makedirs(plots_dir, exist_ok=True)
    rel_plots = os.path.relpath(plots_dir, os.path.dirname(os.path.abspath(results)))
    order = [p for p in PEER_ORDER if p in peers] + [p for p in peers if p not in PEER_ORDER]
    params = meta.get("params", {})
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    md = []
    started = meta.get("started", time.strftime("%Y-%m-%d %H:%M:%S"))
    md.append("# Peer benchmark results\n")
    md.append(
        f"Run: **{started}** ({meta.get('mode', '?')} run), written by `benches/peers/report.py` from the "
        f"sse-load reports in `{os.path.relpath(os.path.abspath(outdir), ROOT)}` (gitignored). "
        "Do not edit by hand: rerun `benches/peers/run.sh`.\n"
    )
    md.append("## Machine and method\n")
    v = meta.get("versions", {})
    la = meta.get("loadavg_start", [])
    md.append(
        table(
            ["what", "value"],
            [
                ("CPU", f"{meta.get('cpu_model', '?')}, {meta.get('cores', '?')} cores"),
                ("memory", meta.get("memory", "?")),
                ("OS / kernel", f"{meta.get('os', '?')} / {meta.get('kernel', '?')}"),
                ("open-file limit / somaxconn", f"{meta.get('nofile', '?')} / {meta.get('somaxconn', '?')}"),
                ("load average at start (1/5/15 min)", " / ".join(la) or "?"),
                ("sse-edge", f"`{meta.get('sse_edge_rev', '?')}`, `--threads 1 --pin-threads false`"),
                ("nginx / nchan", f"{v.get('nginx', '?')} / libnginx-mod-nchan {v.get('libnginx-mod-nchan', '?')}"),
                ("Pushpin / condure / zurl", f"{v.get('pushpin', '?')} / {v.get('condure', '?')} / {v.get('zurl', '?')}"),
                ("axum / tokio", f"{v.get('axum', '?')} / {v.get('tokio', '?')} ({v.get('rustc', '?')})"),
                ("Node.js", v.get("node", "?")),
                ("pinning", f"server processes `taskset -c {meta.get('pin', {}).get('server_cpu', 0)}`, sse-load `taskset -c {meta.get('pin', {}).get('load_cpu', 1)}`"),
                ("command", f"`{meta.get('command', 'benches/peers/run.sh')}`"),
            ]
            + [
                (
                    "then",
                    f"`{x.get('command')}` at {x.get('started')} (load average {' / '.join(x.get('loadavg_start', []))}; "
                    f"sse-edge `{x.get('sse_edge_rev', '?')}`): replaced {', '.join(x.get('scenarios', []))} "
                    f"for {', '.join(x.get('peers', []))}",
                )
                for x in meta.get("later", [])
            ],
        )
    )
    md.append("")
    md.append(
        "Every peer runs alone, on one core (CPU 0), with sse-load on the other core (CPU 1); both are "
        "on 127.0.0.1. Each scenario starts a fresh server; M3's steps share one. sse-load subscribes "
        "all streams first, waits until every one has received its first byte of SSE (a comment), "
        "publishes at a fixed rate (open loop, 4 pipelined keep-alive connections, data stamped with "
        "lane/seq/time), drains, and checks each stream for missing and reordered events. Latency is "
        "publish-request write → event parsed by the subscriber (same clock). Server RSS and CPU come "
        "from `/proc` of every server process (`--server-pid`, summed): RSS per stream = (RSS when all "
        "streams are ready − RSS before connecting) / streams; CPU per million deliveries = server "
        "CPU-s from all-ready to end of drain / deliveries × 10⁶. "
        f"M1, M2, M2h and M4b ran {meta.get('repeat', 1)} time(s) per peer, each on a fresh server: their "
        "tables give the median of each figure, with the range over the repetitions in brackets "
        "where it matters (one run on this shared machine can be off by tens of percent).\n"
    )
    shares = [foreign_share(v, ticks_per_s) for e in peers.values() for v in e["all"].values()]
    shares = [x for x in shares if x is not None]
    md.append(
        "The machine is shared (others compile and test on it at times), so the benchmark's processes "
        "run at `nice -n -15`: when another process wants the same core, the peer gets ~97% of it. For "
        "every run the appendix gives the load average before it and 'others on CPU 0': the share of "
        "the server's core that other processes ran on during the run (`/proc/stat` user+nice+system "
        "minus the peer's own CPU time and ksoftirqd/0's where recorded), mostly time the peer left idle."
        + (
            f" Over this run it was {min(shares):.0%}–{max(shares):.0%} (median {sorted(shares)[len(shares) // 2]:.0%})."
            if shares
            else ""
        )
        + "\n"
    )

    # ---- M1
    p1 = params.get("M1", {})
    md.append(f"## M1 — idle memory: {fmt_int(p1.get('streams', 0))} streams\n")
    rows, bars = [], []
    for p in order:
        e = peers[p]
        r = run_of(e, "M1")
        if not r:
            rows.append((label(p), not_run(e), "", "", "", "", ""))
            continue
        rows.append(
            (
                label(p),
                f"{fmt_int(r.ready)}/{fmt_int(r.planned)} ({fmt_int(r.attempts)} attempts)",
                "**" + spread(r, lambda x: x.rss_per_stream, fmt_bytes) + "**",
                f"{fmt_bytes(r.rss_start)} → {fmt_bytes(r.rss_ready)}",
                fmt_num(r.connect_phase),
                f"{fmt_ms(r.ttfb.get('p50'))} / {fmt_ms(r.ttfb.get('p99'))}",
                f"{pct(r.delivered)}",
            )
        )
        if r.rss_per_stream is not None:
            bars.append((p, r.rss_per_stream, fmt_bytes(r.rss_per_stream)))
    md.append(
        table(
            [
                "peer",
                "ready",
                "RSS per stream",
                "server RSS before → all ready",
                "connect phase (s)",
                "first byte p50 / p99 (ms)",
                "1 event delivered",
            ],
            rows,
        )
    )
    md.append(
        "\nsse-load opens streams at its default 5,000/s with 512 connects in flight, so the connect phase "
        "is ≥ streams / 5,000 s for every peer; 'first byte' is connect start → first SSE bytes of the "
        "stream. The kernel's socket memory is not in RSS.\n"
    )
    if bar_chart(
        os.path.join(plots_dir, "m1_rss_per_stream.svg"),
        "M1: server RSS per idle stream",
        bars,
        lambda b: fmt_bytes(b),
        f"bytes of server RSS per stream at {fmt_int(p1.get('streams', 0))} idle streams (log scale)",
        refs=[(512, "512 B target"), (256, "256 B aim")],
        log=True,
        ticks=[2**k for k in range(4, 24, 2)],
    ):
        md.append(f"![RSS per stream]({rel_plots}/m1_rss_per_stream.svg)\n")

    # ---- M2 and M2h
    for tag, title, intro, notes in (
        ("M2", "fan-out", "", FANOUT_NOTES),
        (
            "M2h",
            "fan-out at twice M2's rate",
            "M2 at twice the publish rate (issue 14): a peer that keeps up at M2's rate may queue here. "
            "Columns as in M2.",
            "",
        ),
    ):
        fanout_section(md, tag, title, intro, notes, params.get(tag, {}), peers, order, plots_dir, rel_plots)

    # ---- M3
    p3 = params.get("M3", {})
    md.append(
        f"## M3 — ceiling: {fmt_int(p3.get('streams', 0))} subscribers, rising publish rate "
        f"({', '.join(fmt_int(x) for x in p3.get('rates', []))} events/s, {p3.get('seconds', '?')} s each)\n"
    )
    md.append(
        "A step is sustained when every stream was ready, ≥ 99% of the publishes were accepted, "
        "≥ 99.9% of the expected deliveries arrived and p99 ≤ 1 s; the ramp stops at the first step "
        "that is not. At 1,000 subscribers, 5,000 events/s is 5 million deliveries/s for sse-load "
        "to parse on its one core: a step where the load generator's core is full ('sse-load busy' "
        "≈ 100%) measures the load generator too.\n"
    )
    rows, m3_series = [], []
    all_rates = p3.get("rates", [])
    for p in order:
        e = peers[p]
        steps = m3_steps(e)
        if not steps:
            rows.append((label(p), not_run(e), "", "", "", ""))
            continue
        best, fail = m3_ceiling(e)
        rows.append(
            (
                label(p),
                f"**{fmt_int(best[0])}/s**" if best else "none",
                f"{best[1].dps:,.0f}" if best else "–",
                fmt_ms(best[1].lat.get("p99")) if best else "–",
                f"{fmt_int(fail[0])}/s: {fail[1]}" if fail else "all steps sustained",
                f"{best[1].loadgen_busy:.0%}" if best else "–",
            )
        )
        by_rate = {rate: run for rate, run in steps}
        m3_series.append((p, [by_rate[x].lat.get("p99") if x in by_rate else None for x in all_rates]))
    md.append(
        table(
            [
                "peer",
                "highest sustained rate",
                "deliveries/s there",
                "p99 there (ms)",
                "first step not sustained",
                "sse-load busy there",
            ],
            rows,
        )
    )
    md.append("\nEvery step (a step that was not sustained is run a second time; both are listed):\n")
    rows = []
    for p in order:
        for rate, runs in sorted(m3_attempts(peers[p]).items()):
            for k, r in enumerate(runs):
                ok, why = r.verdict()
                busy = r.cpu_run / r.run_window if r.cpu_run is not None and r.run_window else None
                rows.append(
                    (
                        label(p),
                        fmt_int(rate) + (" (2nd try)" if k else ""),
                        f"{fmt_int(r.pub_accepted)}/{fmt_int(r.pub_planned)}",
                        f"{r.dps:,.0f}",
                        pct(r.delivered),
                        fmt_ms(r.lat.get("p50")),
                        fmt_ms(r.lat.get("p99")),
                        fmt_num(r.cpu_per_m),
                        f"{busy:.0%}" if busy is not None else "–",
                        f"{r.core_busy:.0%}" if getattr(r, "core_busy", None) is not None else "–",
                        f"{r.loadgen_busy:.0%}",
                        "ok" if ok else why,
                    )
                )
    md.append(
        table(
            [
                "peer",
                "events/s",
                "accepted",
                "deliveries/s",
                "delivered",
                "p50 (ms)",
                "p99 (ms)",
                "CPU-s/10⁶",
                "server process busy",
                "CPU 0 busy",
                "sse-load busy",
                "verdict",
            ],
            rows,
        )
    )
    md.append("")
    if line_chart(
        os.path.join(plots_dir, "m3_p99_by_rate.svg"),
        f"M3: p99 latency by publish rate ({fmt_int(p3.get('streams', 0))} subscribers)",
        [tick_label(x) for x in all_rates],
        m3_series,
        "p99 latency (ms, log scale)",
        note="events/s published; a missing point means the ramp had stopped",
    ):
        md.append(f"![M3 p99]({rel_plots}/m3_p99_by_rate.svg)\n")

    # ---- M4 and M4b
    for tag, intro in (
        (
            "M4",
            "As specified in issue 6. On this machine it is an overload for every peer: 8,000 readers × "
            "200 events/s of 1 KiB is 1.6 million deliveries and 1.6 GB/s a second through one server "
            "core and one load-generator core, so the readers fall behind too and the figures show how "
            "each peer fails: by shedding (sse-edge drops the oldest queued frames and says so with "
            "`event: gap`), by slowing the publisher (the answer latency grows) or by queueing.",
        ),
        (
            "M4b",
            "M4 at a tenth of the rate (still about 160 MB/s of deliveries through one core): the cost of "
            "the stalled streams for a peer that can otherwise keep up. The stalled streams' data first "
            "fills their kernel socket buffers (not in RSS), so RSS growth shows only what queues "
            "beyond them.",
        ),
    ):
        p4 = params.get(tag, {})
        if not any(run_of(peers[p], tag) for p in order) and not p4:
            continue
        slow = p4.get("slow", 0.2)
        md.append(
            f"## {tag} — slow consumers: {fmt_int(p4.get('streams', 0))} subscribers, {slow:.0%} never read, "
            f"{p4.get('rate', '?')} events/s of {p4.get('payload', '?')} B for {p4.get('seconds', '?')} s\n"
        )
        md.append(intro + "\n")
        rows, lat_series = [], []
        for p in order:
            e = peers[p]
            r = run_of(e, tag)
            if not r:
                rows.append((label(p), not_run(e)) + ("",) * 11)
                continue
            n_slow = r.planned - r.readers if r.planned else 0
            rows.append(
                (
                    label(p),
                    "**" + spread(r, lambda x: x.rss_growth, fmt_bytes) + "**",
                    fmt_bytes(r.rss_growth / n_slow) if n_slow and r.rss_growth is not None else "–",
                    spread(r, lambda x: getattr(x, "kernel_tcp_growth", None), fmt_bytes),
                    fmt_ms(r.lat.get("p50")),
                    "**" + spread(r, lambda x: x.lat.get("p99"), fmt_ms) + "**",
                    fmt_ms(r.lat.get("max")),
                    f"**{pct(r.of_scheduled)}** ({pct(r.delivered)} of accepted; {fmt_int(r.holes)} gaps; "
                    f"{fmt_int(r.streams_missing)} streams short at the end)",
                    f"{r.dps:,.0f}",
                    fmt_int(r.gap_notices),
                    f"{pct(r.accepted_share)}, p99 {fmt_ms(r.pub_lat.get('p99'))} ms",
                    spread(r, lambda x: x.cpu_per_m, fmt_num),
                    f"{r.core_busy:.0%}" if getattr(r, "core_busy", None) is not None else "–",
                )
            )
            lat_series.append((p, hist_quantiles(r.lat_hist, LATENCY_QS)))
        md.append(
            table(
                [
                    "peer",
                    "server RSS growth",
                    "per stalled stream",
                    "kernel TCP memory growth (host)",
                    "readers p50 (ms)",
                    "readers p99 (ms)",
                    "readers max (ms)",
                    "readers: delivered of scheduled",
                    "deliveries/s",
                    "gap notices",
                    "publishes accepted, answer p99",
                    "CPU-s/10⁶",
                    "CPU 0 busy",
                ],
                rows,
            )
        )
        md.append(
            "\nRSS growth is from all-ready to the end of the drain: what queued frames cost (the "
            "stalled streams', and the readers' when they fall behind). Readers' figures are over the "
            "reading streams only. Only sse-edge tells a client about lost events (`event: gap`). "
            "Kernel TCP memory is host-wide, from `/proc/net/sockstat` (all TCP sockets, the load "
            "generator's receive queues included, which are the same for every peer); its growth is "
            "the peak during the run − all streams ready. A stalled stream's backlog that sits in "
            "kernel socket buffers is not in RSS, so the two columns together are what queued data "
            "cost. 'gaps' = sequence holes in the readers' streams (an event missing before a later "
            "one arrived: lost); 'streams short at the end' = readers still missing events when "
            "sse-load's drain window closed, which includes readers that were only behind (the load "
            "generator's core is saturated in M4).\n"
        )
        name = tag.lower()
        if line_chart(
            os.path.join(plots_dir, f"{name}_latency.svg"),
            f"{tag}: readers' latency, {fmt_int(p4.get('streams', 0))} streams ({slow:.0%} stalled), "
            f"{p4.get('rate', '?')} ev/s of {p4.get('payload', '?')} B",
            ["p50", "p90", "p99", "p99.9", "max"],
            lat_series,
            "latency (ms, log scale)",
        ):
            md.append(f"![{tag} latency]({rel_plots}/{name}_latency.svg)\n")

    # ---- sse-edge against the best peer
    md.append("## Where sse-edge is not first\n")
    losses = compare(peers, order)
    md.append(
        "Computed: every figure where another peer did better. Latency and CPU are compared only "
        "against peers that delivered at least as much of the schedule as sse-edge.\n"
    )
    md.append("\n".join(f"- {x}" for x in losses) if losses else "- none: sse-edge is first on every figure above.")
    md.append("")

    # ---- notes
    md.append("## Notes on the peers\n")
    notes = []
    pp = peers.get("pushpin")
    if pp:
        path = pp.get("publish_path") or "?"
        notes.append(
            "**Pushpin** is a proxy: a GRIP origin (`benches/peers/pushpin/origin.js`, Node) answers each "
            "`GET /events` with `Grip-Hold: stream` + `Grip-Channel`, and sse-load's `POST /publish?topic=` "
            f"goes through: {path}. The adapter answers 202 at once and batches events into control-API "
            "requests (one in flight). The origin/adapter process is pinned to CPU 0 with Pushpin and is "
            "included in Pushpin's RSS and CPU; the per-process split is below. Tuned: `message_rate=0` "
            "(the Debian default 2,500/s throttles deliveries node-wide) and `message_hwm=1000000`; "
            "`log_level=1` (no per-request log). Debian runs zurl (the proxy's HTTP client) as a system "
            "service; the runner starts a private one here."
        )
        for tag in ("M2", "M2h", "M4"):
            t = component_table(pp, tag, ticks_per_s)
            if t:
                notes.append(f"Pushpin processes during {tag}:\n\n{t}")
        if pp["skipped"]:
            notes.append(f"Pushpin was skipped: {pp['skipped']}")
    se = peers.get("sse-edge")
    if se:
        rows = []
        for tag in sorted(se["all"], key=tag_key):
            h = prom_hist(os.path.join(outdir, "sse-edge", tag + ".metrics"), "sse_delivery_lag_seconds")
            if not h:
                continue
            r = se["all"][tag]["run"]
            q = [prom_quantile(h, x) for x in (0.5, 0.99)]
            rows.append(
                (
                    tag,
                    f"≤ {fmt_ms(q[0] * 1000)} / ≤ {fmt_ms(q[1] * 1000)}",
                    f"{fmt_ms(r.lat.get('p50'))} / {fmt_ms(r.lat.get('p99'))}",
                )
            )
        if rows:
            notes.append(
                "**sse-edge's own delivery lag** (its `sse_delivery_lag_seconds` histogram: hub accept → "
                "bytes taken by the kernel, read from `/metrics` after each run; bucket upper bounds) "
                "against the end-to-end latency sse-load measured (publish write → event parsed). "
                "Where the two are close, the latency is the server's; the rest is the publish "
                "request, the kernel and the load generator.\n\n"
                + table(["run", "server lag p50 / p99 (ms)", "end-to-end p50 / p99 (ms)"], rows)
            )
    nc = peers.get("nchan")
    if nc:
        n_id = sum(v["run"].id_format_errors for v in nc["all"].values())
        notes.append(
            "**nchan** ids are `<unix time>:<tag>` (e.g. `1795317700:0`), not integers, so sse-load "
            f"counts one 'non-numeric id' per event ({fmt_int(n_id)} over the whole run) and cannot "
            "check nchan's id order; missing/ordering checks use the stamped lane/seq in the data, as "
            "for every peer. nginx: 1 worker, `worker_connections 16384`, `worker_rlimit_nofile "
            "20000`, `access_log off`, `nchan_message_buffer_length 100`, `nchan_message_timeout 60s`."
        )
    notes.append(
        "**axum** and **Node** send `Transfer-Encoding: chunked` streams (as does Pushpin's condure), "
        "which sse-load does not decode: a chunk-size line reads as an ignored SSE field and the chunk's "
        "CRLF as an empty line, which is harmless while every chunk carries whole lines (each writes one "
        "event per chunk). Counted bytes include the framing. A chunk split inside a line would show as "
        "'other events' (data that is not a stamp; for sse-edge these are its `system.overloaded` / "
        "`system.recovered` notices): "
        + ", ".join(
            f"{label(p)} {fmt_int(sum(v['run'].other_events for v in peers[p]['all'].values()))}" for p in order
        )
        + "."
    )
    notes.append(
        "Each of axum, Node and the Pushpin origin sends a `: ok` comment when a stream opens (nchan sends "
        "`: hi`, sse-edge `retry:` + `: ok`) so sse-load can tell the stream is live before the first "
        "event; without it axum would say nothing until its 15 s keep-alive."
    )
    errs = []
    for p in order:
        for tag, v in sorted(peers[p]["all"].items(), key=lambda kv: tag_key(kv[0])):
            r = v["run"]
            if r.sub_errors:
                errs.append(f"{label(p)} {tag}: subscriber errors {r.sub_errors}")
            if r.pub_errors:
                errs.append(f"{label(p)} {tag}: publisher errors {r.pub_errors}")
            bad = {k: n for k, n in r.pub_statuses.items() if not k.startswith("2")}
            if bad:
                errs.append(f"{label(p)} {tag}: publish statuses {bad}")
            if r.lost:
                errs.append(f"{label(p)} {tag}: {r.lost} streams closed by the server during the run")
    if errs:
        notes.append("Errors seen:\n\n" + "\n".join(f"- {x}" for x in errs))
    md.append("\n\n".join(notes))
    md.append("")

    md.append("## Appendix: commands and load average\n")
    md.append(
        "Every command below ran as `nice -n -15 taskset -c 1 target/release/sse-load ...` (the binary "
        "copied to `benches/out/<mode>/bin/` at the start, like the sse-edge one, so a rebuild cannot "
        "change them mid-run).\n"
    )
    rows = []
    for p in order:
        e = peers[p]
        for tag in sorted(e["all"], key=tag_key):
            v = e["all"][tag]
            cmd = v["cmd"].split(" sse-load ", 1)[-1]
            cmd = " ".join(w for w in cmd.split() if not w.startswith("/"))
            fs = foreign_share(v, ticks_per_s)
            rows.append((label(p), tag, v["loadavg"] or "?", "–" if fs is None else f"{fs:.0%}", f"`{cmd}`"))
    md.append(
        table(
            ["peer", "run", "load avg before", "others on CPU 0", "sse-load arguments (paths left out)"], rows
        )
    )
    md.append("")
    # The overload benchmark's section (benches/peers/overload.py) is written by its own run:
    # kept as it is.
    kept = ""
    if os.path.exists(results):
        with open(results) as f:
            old = f.read()
        marks = [at for at in (old.find(m) for m in SECTION_MARKS) if at >= 0]
        if marks:
            kept = "\n" + old[min(marks):]
    with open(results, "w") as f:
        f.write("\n".join(md) + "\n" + kept)


# Where RESULTS.md's overload section (benches/peers/overload.py) starts.
OVERLOAD_MARK = "<!-- overload.py: the section below is written by benches/peers/overload.py -->"
# Where RESULTS.md's latency/CPU frontier section (benches/peers/frontier.py) starts.
FRONTIER_MARK = "<!-- frontier.py: the section below is written by benches/peers/frontier.py -->"
# Where RESULTS.md's small-outbox section (benches/peers/outbox.py) starts.
OUTBOX_MARK = "<!-- outbox.py: the section below is written by benches/peers/outbox.py -->"
# Sections other scripts write after this report; each runs from its mark to the next one.
SECTION_MARKS = [OVERLOAD_MARK, FRONTIER_MARK, OUTBOX_MARK]


def write_section(results, mark, title, intro, md, svg=None, alt=""):
    """Replaces the section from `mark` up to the next section mark (or the end) of
    `results` (or appends one): `mark`, the `## title` heading, `intro`, the table `md` and,
    with `svg`, the plot's link (alt text `alt`) relative to `results`."""
    section = f"{mark}\n\n## {title}\n\n" + (intro.strip() + "\n\n" if intro.strip() else "") + md
    if svg:
        rel = os.path.relpath(svg, os.path.dirname(os.path.abspath(results)))
        section += f"\n![{alt}]({rel})\n"
    with open(results) as f:
        old = f.read()
    at = old.find(mark)
    if at < 0:
        new = old.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        ends = [e for e in (old.find(m, at + len(mark)) for m in SECTION_MARKS) if e >= 0]
        end = min(ends) if ends else len(old)
        rest = old[end:]
        new = old[:at] + section.rstrip("\n") + "\n" + ("\n" + rest if rest else "")
    with open(results, "w") as f:
        f.write(new)


def compare(peers, order):
    """Figures where some peer beats sse-edge."""
    se = peers.get("sse-edge")
    if not se:
        return ["sse-edge was not run"]
    out = []

    def check(tag, name, get, lower_better=True, fmt=str, same_work=True):
        """same_work: only peers that delivered at least as much of the schedule as sse-edge
        (a latency or CPU figure over a fraction of the work is not a win)."""
        mine = run_of(se, tag)
        if not mine or get(mine) is None:
            return
        m = get(mine)
        for p in order:
            if p == "sse-edge":
                continue
            r = run_of(peers[p], tag)
            if not r or get(r) is None:
                continue
            if same_work and not (r.of_scheduled >= mine.of_scheduled - 0.001):
                continue
            o = get(r)
            if (o < m) if lower_better else (o > m):
                out.append(f"{tag} {name}: {label(p)} {fmt(o)} vs sse-edge {fmt(m)}")

    ms = lambda x: f"{fmt_ms(x)} ms"  # noqa: E731
    check("M1", "RSS per stream", lambda r: r.rss_per_stream, fmt=fmt_bytes, same_work=False)
    check("M1", "first-byte p99", lambda r: r.ttfb.get("p99"), fmt=ms, same_work=False)
    for tag in ("M2", "M2h"):
        check(tag, "p99 latency", lambda r: r.lat.get("p99"), fmt=ms)
        check(tag, "p50 latency", lambda r: r.lat.get("p50"), fmt=ms)
        check(tag, "CPU-s per 10⁶ deliveries", lambda r: r.cpu_per_m, fmt=lambda x: f"{x:.2f}")
        check(tag, "delivered of scheduled", lambda r: r.of_scheduled, lower_better=False, fmt=pct, same_work=False)
    for tag in ("M4", "M4b"):
        check(tag, "readers' p99", lambda r: r.lat.get("p99"), fmt=ms)
        check(tag, "RSS growth", lambda r: r.rss_growth, fmt=fmt_bytes, same_work=False)
        check(tag, "CPU-s per 10⁶ deliveries", lambda r: r.cpu_per_m, fmt=lambda x: f"{x:.2f}")
        check(tag, "readers: delivered of scheduled", lambda r: r.of_scheduled, lower_better=False, fmt=pct, same_work=False)
        check(tag, "readers: delivered of accepted", lambda r: r.delivered, lower_better=False, fmt=pct, same_work=False)
    mine, _ = m3_ceiling(se)
    for p in order:
        if p == "sse-edge":
            continue
        best, _ = m3_ceiling(peers[p])
        if best and (not mine or best[0] > mine[0]):
            out.append(f"M3 highest sustained rate: {label(p)} {best[0]:,}/s vs sse-edge {mine[0] if mine else 0:,}/s")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", nargs="?")
    ap.add_argument("--results", help="RESULTS.md to write (default OUTDIR/RESULTS.md)")
    ap.add_argument("--plots", help="directory for the SVG plots (default OUTDIR/plots)")
    ap.add_argument("--summary", metavar="RUN_JSON")
    ap.add_argument("--verdict", metavar="RUN_JSON")
    a = ap.parse_args()
    if a.summary:
        print(summary(a.summary))
        return 0
    if a.verdict:
        r = load(a.verdict)
        if r is None:
            print("fail: no report")
            return 0
        ok, why = Run(r).verdict()
        print(("ok: " if ok else "fail: ") + why)
        return 0
    if not a.outdir:
        ap.error("OUTDIR, --summary or --verdict is required")
    results = a.results or os.path.join(a.outdir, "RESULTS.md")
    plots = a.plots or os.path.join(a.outdir, "plots")
    write_results(a.outdir, results, plots)
    print(f"wrote {results} and {plots}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
