#!/usr/bin/env bash
# Starts a real qemu-storage-daemon in a private temp dir, drives it with
# the `qmp` command (a block job with its events, QOM, errors), and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p qmp-cli
qmp=$PWD/target/release/qmp
dir=$(mktemp -d)
qemu-storage-daemon \
  --chardev socket,path="$dir/qmp.sock",server=on,wait=off,id=m0 --monitor chardev=m0 \
  --chardev socket,path="$dir/events.sock",server=on,wait=off,id=m1 --monitor chardev=m1 &
qsd=$!
trap 'kill $qsd 2>/dev/null; wait $qsd 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -S "$dir/events.sock" ] && break; sleep 0.05; done
export QMP_SOCKET=$dir/qmp.sock
run() { echo "\$ qmp $*"; "$qmp" "$@" || echo "(exit status $?)"; echo; }

run query-version --pretty
run qom-list path=/
"$qmp" -s "$dir/events.sock" events --name JOB_STATUS_CHANGE --count 5 --timeout 10 > "$dir/events" &
events=$!
sleep 0.3
run blockdev-create job-id=j1 options.driver=file options.filename="$dir/disk.img" options.size=1048576
wait $events
echo "\$ qmp -s events.sock events --name JOB_STATUS_CHANGE --count 5   (meanwhile, on a second monitor)"
cat "$dir/events"; echo
run job-dismiss id=j1
run blockdev-del node-name=nope
