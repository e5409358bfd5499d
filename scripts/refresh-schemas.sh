#!/usr/bin/env bash
# Refreshes the schema dumps the typed API is generated from
# (crates/qmp-types/schemas/*.json): `query-qmp-schema` of each QEMU the
# test matrix installs (scripts/test-env.sh), both binaries. Run from the
# repository's root; needs the roots test-env.sh makes.
set -euo pipefail
out=crates/qmp-types/schemas
roots=${QMP_TEST_ROOTS:-/var/lib/qmp-rs/roots}
cargo build -q -p qmp-cli
qmp=target/debug/qmp
dir=$(mktemp -d /tmp/qmp-schemas.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
dump() { # VERSION LABEL ROOT PROGRAM ARGS...
  local label=$1 root=$2 program=$3; shift 3
  local sock="$dir/$label.sock" launcher=()
  [ -n "$root" ] && launcher=(chroot "$root")
  case $program in
    qemu-storage-daemon) "${launcher[@]}" "$program" --chardev "socket,path=$sock,server=on,wait=off,id=m" --monitor chardev=m &;;
    *) "${launcher[@]}" "$program" -M pc -S -nodefaults -display none -accel tcg -qmp "unix:$sock,server=on,wait=off" &;;
  esac
  for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
  sleep 0.2
  "$qmp" -s "$sock" --compact schema > "$out/$label.json"
  kill %% && wait %% 2>/dev/null || true
  echo "$out/$label.json: $(wc -c < "$out/$label.json") bytes"
}
dump 7.2-system "$roots/bookworm" qemu-system-x86_64
dump 7.2-storage-daemon "$roots/bookworm" qemu-storage-daemon
dump 10.0-system "" qemu-system-x86_64
dump 10.0-storage-daemon "" qemu-storage-daemon
dump 11.1-system "$roots/trixie" qemu-system-x86_64
dump 11.1-storage-daemon "$roots/trixie" qemu-storage-daemon
