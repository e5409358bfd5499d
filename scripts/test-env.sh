#!/usr/bin/env bash
# Installs everything the test suite needs on a Debian 12 machine, as root:
# system packages with apt-get, Python's qemu.qmp with pip, and two Debian
# roots holding the QEMUs that Debian 12 itself cannot install side by side.
# Idempotent: a second run checks and returns in a few seconds.
#
# The three QEMUs (see crates/qmp-testkit/src/qemus.rs for how tests launch them),
# each with its guest agent (qemu-guest-agent):
#   10.0  the host's own qemu-system-x86, qemu-storage-daemon and qemu-ga,
#         from Debian 12's bookworm-backports suite
#   7.2   Debian 12's qemu-system-x86, in a bookworm root at $ROOTS/bookworm
#   11.1  Debian 13's trixie-backports qemu-system-x86, in a trixie root at
#         $ROOTS/trixie (it needs Debian 13's libc)
# The roots are run with chroot; /tmp is bind-mounted into each, so a socket
# path means the same file inside and out.
set -euo pipefail

ROOTS=${QMP_TEST_ROOTS:-/var/lib/qmp-rs/roots}
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test-env.sh installs system packages: run it as root (sudo)" >&2
  exit 2
fi

log() { printf '== %s\n' "$*" >&2; }

# The Debian mirror this machine's apt already uses, so the roots come from
# the same place.
mirror() {
  local m
  m=$(grep -rhoE '^(URIs:|deb) *https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -oE 'https?://[^ ]+' | head -1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=$(mirror)

apt_updated=0
apt_update() { [ $apt_updated = 1 ] || { apt-get update -qq; apt_updated=1; }; }

# --- the host: 10.0 from bookworm-backports, and the tools the tests drive ---
host_packages_ok() {
  dpkg-query -W -f '${Status}\n' tmux fuse3 debootstrap qemu-guest-agent openssl 2>/dev/null | grep -vq 'install ok installed' && return 1
  qemu-system-x86_64 --version 2>/dev/null | grep -q 'version 10\.0' &&
    qemu-storage-daemon --version 2>/dev/null | grep -q 'version 10\.0' &&
    qemu-ga --version 2>/dev/null | grep -q 'Agent 10\.0'
}
if ! host_packages_ok; then
  log "host packages (qemu-system-x86 and qemu-guest-agent 10.0 from bookworm-backports, tmux, fuse3, debootstrap, openssl)"
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat >/etc/apt/sources.list.d/qmp-rs-backports.sources <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt_updated=0
  fi
  apt_update
  apt-get install -y -qq --no-install-recommends -t bookworm-backports \
    qemu-system-x86 qemu-utils qemu-guest-agent >/dev/null
  apt-get install -y -qq --no-install-recommends tmux fuse3 debootstrap openssl >/dev/null
fi

# --- Python's qemu.qmp, a client nobody here wrote ---
if ! python3 -c 'import qemu.qmp' 2>/dev/null; then
  log "pip install qemu.qmp"
  python3 -m pip install --quiet qemu.qmp
fi

# --- the roots ---
# make_root NAME SUITE BACKPORTS-SUITE-OR-EMPTY EXPECTED-VERSION
make_root() {
  local name=$1 suite=$2 bpo=$3 want=$4 dir=$ROOTS/$1
  mkdir -p "$dir/tmp"
  mountpoint -q "$dir/tmp" || mount --bind /tmp "$dir/tmp"
  if chroot "$dir" qemu-system-x86_64 --version 2>/dev/null | grep -q "version $want" &&
    chroot "$dir" qemu-storage-daemon --version 2>/dev/null | grep -q "version $want" &&
    chroot "$dir" qemu-ga --version 2>/dev/null | grep -q "Agent $want"; then
    return
  fi
  log "$name root: QEMU $want from Debian $suite${bpo:+ ($bpo)} in $dir"
  if [ ! -x "$dir/usr/bin/apt-get" ]; then
    umount "$dir/tmp"
    rm -rf "$dir"
    mkdir -p "$dir"
    debootstrap --variant=minbase "$suite" "$dir" "$MIRROR" >"$ROOTS/$name-debootstrap.log" 2>&1 ||
      { tail -20 "$ROOTS/$name-debootstrap.log" >&2; exit 1; }
    mkdir -p "$dir/tmp"
    mount --bind /tmp "$dir/tmp"
  fi
  local s
  for s in "$suite" "$suite-updates" ${bpo:+"$bpo"}; do
    echo "deb $MIRROR $s main"
  done >"$dir/etc/apt/sources.list"
  chroot "$dir" apt-get update -qq
  chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    ${bpo:+-t $bpo} qemu-system-x86 qemu-utils qemu-guest-agent >/dev/null
  chroot "$dir" qemu-system-x86_64 --version | head -1 >&2
}

mkdir -p "$ROOTS"
make_root bookworm bookworm "" 7.2 &
b=$!
make_root trixie trixie trixie-backports 11.1 &
t=$!
wait $b
wait $t

qemu-system-x86_64 --version | head -1
qemu-storage-daemon --version | head -1
qemu-ga --version | head -1
for r in bookworm trixie; do
  chroot "$ROOTS/$r" qemu-system-x86_64 --version | head -1
  chroot "$ROOTS/$r" qemu-ga --version | head -1
done
