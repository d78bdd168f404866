#!/usr/bin/env bash
# Behaviour unchanged? Runs a fixed set of seeded runs (mesh, ping-pong, scripts, faults
# injected into the relay, nemesis) with two relay-sim binaries and compares their JSON
# reports with what varies from run to run taken out: timings, throughput, latency, memory,
# CPU and pids. Used for refactors that must not change a report (issue 14).
#
#   harness/bench/same-reports.sh /tmp/base/relay-sim target/release/relay-sim
#
# Scripted faults strike at times that vary: for them, which fault struck whom and how each
# process ended are compared, not when. Runs with injected faults list their first violations in arrival order: for them the list
# is left out (its counts stay). Nemesis runs strike at moments the clock picks, so their counts differ between two runs of
# one binary: for them only the verdict, ending, config, replay and check names are compared.
set -euo pipefail
A=${1:?usage: same-reports.sh BASE_BINARY NEW_BINARY}
B=${2:?usage: same-reports.sh BASE_BINARY NEW_BINARY}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
RUNS=(
  "exact|--clients 8 --msgs 2000 --seed 1"
  "exact|--clients 5 --msgs 700 --seed 2 --payload 0..300 --transport tcp"
  "exact|--clients 3 --msgs 500 --seed 3 --backend poll --write-chunks 1..40"
  "exact|--clients 6 --msgs 300 --seed 4 --pattern pingpong --backend epoll"
  "exact|--scenario fixtures/fan-in.scn --seed 5"
  "exact|--scenario fixtures/mixed-sizes.scn --seed 6"
  "exact|--scenario fixtures/ping-pong.scn --seed 7"
  "faults|--scenario fixtures/faults.scn --seed 3"
  "faults|--scenario fixtures/relay-crash.scn --seed 3"
  "faults|--scenario fixtures/slow-consumer.scn --seed 3"
  "counts|--clients 8 --msgs 3000 --seed 8 --inject corrupt:1"
  "counts|--clients 4 --msgs 1000 --seed 9 --inject misroute:1"
  "counts|--clients 4 --msgs 1000 --seed 10 --inject spoof:1 --payload 16..31"
  "loose|--clients 8 --msgs 20000 --seed 11 --nemesis stop --nemesis-interval 10ms"
  "loose|--clients 8 --msgs 20000 --seed 12 --nemesis kill,restart --nemesis-interval 20ms --transport tcp"
  "loose|--clients 4 --msgs 1000 --seed 13 --inject drop:0.05"
  "loose|--clients 3 --seed 14 --duration 1s --payload 16..100"
)
norm() { # mode
  python3 -c '
import json, sys
mode = sys.argv[1]
r = json.load(sys.stdin)
for k in ("throughput", "latency_us", "phases", "memory", "cpu", "relay_log"):
    r.pop(k, None)
for p in r.get("processes") or []:
    for k in list(p):
        if k in ("pid", "rss_kib", "cpu", "user_us", "sys_us"):
            p.pop(k)
if mode == "faults":  # scripted faults: which struck whom; their times vary
    r.pop("violations", None)
    nem = r.pop("nemesis", None) or {}
    r["struck"] = [(e["action"], e["role"]) for e in nem.get("events", [])]
    r["processes"] = [(p["role"], p["status"]) for p in r.get("processes") or []]
if mode == "counts":
    r.pop("violations", None)  # which ones are listed first depends on arrival order
if mode == "loose":
    if r["config"].get("duration_s"):  # a soak: what was sent is counted after it
        r["config"].pop("total_msgs")
        r["config"].pop("msgs_per_client")
    r = {k: r.get(k) for k in ("verdict", "ending", "config", "replay")} | {
        "checks": [c["name"] for c in r.get("checks", [])]}
print(json.dumps(r, indent=1, sort_keys=True))' "$1"
}
fail=0
for run in "${RUNS[@]}"; do
  mode=${run%%|*}
  args=${run#*|}
  # shellcheck disable=SC2086
  ra=$("$A" run $args --json 2>/dev/null | norm "$mode" || true)
  # shellcheck disable=SC2086
  rb=$("$B" run $args --json 2>/dev/null | norm "$mode" || true)
  if [ "$ra" == "$rb" ]; then
    echo "same     $mode  $args"
  else
    echo "DIFFERS  $mode  $args"
    diff <(echo "$ra") <(echo "$rb") | head -20
    fail=1
  fi
done
exit $fail
