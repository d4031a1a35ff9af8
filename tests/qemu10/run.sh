#!/usr/bin/env bash
# Runs the real-QEMU tests against QEMU 10 and its OVMF, from a Debian 13
# (trixie) root, as well as CI runs them against the host's QEMU 7.2.
#
# The test binaries are the ones `cargo test` already built on this host:
# they and the vmrun binary run inside the root under `chroot` (trixie's
# glibc is newer than the one they were linked against, so they run there),
# where PATH finds trixie's qemu-system-x86_64, swtpm and firmware
# descriptors. The repo is bind-mounted at its own path so every absolute
# path the tests know (fixtures, CARGO_BIN_EXE_vmrun) holds inside.
# The mounts live in a private mount namespace (`unshare --mount`): they go
# away with this script, whatever way it ends.
#
# Usage: tests/qemu10/run.sh [--root-only]   (root: debootstrap, chroot, mounts)
# --root-only makes the root and stops (.ci/run makes it while it builds).
# The root is cached in $VMRUN_QEMU10_ROOT (default
# /var/cache/vmrun-ci/trixie) and made again when its package list changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$(pwd)

root=${VMRUN_QEMU10_ROOT:-/var/cache/vmrun-ci/trixie}
# qemu-system-modules-spice: Debian 13 ships SPICE as a QEMU module of
# its own; qemu-utils: qemu-img for the image tests; util-linux: setpriv for the
# other-uid tests; python3: the stand-in QEMUs of the hostile tests.
# audio_real: qemu-system-gui ships QEMU 10's audio modules (audio-pipewire.so,
# audio-pa.so); the sound servers it starts (pulseaudio, pipewire,
# pipewire-pulse, wireplumber on a dbus-run-session bus) and pactl
# (pulseaudio-utils); dbus-x11 provides the dbus-session-bus that
# dconf-service (under qemu-system-gui's GTK) depends on, which
# debootstrap does not pick among alternatives by itself.
include=qemu-system-x86,qemu-system-modules-spice,qemu-system-gui,qemu-utils,ovmf,swtpm,swtpm-tools,util-linux,python3,pulseaudio,pulseaudio-utils,pipewire,pipewire-pulse,wireplumber,dbus,dbus-x11
# The real-QEMU test files. Each must pass against QEMU 10 as it does on 7.2.
tests=(run_vm start_failure qmp_real_qemu cli cli_restore cli_renamed audio_real)
for t in tests/hostile_*.rs; do
  [ -e "$t" ] && tests+=("$(basename "$t" .rs)")
done

[ "$(id -u)" -eq 0 ] || { echo "qemu10: needs root (debootstrap, chroot)" >&2; exit 1; }

# The mirror this machine already uses (deb822 sources first, then the
# one-line format), else Debian's own.
mirror() {
  local m
  m=$(grep -hm1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$m" ] || m=$(grep -hm1 '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' || true)
  echo "${m:-http://deb.debian.org/debian}"
}

if [ "$(cat "$root/.vmrun-include" 2>/dev/null)" != "$include" ]; then
  echo "qemu10: making a Debian 13 root in $root"
  rm -rf "$root"
  mkdir -p "$(dirname "$root")"
  debootstrap --variant=minbase --include="$include" trixie "$root.tmp" "$(mirror)" \
    > "$root.debootstrap.log" 2>&1 || { tail -20 "$root.debootstrap.log" >&2; exit 1; }
  echo "$include" > "$root.tmp/.vmrun-include"
  mv "$root.tmp" "$root"
fi
echo "qemu10: $(chroot "$root" qemu-system-x86_64 --version | head -1)"
[ "${1:-}" != "--root-only" ] || exit 0

# Every test binary of the list, as cargo built it for the suite: the same
# command as the suite's `cargo test` (a `--test` filter would change the
# feature set and rebuild), then picked by name.
mapfile -t built < <(
  cargo test --workspace --locked --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*/deps/[^"]*"' | cut -d'"' -f4
)
binaries=()
for t in "${tests[@]}"; do
  for b in "${built[@]}"; do
    [[ "$(basename "$b")" =~ ^${t}-[0-9a-f]+$ ]] && binaries+=("$b")
  done
done
[ "${#binaries[@]}" -eq "${#tests[@]}" ] || {
  echo "qemu10: expected ${#tests[@]} test binaries, cargo gave ${#binaries[@]}" >&2
  exit 1
}

# Inside the namespace: bind the host's kernel interfaces and the repo
# (and cargo's target dir, if it lives elsewhere), then run each binary.
target=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
exec unshare --mount --propagation private bash -euo pipefail -c '
  root=$1 repo=$2 target=$3; shift 3
  for d in proc sys dev dev/pts run tmp; do
    mkdir -p "$root/$d"
  done
  mount -t proc proc "$root/proc"
  for d in sys dev dev/pts; do mount --rbind "/$d" "$root/$d"; done
  mount -t tmpfs tmpfs "$root/run"
  mount -t tmpfs tmpfs "$root/tmp"
  for d in "$repo" "$target"; do
    mkdir -p "$root$d"
    mountpoint -q "$root$d" || mount --bind "$d" "$root$d"
  done
  failed=0
  for bin in "$@"; do
    echo "qemu10: $(basename "$bin")"
    # VMRUN_EXPECT_QEMU: the version the tests must see.
    chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
      VMRUN_EXPECT_QEMU=10.0 RUST_BACKTRACE=1 \
      sh -c "cd \"$repo\" && exec \"$bin\" --test-threads=2" || failed=1
  done
  exit $failed
' qemu10 "$root" "$repo" "$target" "${binaries[@]}"
