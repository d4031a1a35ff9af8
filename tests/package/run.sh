#!/usr/bin/env bash
# Builds the packages (scripts/package) and checks the .deb on a clean
# Debian 12 root: it installs with dpkg alone, holds every file it should,
# `vmrun --version` and `vmrun check --json` run from it, the `vmrun` user
# and root's 0700 dirs exist, and removal leaves none of its files. The .rpm
# must list the same files.
#
# The clean root (debootstrap minbase) is cached in $VMRUN_CLEAN_ROOT
# (default /var/cache/vmrun-ci/bookworm) and copied for each run, so every
# run installs on an untouched system. Mounts live in a private namespace.
# --root-only makes that root and stops (.ci/run makes it while it builds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[ "$(id -u)" -eq 0 ] || { echo "package: needs root (debootstrap, chroot)" >&2; exit 1; }

cache=${VMRUN_CLEAN_ROOT:-/var/cache/vmrun-ci/bookworm}
mirror=$(grep -hm1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -1 || true)
if [ ! -e "$cache/.complete" ]; then
  rm -rf "$cache" && mkdir -p "$(dirname "$cache")"
  debootstrap --variant=minbase bookworm "$cache.tmp" "${mirror:-http://deb.debian.org/debian}" \
    > "$cache.debootstrap.log" 2>&1 || { tail -20 "$cache.debootstrap.log" >&2; exit 1; }
  touch "$cache.tmp/.complete" && mv "$cache.tmp" "$cache"
fi
[ "${1:-}" != "--root-only" ] || exit 0

mapfile -t built < <(scripts/package)
deb=${built[0]}
rpm=${built[1]:-}
[ -n "$rpm" ] || { echo "package: no .rpm was built" >&2; exit 1; }

# The files the package must hold.
expected=(
  /usr/bin/vmrun
  /usr/lib/systemd/system/vmrun@.service
  /usr/lib/udev/rules.d/70-vmrun.rules
  /usr/lib/sysusers.d/vmrun.conf
  /usr/lib/tmpfiles.d/vmrun.conf
  /usr/share/bash-completion/completions/vmrun
  /usr/share/zsh/vendor-completions/_vmrun
  /usr/share/fish/vendor_completions.d/vmrun.fish
  /usr/share/man/man1/vmrun.1.gz
  /usr/share/doc/vmrun/examples/win11.toml
  /usr/share/doc/vmrun/examples/demo.toml
)
deb_files=$(dpkg-deb --fsys-tarfile "$deb" | tar -t | sed 's#^\.##' | grep -v '/$' | sort)
for f in "${expected[@]}"; do
  grep -qx "$f" <<<"$deb_files" || { echo "package: $f is not in $deb" >&2; exit 1; }
done
rpm_files=$(rpm -qlp "$rpm" 2>/dev/null | sort)
[ "$deb_files" = "$rpm_files" ] || {
  echo "package: the .rpm and the .deb hold different files:" >&2
  diff <(echo "$deb_files") <(echo "$rpm_files") >&2
  exit 1
}
grep -q '^ExecStart=/usr/bin/vmrun start %i$' <(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/systemd/system/vmrun@.service)

work=$(mktemp -d /var/tmp/vmrun-package.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -a "$cache" "$work/root"
cp "$deb" "$work/root/vmrun.deb"

unshare --mount --propagation private bash -euo pipefail -c '
  r=$1
  mount -t proc proc "$r/proc"
  for d in sys dev; do mount --rbind "/$d" "$r/$d"; done
  inside() { chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
  inside dpkg -i /vmrun.deb
  inside vmrun --version | grep -q "^vmrun "
  # check exits 0, 1 or 2 by what it found (a chroot has no IOMMU); what
  # matters is a JSON report of every check.
  set +e; inside vmrun check --json > "$r/check.json"; rc=$?; set -e
  [ "$rc" -le 2 ] || { echo "package: vmrun check --json exited $rc" >&2; exit 1; }
  grep -q "\"checks\"" "$r/check.json" || { echo "package: check --json printed no report" >&2; cat "$r/check.json" >&2; exit 1; }
  inside getent passwd vmrun >/dev/null || { echo "package: no vmrun user after install" >&2; exit 1; }
  for d in /var/lib/vmrun /var/cache/vmrun; do
    [ "$(stat -c %a:%U "$r$d")" = 700:root ] || { echo "package: $d is $(stat -c %a:%U "$r$d")" >&2; exit 1; }
  done
  inside dpkg -r vmrun
  inside dpkg -P vmrun
  if inside dpkg -s vmrun >/dev/null 2>&1; then echo "package: still installed after purge" >&2; exit 1; fi
  for f in /usr/bin/vmrun /usr/lib/systemd/system/vmrun@.service /usr/share/man/man1/vmrun.1.gz; do
    [ ! -e "$r$f" ] || { echo "package: $f is left after removal" >&2; exit 1; }
  done
' package "$work/root"
echo "package: $(basename "$deb") and $(basename "$rpm") install, run and remove cleanly"
