#!/usr/bin/env bash
# The whole test suite: unit, property, crash, corruption and integration
# tests of every workspace crate. Needs only the Rust toolchain and gcc.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets "$@"
