#!/usr/bin/env bash
# Every test: the workspace's unit and end-to-end tests, then each fuzz target for a
# bounded time (FUZZ_SECS, default 20 s each). The README's test command; .ci/run
# runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
FUZZ_SECS="${FUZZ_SECS:-20}" tools/fuzz.sh
