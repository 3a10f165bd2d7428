#!/usr/bin/env python3
"""Summary of a traffic-shaping sitting (throttled-sitting.sh).

    throttled-summary.py OUTDIR

Reads OUTDIR/throttled-N.json and baseline-N.json (sluice-bench run
reports), cpu-throttled-N.jsonl / cpu-baseline-N.jsonl (cpu-sample.py) and
figures-N.md (shaping-plot's table of throttled-N.json), and prints
markdown: per run and median, the unthrottled domains' steady rate (the
reports' `steady`, computed by sluice-bench), its ratio throttled /
baseline, CPU over the same window, and the shaped domains' figures.
"""
import glob
import json
import os
import re
import statistics
import sys

TICK = os.sysconf("SC_CLK_TCK")


def load(path):
    with open(path) as f:
        return json.load(f)


def cpu_window(path, report):
    """CPU over the report's steady window: machine busy and steal shares
    (of all cores), and CPU seconds of sluice and of the bench process."""
    s = report.get("steady")
    if not s or not os.path.exists(path):
        return None
    t0 = report["started_unix"] + s["from_secs"]
    t1 = report["started_unix"] + s["to_secs"]
    rows = [json.loads(l) for l in open(path) if l.strip()]

    def at(t):
        # The first sample at or after t (samples every 0.25 s).
        for r in rows:
            if r["t"] >= t and r["sut"] is not None:
                return r
        return None

    a, b = at(t0), at(t1)
    if not a or not b or b["t"] <= a["t"]:
        return None
    d = [y - x for x, y in zip(a["cpu"], b["cpu"])]
    total = sum(d) or 1
    idle = d[3] + d[4]
    secs = b["t"] - a["t"]
    ncpu = os.cpu_count() or 1
    return {
        "busy": 100.0 * (total - idle) / total,
        # Busy time that was neither sluice nor the bench: other work on
        # the machine (builds, tests) competing for the cores.
        "other": max(0.0, 100.0 * (total - idle) / total
                     - 100.0 * ((b["sut"] - a["sut"]) + (b["bench"] - a["bench"])) / TICK / (secs * ncpu)),
        "steal": 100.0 * d[7] / total,
        "sut": (b["sut"] - a["sut"]) / TICK,
        "bench": (b["bench"] - a["bench"]) / TICK,
        "secs": secs,
    }


def figures(path):
    """shaping-plot's table: domain -> (rate, 4xx %, connections,
    suspended replies, connections while suspended)."""
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path):
        m = re.match(r"\| (d\d+\.test) \| ([\d.]+) \| ([\d.]+) \| (\d+) \| (\d+) \| (\d+) \|", line)
        if m:
            out[m.group(1)] = (
                float(m.group(2)),
                float(m.group(3)),
                int(m.group(4)),
                int(m.group(5)),
                int(m.group(6)),
            )
    return out


