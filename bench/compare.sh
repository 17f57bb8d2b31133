#!/usr/bin/env bash
# Tessera against Redis 7 and Apache Cassandra 2.1.0 on the news-feed slate
# workload, in one run on this machine:
#
#  1. builds the release binaries, installs any missing peer, starts
#     `tessera serve`, Redis (bench/peers/redis.sh) and Cassandra
#     (bench/peers/cassandra.sh) on fresh directories;
#  2. loads the same dataset into each (Tessera then restarts, flushing its
#     memtables);
#  3. warms Tessera's block cache (unmeasured slates: it restarted after the
#     load), then runs the same closed-loop slates at 1, 4 and 16 connections against
#     every target; stops Redis and Cassandra and lets the machine settle
#     (sync, 10 s of unmeasured slates), then runs Tessera open-loop at 25%,
#     50% and 80% of its 4-connection peak, and `mixed` (20,000 article
#     writes/s);
#  4. writes the results (JSON lines), a markdown table and a PNG plot of
#     latency percentiles against throughput under --out, and replaces the
#     section between the `compare:begin` and `compare:end` markers of
#     docs/benchmarks.md with the table, the machine, the versions and the
#     commands;
#  5. stops every server it started.
#
#   bench/compare.sh [--quick] [--out DIR]
#
# --quick: 100,000 users and 20,000 articles, 3-second runs (under 5
# minutes); the default is the full dataset (1M users, 200k articles) and
# 10-second runs. The plot needs matplotlib, installed with pip if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=no
out=target/compare
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=yes; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--quick] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [[ $quick == yes ]]; then
  users=100000; articles=20000; duration=3; warmup=2; cache_warmup=5; settle=2
else
  users=1000000; articles=200000; duration=10; warmup=3; cache_warmup=40; settle=10
fi
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-compare.XXXXXX")
results="$out/results.jsonl"
: >"$results"
pids=()
# Stops what the script started and removes its scratch directory: the
# full-size run leaves 1.6 GB of Tessera data there, which nothing reads
# once the results are written under --out.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p tessera-server -p tessera-bench
bin=target/release
bench() { "$bin/tessera-bench" "$@" --users "$users" --articles "$articles"; }

start_tessera() {
  "$bin/tessera" serve --data-dir "$work/tessera" >>"$work/tessera.log" 2>&1 &
  tessera_pid=$!
  pids+=("$tessera_pid")
  until grep -q "tessera listening" "$work/tessera.log" 2>/dev/null; do
    if ! kill -0 "$tessera_pid" 2>/dev/null; then
      echo "tessera serve exited before listening:" >&2
      cat "$work/tessera.log" >&2
      exit 1
    fi
    sleep 0.2
  done
}
echo "== starting and loading"
start_tessera
"$bin/tessera" apply examples/news_feed/registry.toml >/dev/null
bench load | tee -a "$work/load.txt"
kill -TERM "$tessera_pid"; wait "$tessera_pid" || true
: >"$work/tessera.log"
start_tessera

redis_pid=$(bench/peers/redis.sh --daemonize >/dev/null; sleep 0.5; pgrep -n redis-server)
pids+=("$redis_pid")
bench load --target redis | tee -a "$work/load.txt"
bench load --target redis --layout blob | tee -a "$work/load.txt"

# The Cassandra package is kept between runs; its data is not.
cassandra_home=${TMPDIR:-/tmp}/tessera-cassandra
rm -rf "$cassandra_home/run"
cassandra_pid=$(bench/peers/cassandra.sh --daemonize --home "$cassandra_home")
pids+=("$cassandra_pid")
bench load --target cassandra --compression on --connections 4 | tee -a "$work/load.txt"
bench load --target cassandra --compression off --connections 4 | tee -a "$work/load.txt"

run() { # name, pid, extra args...; WARM=S overrides the warm-up
  local name=$1 pid=$2; shift 2
  bench slate --server-pid "$pid" --duration "$duration" --warmup "${WARM:-$warmup}" --json "$@" \
    | python3 -c "import json,sys; d=json.load(sys.stdin); d['name']='$name'; print(json.dumps(d))" \
    >>"$results"
}
# Every target serves from a warm cache, as a serving system does in its
# steady state: Tessera restarted after the load (its block cache empty),
# Redis and Cassandra keep their data in memory or warm their caches in
# their own warm-ups. Unmeasured.
echo "== warm-up"
bench slate --connections 4 --duration "$cache_warmup" --warmup 0 >/dev/null
echo "== closed loop"
for conns in 1 4 16; do
  run tessera "$tessera_pid" --connections "$conns"
  run redis-hash "$redis_pid" --target redis --connections "$conns"
  run redis-blob "$redis_pid" --target redis --layout blob --connections "$conns"
  WARM=5 run cassandra-lz4 "$cassandra_pid" --target cassandra --compression on --connections "$conns"
  WARM=5 run cassandra-plain "$cassandra_pid" --target cassandra --compression off --connections "$conns"
done
# The rest measures Tessera alone. The peers stop first, so that their
# background work (Cassandra compacts what it loaded and collects garbage
# for minutes) does not take the cores that Tessera and its client share.
echo "== stopping the peers"
kill "$redis_pid" "$cassandra_pid" 2>/dev/null || true
while kill -0 "$redis_pid" 2>/dev/null || kill -0 "$cassandra_pid" 2>/dev/null; do
  sleep 0.5
done
# What the peers (and the loads) left dirty in the page cache is written
# back now, not by kernel threads during the open-loop runs; then Tessera
# serves unmeasured slates while the machine settles after the peers'
# exit (their freed memory, their files), so the open-loop runs start in
# the same steady state as the closed-loop ones.
sync
bench slate --connections 4 --duration "$settle" --warmup 0 >/dev/null
echo "== open loop and mixed"
peak=$(python3 -c "
import json
rows=[json.loads(l) for l in open('$results')]
print(int(max(r['slates_per_s'] for r in rows if r['name']=='tessera' and r['connections']==4)))")
for pct in 25 50 80; do
  run "tessera-open-$pct%" "$tessera_pid" --connections 4 --rate $((peak * pct / 100))
done
"$bin/tessera-bench" mixed --users "$users" --articles "$articles" --server-pid "$tessera_pid" \
  --write-rate 20000 --duration "$duration" --warmup "$warmup" --json \
  | python3 -c "import json,sys; d=json.load(sys.stdin); d['name']='tessera-mixed'; print(json.dumps(d))" \
  >>"$results"
run tessera-read-only "$tessera_pid"

echo "== report"
python3 -c "import matplotlib" 2>/dev/null || pip install -q matplotlib
python3 bench/compare_report.py --results "$results" --out "$out" --docs docs/benchmarks.md \
  --users "$users" --articles "$articles" --duration "$duration" --quick "$quick"
echo "results in $out; docs/benchmarks.md updated"
