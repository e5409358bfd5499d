#!/usr/bin/env bash
# Regenerates crates/qmp-types/src/generated.rs from the schema dumps
# (scripts/refresh-schemas.sh refreshes those from real QEMUs).
set -euo pipefail
d=crates/qmp-types/schemas
cargo run -q -p qmp-cli --bin qmp -- codegen -o crates/qmp-types/src/generated.rs \
  --schema "$d/7.2-system.json" --schema "$d/7.2-storage-daemon.json" \
  --schema "$d/10.0-system.json" --schema "$d/10.0-storage-daemon.json" \
  --schema "$d/11.1-system.json" --schema "$d/11.1-storage-daemon.json"
# The guest agent's commands, from the project's own description of them.
cargo run -q -p qmp-cli --bin qmp -- codegen -o crates/qmp-types/src/guest_agent.rs \
  --schema "$d/guest-agent.json"
