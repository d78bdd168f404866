#!/usr/bin/env bash
# Side-by-side throughput: relay-sim on the peers' mesh workloads, then the peers themselves
# (../shared/peers/run.sh: the 2005 design in C, ZeroMQ, NATS, Redis, a direct mesh), in one
# sitting, and the ratios. docs/performance.md shows a run of it.
#
#   harness/bench/compare.sh                 # 5 reps, mesh-8-10000 and mesh-64-1000
#   REPS=3 SIZES="8:10000" PEERS=0 harness/bench/compare.sh    # relay-sim only
#
#   PATTERNS=pingpong harness/bench/compare.sh                 # round trips, 1 and 4 pairs
#
# env: PATTERNS ("mesh"; or "pingpong", or "mesh pingpong"), REPS (5), SIZES ("8:10000 64:1000"),
#      BACKENDS ("select poll epoll"), TRANSPORTS ("unix tcp"), PEERS (1: also run the peers),
#      PEERS_DIR (../shared/peers); for pingpong: PAIRS ("1 4"), ROUNDS (20000), SPINS ("auto off"),
#      PP_SYSTEMS (the peers: "direct seed zmq nats redis").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
REPS=${REPS:-5}
SIZES=${SIZES:-"8:10000 64:1000"}
BACKENDS=${BACKENDS:-"select poll epoll"}
TRANSPORTS=${TRANSPORTS:-"unix tcp"}
PEERS=${PEERS:-1}
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
OUT=${OUT:-/tmp/relay-sim-bench.csv}
PATTERNS=${PATTERNS:-mesh}
PAIRS=${PAIRS:-"1 4"}
ROUNDS=${ROUNDS:-20000}
SPINS=${SPINS:-"auto off"}
PP_SYSTEMS=${PP_SYSTEMS:-"direct seed zmq nats redis"}
OUT_PP=${OUT_PP:-/tmp/relay-sim-pingpong.csv}
has_pattern() { case " $PATTERNS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

cargo build --release -q --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release/relay-sim

if has_pattern pingpong; then
  echo "label,transport,pairs,rep,p50_us,p99_us" > "$OUT_PP"
  for p in $PAIRS; do
    for spin in $SPINS; do
      echo "-- pingpong-$p-$ROUNDS relay-sim/spin-$spin/unix x$REPS"
      for rep in $(seq 1 "$REPS"); do
        json=$("$BIN" --pattern pingpong --clients $((2 * p)) --msgs "$ROUNDS" --payload 64 \
               --seed "$rep" --relay-spin "$spin" --json)
        python3 - "$json" "relay-sim/spin-$spin" "$p" "$rep" >> "$OUT_PP" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); label, p, rep = sys.argv[2:5]
assert r["verdict"] == "pass", r["failure"]
print(f"{label},unix,{p},{rep},{r['latency_us']['p50']},{r['latency_us']['p99']}")
PY
      done
    done
  done
  if [ "$PEERS" = 1 ]; then
    REPS=$REPS PATTERNS=pingpong PAIRS=$PAIRS ROUNDS=$ROUNDS SYSTEMS=$PP_SYSTEMS \
      OUT_PP=/tmp/peers-pingpong.csv bash "$PEERS_DIR/run.sh" > /tmp/peers-pp.log 2>&1 \
      || { tail -20 /tmp/peers-pp.log; exit 1; }
  fi
  python3 - "$OUT_PP" /tmp/peers-pingpong.csv "$PEERS" <<'PY'
import csv, statistics, sys, collections
ours, peers_csv, with_peers = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
rows = collections.defaultdict(list)
for r in csv.DictReader(open(ours)):
    rows[(r["label"], r["transport"], int(r["pairs"]))].append(r)
if with_peers:
    for r in csv.DictReader(open(peers_csv)):
        if r.get("status") == "ok":
            rows[(r["label"], r["transport"], int(r["pairs"]))].append(r)
