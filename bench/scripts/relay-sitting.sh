#!/usr/bin/env bash
# The end-to-end part of a benchmark sitting (docs/benchmarks.md, sitting 2):
# three rounds of the load generator's ceiling and the relay scenarios, back
# to back, each round in the same order, so ratios compare like with like.
#
#   cargo build --release --workspace
#   bash bench/scripts/relay-sitting.sh [OUTDIR] [SINK_PORT]
#
# SINK_PORT (default 2625, the scenarios' own) moves the sink when another
# run holds the port; nothing else changes. Needs root for the Postfix
# comparison (it starts a private Postfix). Loopback only.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/sluice-relay-sitting}
port=${2:-2625}
bin=target/release
mkdir -p "$out/scenarios"
cp bench/scenarios/*.toml "$out/scenarios/"
sed -i "s/^port = 2625$/port = $port/" "$out"/scenarios/*.toml
echo "# sitting $(date -u +%FT%TZ) nproc=$(nproc) kernel=$(uname -r) load=$(cut -d' ' -f1-3 /proc/loadavg) commit=$(git rev-parse --short HEAD)" > "$out/summary.txt"
for i in 1 2 3; do
  $bin/sluice-bench sink --listen 127.0.0.1:2600 --no-tls > "$out/sink-$i.txt" 2>&1 & sp=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/2600) 2>/dev/null && break; sleep 0.05; done
  $bin/sluice-bench inject --target 127.0.0.1:2600 --connections 50 --messages 100000 --size 1024 --quiet --json "$out/ceiling-$i.json" > /dev/null 2>&1
  kill -INT $sp; wait $sp 2>/dev/null
  echo "ceiling $i $(grep -o '"msgs_per_sec": [0-9.]*' "$out/ceiling-$i.json")" >> "$out/summary.txt"
  for sc in relay-1k relay-1k-journal relay-1k-postfix fanout hung-baseline hung crash; do
    extra=""
    [ "$sc" = relay-1k-postfix ] && extra="--messages 20000"
    $bin/sluice-bench run "$out/scenarios/$sc.toml" --sut-binary $bin/sluice --quiet $extra --json "$out/$sc-$i.json" > "$out/$sc-$i.txt" 2>&1
    python3 - "$out/$sc-$i.json" "$sc" "$i" >> "$out/summary.txt" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c = d.get('crash') or {}
print(sys.argv[2], sys.argv[3],
      "e2e_msgs_s=%.0f" % (d.get('end_to_end_msgs_per_sec') or 0),
      "e2e_secs=%.3f" % (d.get('end_to_end_secs') or 0),
      "inject=%.0f" % d['inject_msgs_per_sec'], "expected=%d" % d['expected'],
      "delivered=%d" % d['delivered'], "missing=%d" % d['missing'],
      "dups=%d" % d['duplicates'], "unacked_delivered=%d" % d['unacknowledged_delivered'],
      "conns=%d" % d['sink']['connections'],
      ("kills=%s failed_txns=%s" % (c.get('kills'), c.get('failed_transactions'))) if c else "")
PY
  done
done
echo "# done $(date -u +%FT%TZ) load=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/summary.txt"
cat "$out/summary.txt"
