#!/usr/bin/env bash
# Before/after figures of one change, in one sitting, in ABBA order: the
# relay-1k, relay-1k-journal and crash scenarios run with binary A (before)
# and binary B (after) as A B B A A B, so drift in the machine's speed over
# the sitting falls on both sides alike. The bench itself (injector, sink,
# DNS stub) is the same binary for both.
#
#   cargo build --release --workspace                   # B, this checkout
#   (cd ../before && cargo build --release)             # A, the old commit
#   bash bench/scripts/abba-sitting.sh A_SLUICE B_SLUICE [OUTDIR] [SCENARIOS...]
#
# Loopback only. Prints one summary line per run and writes the JSON
# reports to OUTDIR (default /tmp/sluice-abba).
set -uo pipefail
cd "$(dirname "$0")/../.."
a=$1
b=$2
out=${3:-/tmp/sluice-abba}
shift 3 2>/dev/null || shift $#
scenarios=${*:-relay-1k relay-1k-journal crash}
bench=target/release/sluice-bench
mkdir -p "$out"
echo "# sitting $(date -u +%FT%TZ) nproc=$(nproc) kernel=$(uname -r) load=$(cut -d' ' -f1-3 /proc/loadavg) commit=$(git rev-parse --short HEAD) A=$a B=$b" > "$out/summary.txt"
i=0
for side in A B B A A B; do
  i=$((i + 1))
  bin=$a
  [ "$side" = B ] && bin=$b
  for sc in $scenarios; do
    $bench run "bench/scenarios/$sc.toml" --sut-binary "$bin" --quiet --json "$out/$sc-$i-$side.json" > "$out/$sc-$i-$side.txt" 2>&1
    python3 - "$out/$sc-$i-$side.json" "$sc" "$i" "$side" >> "$out/summary.txt" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print(sys.argv[2], sys.argv[3], sys.argv[4], "no report:", e)
    sys.exit()
c = d.get('crash') or {}
print(sys.argv[2], sys.argv[3], sys.argv[4],
      "e2e_msgs_s=%.0f" % (d.get('end_to_end_msgs_per_sec') or 0),
      "inject=%.0f" % d['inject_msgs_per_sec'], "expected=%d" % d['expected'],
      "delivered=%d" % d['delivered'], "missing=%d" % d['missing'],
      "dups=%d" % d['duplicates'],
      ("kills=%s failed_txns=%s" % (c.get('kills'), c.get('failed_transactions'))) if c else "")
PY
  done
done
echo "# done $(date -u +%FT%TZ) load=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/summary.txt"
cat "$out/summary.txt"
