#!/usr/bin/env bash
# Pipelined verdicts, before and after, same sitting: relay-1k (ack=memory)
# and relay-1k-journal, old binary (commit before 45ff35d) vs new.
# Usage: bash bench/scripts/pipelining-sitting.sh OLD_SLUICE_BINARY [OUTDIR]
# (build the old one from a worktree of the commit before 45ff35d).
set -uo pipefail
cd "$(dirname "$0")/../.."
old_bin=${1:?old sluice binary}
out=${2:-/tmp/sluice-pipelining-sitting}
mkdir -p $out/scenarios
cp bench/scenarios/relay-1k.toml bench/scenarios/relay-1k-journal.toml $out/scenarios/
sed -i "s/^port = 2625$/port = 2635/" $out/scenarios/*.toml
echo "# $(date -u +%FT%TZ) nproc=$(nproc) kernel=$(uname -r) load=$(cut -d' ' -f1-3 /proc/loadavg) new=$(git rev-parse --short HEAD) old=$old_bin" > $out/summary.txt
for i in 1 2 3; do
  target/release/sluice-bench sink --listen 127.0.0.1:2600 --no-tls > $out/sink-$i.txt 2>&1 & sp=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/2600) 2>/dev/null && break; sleep 0.05; done
  target/release/sluice-bench inject --target 127.0.0.1:2600 --connections 50 --messages 100000 --size 1024 --quiet --json $out/ceiling-$i.json > /dev/null 2>&1
  kill -INT $sp; wait $sp 2>/dev/null
  echo "ceiling $i $(grep -o '"msgs_per_sec": [0-9.]*' $out/ceiling-$i.json)" >> $out/summary.txt
  for sc in relay-1k relay-1k-journal; do
    for v in new old; do
      bin=target/release/sluice; [ $v = old ] && bin=$old_bin
      target/release/sluice-bench run $out/scenarios/$sc.toml --sut-binary $bin --quiet --json $out/$sc-$v-$i.json > $out/$sc-$v-$i.txt 2>&1
      python3 - $out/$sc-$v-$i.json $sc $v $i >> $out/summary.txt <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(sys.argv[2], sys.argv[3], sys.argv[4], "e2e_msgs_s=%.0f" % (d.get('end_to_end_msgs_per_sec') or 0),
      "inject=%.0f" % d['inject_msgs_per_sec'], "delivered=%d" % d['delivered'], "missing=%d" % d['missing'], "dups=%d" % d['duplicates'])
PY
    done
  done
done
echo "# done $(date -u +%FT%TZ) load=$(cut -d' ' -f1-3 /proc/loadavg)" >> $out/summary.txt
cat $out/summary.txt
