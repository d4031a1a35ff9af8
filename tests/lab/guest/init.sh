#!/bin/sh
# /init of the lab's initramfs (static busybox). It mounts the host's root
# read-only over 9p under a tmpfs overlay, chroots into it and runs the
# scenario named in /scratch/lab.env as root, then powers the guest off;
# with LAB_INIT=systemd it boots the host root's systemd instead, which runs
# the scenario (systemd.sh).
# Lines starting with "lab-init:" are read by the host harness.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() { echo "lab-init: $*"; }
die() {
	say "FATAL: $*"
	poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# The list is in dependency order (computed from modules.dep on the host):
# insmod does not resolve dependencies, and no modprobe exists yet.
for m in $(cat /modules/order); do
	insmod "/modules/$m" || die "insmod $m failed"
done

P9="trans=virtio,version=9p2000.L,msize=512000"
mount -t 9p -o "$P9,ro" hostroot /lower || die "cannot mount the host root (9p tag hostroot)"
mount -t 9p -o "$P9" scratch /scratch || die "cannot mount the scratch folder (9p tag scratch)"
[ -r /scratch/lab.env ] || die "no /scratch/lab.env"
. /scratch/lab.env

mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
# overlayfs gives the guest a writable root without touching the host: the
# lower layer is the read-only 9p host root, writes land in tmpfs.
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
	die "cannot mount the overlay root"

R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs tmpfs $R/tmp
mount -t tmpfs tmpfs $R/run
# A checkout under the host's /tmp or /run (CI clones anywhere) would vanish
# under those tmpfs mounts: bind the host's top-level folder of every path
# the scenario needs back in, from the read-only lower layer.
for p in "$LAB_MODULES" "$LAB_SCRIPT" "$VMRUN"; do
	case "$p" in
	/tmp/?* | /run/?*)
		top=${p#/}; base=${top%%/*}; rest=${top#*/}; first=${rest%%/*}
		if [ ! -e "$R/$base/$first" ]; then
			mkdir -p "$R/$base/$first"
			mount --bind "/lower/$base/$first" "$R/$base/$first" ||
				die "cannot bind /$base/$first from the host"
		fi
		;;
	esac
done
# The guest kernel's modules, extracted on the host, replace the host's own.
mkdir -p $R/lib/modules
mount --bind "$R$LAB_MODULES" $R/lib/modules || die "cannot bind $LAB_MODULES"
mkdir -p $R/lab
mount --bind /scratch $R/lab || die "cannot bind the scratch folder"

if [ "$LAB_INIT" = systemd ]; then
	# The host root's systemd as PID 1: systemd.sh (run in the new root,
	# with the host's tools) writes the lab's units into the overlay;
	# lab-scenario.service then runs the script, records its exit code and
	# powers off. switch_root empties the initramfs and moves the overlay
	# onto /; the 9p and tmpfs mounts under it stay.
	chroot $R /bin/busybox sh /lab/systemd.sh >$R/lab/systemd-setup.out 2>&1 ||
		die "systemd.sh failed: $(cat $R/lab/systemd-setup.out)"
	say "starting systemd for $LAB_SCRIPT"
	exec switch_root $R /lib/systemd/systemd
	die "cannot exec systemd"
fi

say "running $LAB_SCRIPT"
chroot $R /usr/bin/env -i \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	HOME=/root TERM=dumb LANG=C.UTF-8 \
	/bin/busybox sh -c '. /lab/lab.env; cd /tmp; exec /bin/busybox sh "$LAB_SCRIPT"' \
	>$R/lab/scenario.out 2>&1
rc=$?
echo "$rc" >/scratch/exit_code
# "quiet" keeps the console short; the full kernel log goes with a failure report.
dmesg >/scratch/dmesg.log 2>&1
sync
say "scenario exit $rc"
poweroff -f