def first_last(report, domain):
    """Seconds to the domain's first delivery and to its last one."""
    pts = [(s["t"], s["domains"].get(domain, {}).get("accepted", 0)) for s in report["series"]]
    final = pts[-1][1] if pts else 0
    first = next((t for t, n in pts if n > 0), None)
    last = next((t for t, n in pts if n >= final and final > 0), None)
    return first, last


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    out = sys.argv[1]
    runs = sorted(
        int(re.search(r"throttled-(\d+)\.json$", p).group(1))
        for p in glob.glob(os.path.join(out, "throttled-*.json"))
    )
    rows = []
    for i in runs:
        t = load(os.path.join(out, f"throttled-{i}.json"))
        bpath = os.path.join(out, f"baseline-{i}.json")
        b = load(bpath) if os.path.exists(bpath) else None
        ts, bs = t.get("steady"), b.get("steady") if b else None
        f = figures(os.path.join(out, f"figures-{i}.md"))
        d5 = t["sink"]["domains"].get("d5.test", {})
        rows.append(
            {
                "i": i,
                "t": ts,
                "b": bs,
                "ratio": ts["rcpts_per_sec"] / bs["rcpts_per_sec"] if ts and bs else None,
                "tc": cpu_window(os.path.join(out, f"cpu-throttled-{i}.jsonl"), t),
                "bc": cpu_window(os.path.join(out, f"cpu-baseline-{i}.jsonl"), b) if b else None,
                "clean": t["missing"] == 0 and t["duplicates"] == 0 and t["complete"]
                and (b is None or (b["missing"] == 0 and b["duplicates"] == 0 and b["complete"])),
                "fig": f,
                "d3": first_last(t, "d3.test"),
                "d5": (d5.get("peak_rate"), d5.get("peak_connections_per_ip", {})),
                "t_secs": t.get("end_to_end_secs"),
                "b_secs": b.get("end_to_end_secs") if b else None,
            }
        )

    def line(label, fmt, get, median=True):
        vals = [get(r) for r in rows]
        cells = [fmt(v) if v is not None else "n/a" for v in vals]
        m = med(vals) if median else None
        mcell = f"**{fmt(m)}**" if m is not None else ""
        print(f"| {label} | " + " | ".join(cells) + f" | {mcell} |")

    print("| | " + " | ".join(f"pair {r['i']}" for r in rows) + " | median |")
    print("| --- | " + " | ".join("---:" for _ in rows) + " | ---: |")
    g = lambda k, f: (lambda r: r[k][f] if r[k] else None)
    line("unthrottled msgs/s, throttled run", "{:,.0f}".format, g("t", "rcpts_per_sec"))
    line("unthrottled msgs/s, baseline run", "{:,.0f}".format, g("b", "rcpts_per_sec"))
    line("**ratio throttled / baseline**", "{:.3f}".format, lambda r: r["ratio"])
    line("window, throttled (s)", "{}".format,
         lambda r: f"{r['t']['from_secs']:.1f}–{r['t']['to_secs']:.1f}" if r["t"] else None, False)
    line("window, baseline (s)", "{}".format,
         lambda r: f"{r['b']['from_secs']:.1f}–{r['b']['to_secs']:.1f}" if r["b"] else None, False)
    line("injector msgs/s in the window, throttled", "{:,.0f}".format, g("t", "injected_per_sec"))
    line("injector msgs/s in the window, baseline", "{:,.0f}".format, g("b", "injected_per_sec"))
    # CPU milliseconds per 1,000 messages = CPU seconds × 1e6 / messages.
    per_k = lambda c, s: 1e6 * c["sut"] / ((s["to_fraction"] - s["from_fraction"]) * s["recipients"])
    line("sluice CPU ms per 1,000 unthrottled msgs, throttled", "{:.1f}".format,
         lambda r: per_k(r["tc"], r["t"]) if r["tc"] and r["t"] else None)
    line("sluice CPU ms per 1,000, baseline", "{:.1f}".format,
         lambda r: per_k(r["bc"], r["b"]) if r["bc"] and r["b"] else None)
    per_kb = lambda c, s: 1e6 * c["bench"] / ((s["to_fraction"] - s["from_fraction"]) * s["recipients"])
    line("bench CPU ms per 1,000, throttled", "{:.1f}".format,
         lambda r: per_kb(r["tc"], r["t"]) if r["tc"] and r["t"] else None)
    line("bench CPU ms per 1,000, baseline", "{:.1f}".format,
         lambda r: per_kb(r["bc"], r["b"]) if r["bc"] and r["b"] else None)
    # The bench does the same work per message in both runs (inject, sink),
    # so its CPU per message is a yardstick of the machine's speed during
    # the run; sluice's cost relative to it separates extra work in sluice
    # from a machine that was slower in one run.
    rel = lambda c: c["sut"] / c["bench"] if c and c["bench"] else None
    line("sluice CPU / bench CPU, throttled", "{:.3f}".format, lambda r: rel(r["tc"]))
    line("sluice CPU / bench CPU, baseline", "{:.3f}".format, lambda r: rel(r["bc"]))
    line("**same, ratio throttled / baseline**", "{:.3f}".format,
         lambda r: rel(r["tc"]) / rel(r["bc"]) if rel(r["tc"]) and rel(r["bc"]) else None)
    line("other processes' CPU % / steal %, throttled", "{}".format,
         lambda r: f"{r['tc']['other']:.0f} / {r['tc']['steal']:.1f}" if r["tc"] else None, False)
    line("other processes' CPU % / steal %, baseline", "{}".format,
         lambda r: f"{r['bc']['other']:.0f} / {r['bc']['steal']:.1f}" if r["bc"] else None, False)
    fig = lambda d, k: (lambda r: r["fig"][d][k] if d in r["fig"] else None)
    line("d0 delivered msgs/s after 30 s (R = 25)", "{:.1f}".format, fig("d0.test", 0))
    line("d0 4xx % of attempts", "{:.1f}".format, fig("d0.test", 1))
    line("d1 delivered msgs/s (R = 25)", "{:.1f}".format, fig("d1.test", 0))
    line("d1 4xx %", "{:.1f}".format, fig("d1.test", 1))
    line("d2 delivered msgs/s (R = 20, 421 + close)", "{:.1f}".format, fig("d2.test", 0))
    line("d2 4xx %", "{:.1f}".format, fig("d2.test", 1))
    line("d3 suspended replies (attempts in the 60 s)", "{}".format, fig("d3.test", 3))
    line("d3 connections, whole run", "{}".format, fig("d3.test", 2))
    line("d3 first / last delivery (s)", "{}".format,
         lambda r: f"{r['d3'][0]:.1f} / {r['d3'][1]:.1f}" if r["d3"][0] else None, False)
    line("d5 sink peak msgs/s (limit 100)", "{}".format, lambda r: r["d5"][0])
    line("d5 sink peak connections per source IP (limit 2)", "{}".format,
         lambda r: ", ".join(f"{v}" for k, v in sorted(r["d5"][1].items())) or None, False)
    line("run length throttled / baseline (s)", "{}".format,
         lambda r: f"{r['t_secs']:.0f} / {r['b_secs']:.0f}" if r["t_secs"] and r["b_secs"] else None, False)
    line("clean (0 missing, 0 duplicates, complete)", "{}".format,
         lambda r: "yes" if r["clean"] else "NO", False)
    ratios = [r["ratio"] for r in rows if r["ratio"]]
    tm, bm = med([g("t", "rcpts_per_sec")(r) for r in rows]), med([g("b", "rcpts_per_sec")(r) for r in rows])
    if ratios and tm and bm:
        print()
        print(f"median of the pair ratios {med(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f});"
              f" ratio of the medians {tm / bm:.3f}")


if __name__ == "__main__":
    main()
