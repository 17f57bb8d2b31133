#!/usr/bin/env bash
# Soak: a long mixed load against a fresh `tessera serve`, pass or fail.
#
#  1. builds the release binaries (cargo does nothing if they are current);
#  2. starts the server on a temporary data directory, on ports of its own
#     choosing, with a 64 MiB block cache (so the cache fills during the
#     warm-up half and a trend in RSS means something else grows);
#  3. applies examples/news_feed/registry.toml (article history kept 5
#     minutes, see below) and loads a news-feed
#     dataset (`tessera-bench load`, 200,000 users and 50,000 articles,
#     3 versions each);
#  4. runs `tessera-bench soak`: slates, article writes (memtables flush,
#     compactions run) and periodic Parquet imports, sampled every 10 s;
#     fails on any error or an upward trend of RSS or p99 (the rule is in
#     bench/src/soak.rs);
#  5. stops the server with SIGTERM and checks that it exits 0 without a
#     panic in its log.
#
#   scripts/soak.sh [--minutes N] [--seconds N] [--users N] [--articles N]
#                   [--out DIR] [--features LIST] [-- SOAK-FLAGS...]
#
# --features builds the server with those cargo features, e.g.
# `--features heap-stats` for a server that logs its live heap bytes every
# 10 s into server.log, to set against the RSS in the series.
#
# Default 30 minutes. The series (CSV), the summary (JSON) and the server's
# log go to --out (default target/soak/<date>-<time>/). Flags after `--` go
# to `tessera-bench soak` (e.g. `-- --write-rate 10000 --slate-rate 2000`).
# Exits nonzero if the soak fails or the server does not stop cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=30
seconds=
users=200000
articles=50000
out=
features=
extra=()
usage="usage: $0 [--minutes N] [--seconds N] [--users N] [--articles N] [--out DIR] [--features LIST] [-- SOAK-FLAGS...]"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --users) users="$2"; shift 2 ;;
    --articles) articles="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --features) features="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
out=${out:-target/soak/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
if [[ -n $seconds ]]; then length=(--seconds "$seconds"); else length=(--minutes "$minutes"); fi

cargo build --release -q -p tessera-server ${features:+--features "$features"}
cargo build --release -q -p tessera-bench
work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-soak.XXXXXX")
# Run copies: a rebuild in this tree during a long run cannot swap the
# binaries under it (`tessera-bench soak` imports with the `tessera` next
# to it).
bin=$work/bin
mkdir -p "$bin"
cp target/release/tessera target/release/tessera-bench "$bin/"
server_pid=
cleanup() {
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin/tessera" serve --data-dir "$work/data" --listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 --block-cache-mib 64 \
  >"$work/stdout.log" 2>"$out/server.log" &
server_pid=$!
for _ in $(seq 100); do
  grep -q "tessera listening on" "$work/stdout.log" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/^tessera listening on //p' "$work/stdout.log")
metrics=$(sed -n 's|^tessera metrics on http://||p' "$work/stdout.log")
[[ -n $addr && -n $metrics ]] || { echo "the server did not start:" >&2; cat "$out/server.log" >&2; exit 1; }
echo "server pid $server_pid on $addr, metrics $metrics; $(nproc) cores; commit $(git rev-parse --short HEAD)" >&2
# The news-feed registry, but article_features keeps 5 minutes of history
# (ttl 3m). The article writes are most of the data written (about 0.7 MB/s);
# with that retention compactions drop as much as is written from about the
# tenth minute on, so the data is at a steady size during the second half,
# whose RSS trend then speaks of leaks rather than of per-SST indexes and
# filters (4-5% of SST bytes) growing with a growing dataset. (With 15
# minutes of history the data only stops growing at about 23 minutes.)
# user_features keeps 70 minutes: the imports' rows are stamped an hour
# before they run, so compactions drop each import's rows ten minutes after
# it (and the loaded users' about ten minutes after the load), and the user
# data stays at about two imports' worth instead of growing by 100,000
# versions at every import.
sed -e '/^name = "article_features"/,/^retention/ { s/^ttl = .*/ttl = "3m"/; s/^retention = .*/retention = "5m"/ }' \
  -e '/^name = "user_features"/,/^retention/ { s/^ttl = .*/ttl = "70m"/; s/^retention = .*/retention = "70m"/ }' \
  examples/news_feed/registry.toml >"$work/registry.toml"
"$bin/tessera" apply --addr "$addr" "$work/registry.toml" >/dev/null
"$bin/tessera-bench" load --addr "$addr" --users "$users" --articles "$articles" >&2

verdict=0
"$bin/tessera-bench" soak --addr "$addr" --metrics-addr "$metrics" --server-pid "$server_pid" \
  --users "$users" --articles "$articles" "${length[@]}" --out "$out/series.csv" \
  "${extra[@]}" | tee "$out/summary.md" || verdict=$?

status=0
kill -TERM "$server_pid"
wait "$server_pid" || status=$?
server_pid=
if grep -q "panicked" "$out/server.log"; then
  echo "the server panicked:" >&2
  grep -B2 -A8 "panicked" "$out/server.log" >&2
  status=1
fi
echo "server exited with status $status" >&2
echo "series: $out/series.csv; summary: $out/series.json, $out/summary.md; server log: $out/server.log" >&2
if [[ $verdict -ne 0 ]]; then echo "soak: FAIL" >&2; exit 1; fi
if [[ $status -ne 0 ]]; then echo "soak: FAIL (the server did not exit cleanly)" >&2; exit 1; fi
echo "soak: PASS" >&2
