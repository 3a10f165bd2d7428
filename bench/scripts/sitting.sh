#!/usr/bin/env bash
# One benchmark sitting: every figure in docs/benchmarks.md, measured back to
# back on the same machine so the ratios are comparable. Each measurement runs
# RUNS times (default 3); the table in docs/benchmarks.md reports medians.
#
#   cargo build --release --workspace
#   bash bench/scripts/sitting.sh [OUTDIR]
#
# Needs Postfix's smtp-source/smtp-sink (Debian package postfix) and root (the
# Postfix relay comparison starts a private Postfix). Loopback only.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/tmp/sluice-sitting}
runs=${RUNS:-3}
mkdir -p "$out"
bin=target/release
N=${N:-100000}

say() { printf '%s\n' "$*" | tee -a "$out/summary.txt"; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

: > "$out/summary.txt"
say "# sitting $(date -u +%FT%TZ) nproc=$(nproc) kernel=$(uname -r)"
say "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. The tool's own ceiling: injector straight into the sink.
for i in $(seq "$runs"); do
  $bin/sluice-bench sink --listen 127.0.0.1:2600 --no-tls > "$out/sink-$i.txt" 2>&1 & sp=$!
  wait_port 2600
  $bin/sluice-bench inject --target 127.0.0.1:2600 --connections 50 --messages "$N" --size 1024 --quiet --json "$out/ceiling-$i.json" > "$out/ceiling-$i.txt" 2>&1
  kill -INT $sp; wait $sp 2>/dev/null
  say "ceiling run $i: $(grep -o '"msgs_per_sec": [0-9.]*' "$out/ceiling-$i.json")"
done

# 2. Postfix's own pair: smtp-source -> smtp-sink.
for i in $(seq "$runs"); do
  smtp-sink -u nobody -c 127.0.0.1:2601 1000 > /dev/null 2>&1 & sp=$!
  wait_port 2601
  s=$(date +%s.%N)
  smtp-source -d -s 50 -l 1024 -m "$N" 127.0.0.1:2601 > /dev/null 2>&1
  e=$(date +%s.%N)
  kill $sp; wait $sp 2>/dev/null
  say "smtp-source->smtp-sink run $i: $(echo "$N / ($e - $s)" | bc -l | cut -d. -f1) msgs/s"
done

# 3. Sluice ingress alone (ack = memory, route = discard).
cat > "$out/ingress.toml" <<CFG
hostname = "sluice.bench.test"
ack = "memory"
route = "discard"
state_dir = "$out"
[smtp]
listen = ["127.0.0.1:2602"]
[log]
level = "warn"
CFG
for i in $(seq "$runs"); do
  $bin/sluice serve --config "$out/ingress.toml" > "$out/sluice-ingress-$i.txt" 2>&1 & sp=$!
  wait_port 2602
  $bin/sluice-bench inject --target 127.0.0.1:2602 --connections 50 --messages "$N" --size 1024 --quiet --json "$out/ingress-$i.json" > "$out/ingress-$i.txt" 2>&1
  s=$(date +%s.%N)
  smtp-source -d -s 50 -l 1024 -m "$N" 127.0.0.1:2602 > /dev/null 2>&1
  e=$(date +%s.%N)
  kill -TERM $sp; wait $sp 2>/dev/null
  say "sluice ingress run $i: inject $(grep -o '"msgs_per_sec": [0-9.]*' "$out/ingress-$i.json"); smtp-source $(echo "$N / ($e - $s)" | bc -l | cut -d. -f1) msgs/s"
done

# 4. End to end through sluice and through Postfix (sluice-bench run).
for sc in relay-1k relay-1k-postfix fanout; do
  for i in $(seq "$runs"); do
    $bin/sluice-bench run "bench/scenarios/$sc.toml" --sut-binary "$bin/sluice" --json "$out/$sc-$i.json" > "$out/$sc-$i.txt" 2>&1
    say "$sc run $i: $(grep -oE '"(inject_msgs_per_sec|end_to_end_msgs_per_sec|delivered|missing|duplicates)": [0-9.]*' "$out/$sc-$i.json" | tr '\n' ' ') $(grep -o 'connections=[0-9]*' "$out/$sc-$i.txt" | tail -1)"
  done
done
# 5. The resolver: 10,000 synthetic domains cold, then warm.
for i in $(seq "$runs"); do
  cargo test --release -q --test resolver_bench -- --nocapture > "$out/resolver-$i.txt" 2>&1
  say "resolver run $i: $(grep -iE 'cold|warm|queries' "$out/resolver-$i.txt" | tr '\n' ' ')"
done

# 6. 10,000 idle inbound connections: peak RSS.
cargo test --release -q --test ingress_idle -- --nocapture > "$out/idle.txt" 2>&1
say "idle: $(grep -o 'idle-connections:.*' "$out/idle.txt")"
say "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
