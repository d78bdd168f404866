#!/usr/bin/env bash
# relay-sim against the direct mesh, interleaved: each round runs relay-sim on select, poll and
# epoll, then the peers' direct mesh, so the machine's drift within a sitting hits both alike.
# docs/performance.md ("Half the direct mesh") shows a run of it.
#
#   harness/bench/interleave.sh                  # 21 rounds of 8 x 10,000, Unix sockets
#   ROUNDS=9 N=8 M=100000 harness/bench/interleave.sh
#   BASE=/tmp/old/target/release/relay-sim harness/bench/interleave.sh   # a change against its parent
#
# env: ROUNDS (21), N (8), M (10000), PEERS_DIR (../shared/peers; its run.sh builds meshbench),
# BASE (another relay-sim binary, e.g. the previous commit's, run on select in every round
# beside this one: "relay-sim/base").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-21}
N=${N:-8}
M=${M:-10000}
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
MB=${CARGO_TARGET_DIR_PEERS:-/tmp/peers-target}/release/meshbench
cargo build --release -q --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release/relay-sim
if [ ! -x "$MB" ]; then
  CARGO_TARGET_DIR=$(dirname "$(dirname "$MB")") cargo build --release -q --manifest-path "$PEERS_DIR/Cargo.toml"
fi
CSV=$(mktemp)
trap 'rm -f "$CSV"' EXIT
"$MB" csv-header > "$CSV"
for i in $(seq 1 "$ROUNDS"); do
  for be in select poll epoll; do
    "$BIN" --clients "$N" --msgs "$M" --payload 64 --seed "$i" --backend "$be" --json |
      python3 -c "import json,sys; r=json.load(sys.stdin); assert r['verdict']=='pass', r['failure']; print('relay-sim/$be', r['throughput']['msgs_per_s'])"
  done
  if [ -n "${BASE:-}" ]; then
    "$BASE" --clients "$N" --msgs "$M" --payload 64 --seed "$i" --backend select --json |
      python3 -c "import json,sys; r=json.load(sys.stdin); assert r['verdict']=='pass', r['failure']; print('relay-sim/base', r['throughput']['msgs_per_s'])"
  fi
  "$MB" run --system direct --transport uds --addr "" --n "$N" --m "$M" --seed "$i" --label direct \
    --server-pid "" --out "$CSV" >/dev/null
  tail -1 "$CSV" | awk -F, '{print "direct", $6}'
done | python3 -c "
import sys, statistics, collections
d = collections.defaultdict(list)
for line in sys.stdin:
    k, x = line.split(); d[k].append(float(x))
ref = statistics.median(d['direct'])
print(f'== mesh-$N-$M, $ROUNDS interleaved rounds: median messages/s (range), ratio to the direct mesh')
for k, v in d.items():
    m = statistics.median(v)
    print(f'  {k:18} {m:>12,.0f}  ({min(v):,.0f}-{max(v):,.0f})  x{m / ref:5.2f}')
"
