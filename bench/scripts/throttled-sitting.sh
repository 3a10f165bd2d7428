#!/usr/bin/env bash
# The traffic-shaping sitting (docs/benchmarks.md, "Traffic shaping (issue
# 7)"): PAIRS (default 5) pairs of runs of throttled.toml and
# throttled-baseline.toml (ABBA order), release build; each run with a CPU
# sampler (cpu-sample.py); shaping-plot's figures of every throttled run;
# then the summary (throttled-summary.py): per run and medians, the
# unthrottled domains' steady rate in both runs and its ratio, CPU over the
# same window, and the shaped domains' figures.
#
#   cargo build --release --bins -p sluice -p sluice-bench
#   bash bench/scripts/throttled-sitting.sh [OUTDIR] [SINK_PORT]
#
# SINK_PORT (default 2625, the scenarios' own) moves the sink when another
# run holds the port; nothing else changes. BIN overrides the directory of
# the binaries (default target/release). Loopback only. About 3 minutes a
# pair on a quiet machine.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/sluice-throttled-sitting}
port=${2:-2625}
bin=${BIN:-target/release}
pairs=${PAIRS:-5}
mkdir -p "$out/scenarios"
cp bench/scenarios/throttled.toml bench/scenarios/throttled-baseline.toml "$out/scenarios/"
sed -i "s/^port = 2625$/port = $port/" "$out"/scenarios/*.toml
echo "# sitting $(date -u +%FT%TZ) nproc=$(nproc) kernel=$(uname -r) load=$(cut -d' ' -f1-3 /proc/loadavg) commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src bench/src || echo '+dirty')" > "$out/log.txt"
# Each run starts once the machine has been quiet (under QUIET% busy, default
# 10, over 5 s; at most 15 minutes of waiting): other work on the cores
# (builds, tests) skews the throughput. The summary still shows, per run,
# the CPU other processes took during the measured window.
quiet() {
  local limit=${QUIET:-10} deadline=$((SECONDS + 900)) a b
  while [ $SECONDS -lt $deadline ]; do
    a=$(head -1 /proc/stat); sleep 5; b=$(head -1 /proc/stat)
    python3 -c "import sys
a=[int(x) for x in sys.argv[1].split()[1:9]]; b=[int(x) for x in sys.argv[2].split()[1:9]]
d=[y-x for x,y in zip(a,b)]; busy=100*(sum(d)-d[3]-d[4])/max(1,sum(d))
sys.exit(0 if busy < float(sys.argv[3]) else 1)" "$a" "$b" "$limit" && return 0
  done
  echo "$(date -u +%T) machine not quiet after 15 min; running anyway" >> "$out/log.txt"
}
run() { # scenario name, output stem
  quiet
  "$bin/sluice-bench" run "$out/scenarios/$1.toml" --sut-binary "$bin/sluice" --quiet --json "$out/$2.json" > "$out/$2.txt" 2>&1 &
  local pid=$!
  python3 bench/scripts/cpu-sample.py $pid "$out/cpu-$2.jsonl" &
  local sampler=$!
  wait $pid; local rc=$?
  wait $sampler
  echo "$(date -u +%T) $2 rc=$rc $(grep -E 'steady rate|missing|complete' "$out/$2.txt" | tr -s ' ' | tr '\n' ';')" >> "$out/log.txt"
}
# Pairs in ABBA order (throttled first in odd pairs, baseline first in even
# ones): a machine whose speed drifts during the sitting then favours
# neither side.
for i in $(seq "$pairs"); do
  if [ $((i % 2)) = 1 ]; then
    run throttled "throttled-$i"
    run throttled-baseline "baseline-$i"
  else
    run throttled-baseline "baseline-$i"
    run throttled "throttled-$i"
  fi
  "$bin/shaping-plot" "$out/throttled-$i.json" "$out/plots-$i" d0.test d1.test d2.test d3.test d5.test d4.test > "$out/figures-$i.md" 2>/dev/null
done
echo "# done $(date -u +%FT%TZ) load=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/log.txt"
python3 bench/scripts/throttled-summary.py "$out" | tee "$out/summary.md"
cat "$out/log.txt"
