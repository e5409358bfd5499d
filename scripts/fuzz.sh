#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10) on a copy of its
# corpus in fuzz/corpus/, and fails on the first crash; libFuzzer leaves
# the crashing input in fuzz/artifacts/TARGET/, which belongs in the repo
# with the fix. Needs the nightly toolchain; installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-10}
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 2
fi
cargo fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$scratch/$target"
  if ! cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" >"$scratch/$target.log" 2>&1; then
    tail -40 "$scratch/$target.log" >&2
    echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  echo "fuzz $target, ${seconds}s: $(grep -E '^Done [0-9]+ runs' "$scratch/$target.log" | tail -1)"
done
