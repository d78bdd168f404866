#!/usr/bin/env bash
# What the relay's output bound costs: the same binary with two --max-buffer values, interleaved
# round by round at each payload size, so the machine's drift hits both alike. Prints, per
# payload size, the median messages/s of each bound, their ratio, and the relay's peak RSS.
# docs/performance.md ("The output bound") shows a run of it.
#
#   harness/bench/bound.sh                                 # 64KiB against 1MiB, 9 rounds
#   ROUNDS=15 SIZES="64 16384" A=64KiB B=256KiB harness/bench/bound.sh
#
# env: ROUNDS (9), N (8 clients), SIZES (payload bytes: 64 1024 16384 65536), A and B (the two
# bounds), BYTES (payload bytes per client and run: 64 MiB, so every size moves the same volume,
# with at least 10,000 messages per client).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-9}
N=${N:-8}
SIZES=${SIZES:-64 1024 16384 65536}
A=${A:-64KiB}
B=${B:-1MiB}
BYTES=${BYTES:-67108864}
cargo build --release -q --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release/relay-sim
for size in $SIZES; do
  m=$((BYTES / size))
  [ "$m" -ge 10000 ] || m=10000
  for i in $(seq 1 "$ROUNDS"); do
    for bound in "$A" "$B"; do
      "$BIN" --clients "$N" --msgs "$m" --payload "$size" --seed "$i" --max-buffer "$bound" --json |
        python3 -c "import json,sys; r=json.load(sys.stdin); assert r['verdict']=='pass', r['failure']; print('$size $bound', r['throughput']['msgs_per_s'], r['memory']['relay_kib'])"
    done
  done
done | python3 -c "
import sys, statistics, collections
rate, rss = collections.defaultdict(list), collections.defaultdict(list)
for line in sys.stdin:
    size, bound, x, kib = line.split()
    rate[(int(size), bound)].append(float(x)); rss[(int(size), bound)].append(int(kib))
print('== $N clients, $ROUNDS interleaved rounds: median messages/s (range), relay peak RSS (max)')
print('| payload | $A msg/s | $B msg/s | $A / $B | relay RSS $A | relay RSS $B |')
print('|---:|---:|---:|---:|---:|---:|')
for size in sorted({s for s, _ in rate}):
    a, b = rate[(size, '$A')], rate[(size, '$B')]
    ma, mb = statistics.median(a), statistics.median(b)
    print(f'| {size} B | {ma:,.0f} ({min(a):,.0f}-{max(a):,.0f}) | {mb:,.0f} ({min(b):,.0f}-{max(b):,.0f}) '
          f'| {ma / mb:.2f} | {max(rss[(size, \"$A\")]) / 1024:.1f} MiB | {max(rss[(size, \"$B\")]) / 1024:.1f} MiB |')
"
