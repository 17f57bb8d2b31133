#!/usr/bin/env bash
# Hostile clients against a fresh `tessera serve`:
#
#  1. builds the release binaries;
#  2. starts the server on a temporary data directory, on ports of its own
#     choosing (so it never meets another server on the machine);
#  3. applies examples/news_feed/registry.toml and loads a news-feed
#     dataset (`tessera-bench load`);
#  4. runs `tessera-bench hostile` (the victim's slate latency, the
#     server's RSS and liveness, idle and during each attack), printing its
#     markdown table, or JSON with --json. The load generator runs at nice
#     -10 and its attack threads at nice 19 (`--attacker-nice`), the server
#     at 0: on a network neither client would share the server's CPU, so
#     the figures measure how fairly the server treats its clients, not how
#     Linux shares two cores among three processes. --same-priority runs
#     everything at nice 0 instead (and needs no privilege);
#  5. stops the server and checks its log for panics.
#
#   scripts/hostile.sh [--users N] [--articles N] [--json] [--same-priority]
#                      [-- HOSTILE-FLAGS...]
#
# Defaults: 100,000 users and 20,000 articles. Flags after `--` go to
# `tessera-bench hostile` (e.g. `-- --attacks slowloris,no-read --duration 3`).
set -euo pipefail
cd "$(dirname "$0")/.."
users=100000
articles=20000
json=()
extra=()
extra_nice=()
victim_nice=-10
while [[ $# -gt 0 ]]; do
  case "$1" in
    --users) users="$2"; shift 2 ;;
    --articles) articles="$2"; shift 2 ;;
    --json) json=(--json); shift ;;
    --same-priority) victim_nice=0; extra_nice=(--attacker-nice 0); shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--users N] [--articles N] [--json] [--same-priority] [-- HOSTILE-FLAGS...]" >&2; exit 2 ;;
  esac
done

cargo build --release -q -p tessera-server -p tessera-bench
bin=target/release
work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-hostile.XXXXXX")
server_pid=
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The attacks open thousands of connections: the server (which raises its
# own soft limit to the hard one) and the bench need the descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$bin/tessera" serve --data-dir "$work/data" --listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 >"$work/stdout.log" 2>"$work/stderr.log" &
server_pid=$!
for _ in $(seq 100); do
  grep -q "tessera listening on" "$work/stdout.log" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/^tessera listening on //p' "$work/stdout.log")
[[ -n $addr ]] || { echo "the server did not start:" >&2; cat "$work/stderr.log" >&2; exit 1; }
echo "server pid $server_pid on $addr; $(nproc) cores; $(git rev-parse --short HEAD)" >&2
"$bin/tessera" apply --addr "$addr" examples/news_feed/registry.toml >/dev/null
"$bin/tessera-bench" load --addr "$addr" --users "$users" --articles "$articles" >&2
if [[ $victim_nice -lt 0 && $(id -u) -ne 0 ]]; then
  echo "cannot raise the load generator's priority here (not root): running it at nice 0" >&2
  victim_nice=0
fi
nice -n "$victim_nice" "$bin/tessera-bench" hostile --addr "$addr" --users "$users" \
  --articles "$articles" --server-pid "$server_pid" "${extra_nice[@]}" "${json[@]}" "${extra[@]}"
status=0
kill -TERM "$server_pid"
wait "$server_pid" || status=$?
server_pid=
if grep -q "panicked" "$work/stderr.log"; then
  echo "the server panicked:" >&2
  grep -B2 -A8 "panicked" "$work/stderr.log" >&2
  exit 1
fi
echo "server exited with status $status" >&2
