#!/usr/bin/env bash
# Daemon-level recovery time for 1,000,000 pending recipients:
# 10,000 messages x 100 recipients into sluice (ack = journal) whose routes
# point at a closed port, so everything stays pending; SIGKILL; restart and
# read the journal recovery lines (three restarts; the "requeued in" line
# gives replay + requeue time per shard).
#
#   cargo build --release --workspace && bash bench/scripts/recovery-1m.sh [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/sluice-recovery}
rm -rf $out/state; mkdir -p $out/state
cat > $out/sluice.toml <<CFG
hostname = "sluice.bench.test"
ack = "journal"
route = "deliver"
state_dir = "$out/state"
[smtp]
listen = ["127.0.0.1:2702"]
max_recipients = 1000
[backpressure]
max_messages = 1000000
[delivery]
tls = "none"
connect_timeout = "1s"
retry = { intervals = ["1h"] }
[dns]
nameservers = ["127.0.0.1:9"]
[[dns.routes]]
domains = ["*.test"]
hosts = ["127.0.0.1:9"]
[log]
level = "warn"
[admin]
listen = "127.0.0.1:0"
CFG
target/release/sluice serve --config $out/sluice.toml > $out/first.log 2>&1 & sp=$!
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/2702) 2>/dev/null && break; sleep 0.05; done
target/release/sluice-bench inject --target 127.0.0.1:2702 --connections 20 --messages 10000 --rcpts 100 --size 1024 --quiet --json $out/inject.json > $out/inject.txt 2>&1
sleep 3
kill -9 $sp; wait $sp 2>/dev/null
du -sb $out/state/journal
for i in 1 2 3; do
  target/release/sluice serve --config $out/sluice.toml > $out/restart-$i.log 2>&1 & sp=$!
  for _ in $(seq 1200); do [ "$(grep -c 'requeued in' $out/restart-$i.log)" = "$(nproc)" ] && break; sleep 0.05; done
  grep "sluice: journal shard=" $out/restart-$i.log
  kill -9 $sp; wait $sp 2>/dev/null
done
