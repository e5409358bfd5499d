#!/usr/bin/env bash
# Build cost of the typed API beside the `qapi` crate 0.15, in one run
# (BENCHMARKS.md, "Typed API: build cost"). Makes four small programs in a
# temp dir, each connecting to a monitor and running the same 20 queries:
#   ours-0   qmp-client (blocking, no TLS) + qmp-types, the 20 untyped
#   ours-20  the same, the 20 typed (client.run(QueryStatus::new()) ...)
#   qapi-0   qapi 0.15 (feature qmp), handshake only
#   qapi-20  the same, the 20 typed (qmp.execute(&qmp::query_status {}) ...)
# and reports, for each, a clean release build (own target dir: every
# dependency included) with its peak memory, and the rebuild of the
# program alone after touching main.rs (what using the commands costs).
# Also the qmp-types crate alone, rebuilt in the workspace with its
# dependencies built.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d /tmp/typed-build.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cmds="query-status query-version query-name query-uuid query-kvm query-cpus-fast query-block
query-blockstats query-named-block-nodes query-chardev query-commands query-iothreads query-memdev
query-hotpluggable-cpus query-machines query-target query-current-machine query-mice query-migrate query-jobs"
camel() { echo "$1" | sed -E 's/(^|-)([a-z])/\U\2/g'; }
snake() { echo "$1" | tr - _; }
fields() { case $1 in query-blockstats) echo "query_nodes: None";; query-named-block-nodes) echo "flat: None";; query-machines) echo "compat_props: None";; esac; }
make_program() { # NAME DEPS BODY
  mkdir -p "$dir/$1/src"
  printf '[package]\nname = "%s"\nversion = "0.1.0"\nedition = "2021"\n[dependencies]\n%s\n[workspace]\n' "$1" "$2" > "$dir/$1/Cargo.toml"
  printf '%s\n' "$3" > "$dir/$1/src/main.rs"
}
ours_deps="qmp-client = { path = \"$root/crates/qmp-client\", default-features = false, features = [\"blocking\"] }
qmp-types = { path = \"$root/crates/qmp-types\" }
serde_json = \"1\""
qapi_deps='qapi = { version = "=0.15.0", features = ["qmp"] }'
open_ours='let c = qmp_client::blocking::Client::connect(&std::env::args().nth(1).unwrap()).unwrap();'
open_qapi='let s = std::os::unix::net::UnixStream::connect(std::env::args().nth(1).unwrap()).unwrap(); let mut q = qapi::Qmp::from_stream(&s); q.handshake().unwrap();'
body0=""; body20=""; qbody20=""
for c in $cmds; do
  body0+="    println!(\"{:?}\", c.execute(\"$c\", serde_json::json!({})).unwrap());"$'\n'
  body20+="    println!(\"{:?}\", c.run(qmp_types::$(camel "$c")::new()).unwrap());"$'\n'
  qbody20+="    println!(\"{:?}\", q.execute(&qapi::qmp::$(snake "$c") { $(fields "$c") }).unwrap());"$'\n'
done
make_program ours-0 "$ours_deps" "fn main() {
    $open_ours
$body0}"
make_program ours-20 "$ours_deps" "fn main() {
    $open_ours
$body20}"
make_program qapi-0 "$qapi_deps" "fn main() {
    $open_qapi
}"
make_program qapi-20 "$qapi_deps" "fn main() {
    $open_qapi
$qbody20}"
measure() { # DIR -> "seconds peak-MB"
  /usr/bin/time -f '%e %M' -o "$dir/time" cargo build --release -q --manifest-path "$1/Cargo.toml" >/dev/null 2>&1
  awk '{printf "%.1f s, %.0f MB", $1, $2/1024}' "$dir/time"
}
echo "| program | clean release build (peak rustc memory) | rebuild of main.rs alone |"
echo "|---|---|---|"
for p in ours-0 ours-20 qapi-0 qapi-20; do
  export CARGO_TARGET_DIR="$dir/target-$p"
  clean=$(measure "$dir/$p")
  touch "$dir/$p/src/main.rs"
  again=$(measure "$dir/$p")
  echo "| $p | $clean | $again |"
done
# The crate itself, in the workspace (its dependencies built first).
unset CARGO_TARGET_DIR
cargo build --release -q -p qmp-types --manifest-path "$root/Cargo.toml"
touch "$root/crates/qmp-types/src/lib.rs"
echo
echo "qmp-types alone, its dependencies built: $(measure "$root/crates/qmp-types")"
