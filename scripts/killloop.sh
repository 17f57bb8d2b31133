#!/usr/bin/env bash
# The long kill loop: writers with `sync` durability against the real
# `tessera` server, which is SIGKILLed at random moments and restarted on the
# same data directory; after every kill, each acknowledged write must be
# readable by latest, as_of and history, and `tessera check` must find the
# hash index in agreement with a full scan (server/tests/kill_loop.rs; the CI
# run does 100 cycles).
#
#   scripts/killloop.sh [--cycles N] [--seed S]     (default: 2000 cycles)
set -euo pipefail
cd "$(dirname "$0")/.."

cycles=2000
seed=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cycles) cycles="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        *) echo "usage: $0 [--cycles N] [--seed S]" >&2; exit 2 ;;
    esac
done

export TESSERA_KILL_CYCLES="$cycles"
if [[ -n "$seed" ]]; then
    export TESSERA_KILL_SEED="$seed"
fi
exec cargo test --release -p tessera-server --test kill_loop -- --nocapture
