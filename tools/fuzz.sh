#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a bounded time each, one after the other,
# and prints how many inputs each one ran. Exits non-zero when any target crashes
# (a panic, a failed assertion, a sanitizer report, a timeout or an out-of-memory);
# the input that did it is kept in fuzz/artifacts/<target>/ and the log in
# fuzz/artifacts/<target>.log.
#
#   tools/fuzz.sh                      # every target, FUZZ_SECS (default 20) s each
#   FUZZ_SECS=60 nice -n 10 tools/fuzz.sh ids rules
#   cargo +nightly fuzz run --fuzz-dir fuzz <target> fuzz/artifacts/<target>/crash-…
#                                      # replays one crash
#
# Needs the nightly toolchain (rustup) and a C++ compiler (libFuzzer is built from
# source). Installs cargo-fuzz into ~/.cache/ooni-engine-tools on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECS="${FUZZ_SECS:-20}"
# A single input running longer than this is reported as a crash (a hang).
FUZZ_TIMEOUT="${FUZZ_TIMEOUT:-30}"
CARGO_FUZZ_VERSION="0.13.2"
TOOLS="$HOME/.cache/ooni-engine-tools"
# The fuzz build is instrumented and built with nightly: keep it apart from the
# workspace's target dir and out of the working tree.
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/ooni-engine-fuzz-target}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  if [ ! -x "$TOOLS/bin/cargo-fuzz" ]; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS" >&2
    cargo install "cargo-fuzz@$CARGO_FUZZ_VERSION" --locked --root "$TOOLS"
  fi
  export PATH="$TOOLS/bin:$PATH"
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 2
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do
    targets+=("$(basename "$f" .rs)")
  done
fi

# -a: debug assertions and overflow checks on, so an overflow is a finding.
build_flags=(--fuzz-dir fuzz --target-dir "$FUZZ_TARGET_DIR" --debug-assertions)
echo "fuzz.sh: building ${targets[*]} (nightly, instrumented)" >&2
cargo +nightly fuzz build "${build_flags[@]}"

mkdir -p fuzz/artifacts
summary=()
failed=0
for t in "${targets[@]}"; do
  seeds="fuzz/seeds/$t"
  corpus="fuzz/corpus/$t"
  log="fuzz/artifacts/$t.log"
  if [ ! -d "$seeds" ]; then
    echo "fuzz.sh: no seeds in $seeds" >&2
    exit 2
  fi
  # libFuzzer writes new inputs into the first corpus dir: a scratch copy, so the
  # committed seeds stay as written. It accumulates across runs (git-ignored).
  mkdir -p "$corpus"
  cp -p "$seeds"/* "$corpus"/
  # The words of the target's input language, when it has a dictionary.
  dict=()
  if [ -f "fuzz/dicts/$t.dict" ]; then
    dict=(-dict="fuzz/dicts/$t.dict")
  fi
  echo "fuzz.sh: $t for ${FUZZ_SECS}s (log: $log)" >&2
  status=0
  cargo +nightly fuzz run "${build_flags[@]}" "$t" "$corpus" -- \
    -max_total_time="$FUZZ_SECS" -rss_limit_mb=2048 -timeout="$FUZZ_TIMEOUT" "${dict[@]}" \
    >"$log" 2>&1 || status=$?
  done_line="$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)"
  inputs="$(find "$corpus" -type f | wc -l)"
  if [ "$status" -eq 0 ] && [ -n "$done_line" ]; then
    runs="$(awk '{print $2}' <<<"$done_line")"
    secs="$(awk '{print $5}' <<<"$done_line")"
    summary+=("$(printf '%-16s ok     %10s runs in %3s s (%s/s), corpus %s inputs' \
      "$t" "$runs" "$secs" "$((runs / (secs > 0 ? secs : 1)))" "$inputs")")
  else
    failed=1
    crash="$(grep -Eo "Test unit written to [^ ]+" "$log" | tail -n 1 | sed 's/^Test unit written to //' || true)"
    summary+=("$(printf '%-16s FAILED (exit %s) %s' "$t" "$status" "${crash:-see $log}")")
    echo "fuzz.sh: $t failed; the end of $log:" >&2
    tail -n 40 "$log" >&2
  fi
done

echo
echo "fuzz.sh: ${FUZZ_SECS}s per target"
printf '%s\n' "${summary[@]}"
exit "$failed"