for p in sorted({k[2] for k in rows}):
    print(f"\n== pingpong, {p} pair(s): median over runs of p50 (p99) round trip, us (ratio to direct)")
    med = {k: (statistics.median(float(r["p50_us"]) for r in v),
               statistics.median(float(r["p99_us"]) for r in v)) for k, v in rows.items() if k[2] == p}
    ref = med.get(("direct", "uds", p), (None,))[0]
    for k in sorted(med, key=lambda k: med[k][0]):
        ratio = f"x{med[k][0] / ref:5.2f}" if ref else ""
        print(f"  {k[0]:<22} {k[1]:<5} {med[k][0]:>8.1f} ({med[k][1]:>6.1f})   {ratio}")
PY
fi
has_pattern mesh || exit 0

echo "system,transport,workload,rep,msgs_per_s,p50_us,p99_us,relay_rss_kib,wall_s" > "$OUT"
for size in $SIZES; do
  n=${size%%:*}; m=${size##*:}
  for backend in $BACKENDS; do
    for transport in $TRANSPORTS; do
      echo "-- mesh-$n-$m relay-sim/$backend/$transport x$REPS"
      for rep in $(seq 1 "$REPS"); do
        start=$(date +%s.%N)
        json=$("$BIN" --clients "$n" --msgs "$m" --payload 64 --seed "$rep" \
               --backend "$backend" --transport "$transport" --json)
        end=$(date +%s.%N)
        python3 - "$json" "$backend" "$transport" "$n-$m" "$rep" "$start" "$end" >> "$OUT" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); b, t, w, rep, s, e = sys.argv[2:8]
assert r["verdict"] == "pass", r["failure"]
l = r["latency_us"] or {}
print(f"relay-sim/{b},{t},{w},{rep},{r['throughput']['msgs_per_s']:.0f},{l.get('p50',0)},{l.get('p99',0)},{r['memory']['relay_kib']},{float(e)-float(s):.3f}")
PY
      done
    done
  done
done

if [ "$PEERS" = 1 ]; then
  REPS=$REPS SIZES=$SIZES OUT=/tmp/peers-results.csv bash "$PEERS_DIR/run.sh" > /tmp/peers-run.log 2>&1 \
    || { tail -20 /tmp/peers-run.log; exit 1; }
fi

python3 - "$OUT" /tmp/peers-results.csv "$PEERS" <<'PY'
import csv, statistics, sys, collections
ours, peers_csv, with_peers = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
rows = collections.defaultdict(list)
for r in csv.DictReader(open(ours)):
    rows[(r["system"], r["transport"], r["workload"])].append(r)
if with_peers:
    for r in csv.DictReader(open(peers_csv)):
        if r.get("status") != "ok":
            continue
        rows[(r["label"], r["transport"], f"{r['n']}-{r['m']}")].append(r)
med = {k: statistics.median(float(r["msgs_per_s"]) for r in v) for k, v in rows.items()}
for wl in sorted({k[2] for k in med}, key=lambda w: int(w.split("-")[0])):
    print(f"\n== mesh-{wl}: median messages/s over the runs (ratio to relay-sim/epoll on unix)")
    ref = med.get(("relay-sim/epoll", "unix", wl)) or max(v for k, v in med.items() if k[2] == wl)
    for k in sorted((k for k in med if k[2] == wl), key=lambda k: -med[k]):
        print(f"  {k[0]:<20} {k[1] or '':<6} {med[k]:>12,.0f}   x{med[k]/ref:5.2f}")
    # Whole command, start to exit (relay-sim forks, registers, exchanges, verifies, reports;
    # the peers' wall_s is their client run, without the server's start).
    wall = {k: statistics.median(float(r["wall_s"]) for r in v) for k, v in rows.items()
            if k[2] == wl and all(r.get("wall_s") for r in v)}
    ours_k = ("relay-sim/select", "unix", wl)
    if ours_k in wall:
        print(f"  whole command, median wall: relay-sim/select unix {wall[ours_k]*1000:.0f} ms", end="")
        for k in sorted(k for k in wall if not k[0].startswith(("relay-sim", "raw"))):
            print(f"; {k[0]} {k[1]} {wall[k]*1000:.0f} ms ({wall[k]/wall[ours_k]:.1f}x)", end="")
        print()
PY
