#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every
# test. Installing means system packages (apt-get), Python's qemu.qmp (pip)
# and two Debian roots with QEMU 7.2 and 11.1, so it runs
# scripts/test-env.sh as root (through sudo when you are not root); when
# everything is there already, that step takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
  bash scripts/test-env.sh
else
  sudo bash scripts/test-env.sh
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doc tests
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked
fi
