#!/usr/bin/env python3
"""CPU and memory use during a `sluice-bench run`, for lining up with its report.

    cpu-sample.py BENCH_PID OUT.jsonl [INTERVAL_SECS]

Until BENCH_PID exits, writes one JSON line per interval (default 0.25 s):
`t` (Unix time), `cpu` (the machine's /proc/stat "cpu" line: user nice
system idle iowait irq softirq steal, in clock ticks), `sut` (CPU ticks,
user + system, of the `sluice` process BENCH_PID started; null before it
runs), `bench` (the same for BENCH_PID: injector, sink, DNS stub), and
`sut_rss_kib` / `sut_hwm_kib` (the sluice process's VmRSS and its peak,
VmHWM; the last line with a value carries the run's peak RSS).
`throttled-summary.py` turns them into CPU seconds over the report's
steady window (the report's `started_unix` is the zero of its series).
"""
import json
import os
import sys
import time


def ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # After the command: state ppid ... utime (14th field) stime (15th).
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
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
        if comm == name and len(rest) > 1 and rest[1] == str(ppid):
            return int(entry)
    return None


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                return [int(x) for x in line.split()[1:9]]
    return []


def main():
    bench = int(sys.argv[1])
    out = open(sys.argv[2], "w")
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.25
    sut = None
    while True:
        if sut is None or ticks(sut) is None:
            sut = child_named(bench, "sluice")
        b = ticks(bench)
        if b is None:
            break
        out.write(
            json.dumps(
                {
                    "t": time.time(),
                    "cpu": machine(),
                    "sut": ticks(sut) if sut else None,
                    "bench": b,
                    "sut_rss_kib": status_kib(sut, "VmRSS") if sut else None,
                    "sut_hwm_kib": status_kib(sut, "VmHWM") if sut else None,
                }
            )
            + "\n"
        )
        out.flush()
        time.sleep(interval)


if __name__ == "__main__":
    main()
