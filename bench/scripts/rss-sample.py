#!/usr/bin/env python3
"""Memory of the `sluice` process a `sluice-bench run` started, over time.

    rss-sample.py BENCH_PID OUT.jsonl [INTERVAL_SECS]

Until BENCH_PID exits, writes one JSON line per interval (default 1 s):
`t` (Unix time), `rss_kib` and `hwm_kib` (VmRSS and VmHWM, the peak, of
the sluice child of BENCH_PID; null before it runs). The last line with a
value carries the run's peak RSS.
"""
import json
import os
import sys
import time


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def child_named(ppid, name):
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.find("(") + 1 : text.rfind(")")]
        rest = text.rsplit(")", 1)[1].split()
        if comm == name and rest[1] == str(ppid):
            return int(entry)
    return None


def main():
    bench = int(sys.argv[1])
    out = open(sys.argv[2], "w")
    every = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    sut = None
    while os.path.exists(f"/proc/{bench}"):
        if sut is None or not os.path.exists(f"/proc/{sut}"):
            sut = child_named(bench, "sluice")
        line = {"t": time.time(), "rss_kib": None, "hwm_kib": None}
        if sut is not None:
            line["rss_kib"] = status_kib(sut, "VmRSS")
            line["hwm_kib"] = status_kib(sut, "VmHWM")
        out.write(json.dumps(line) + "\n")
        out.flush()
        time.sleep(every)


main()
