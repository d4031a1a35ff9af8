#!/bin/sh
# Run by the lab's /init (busybox sh, chrooted into the overlay root, with
# the host's tools) before it hands PID 1 to the host root's systemd
# (LAB_INIT=systemd). Everything written here lands in the guest's tmpfs
# overlay, never on the host.
#
# The guest it makes is a small single-GPU desktop host:
#  - lab.target (the default target): basic.target plus logind, the display
#    manager, a GPU-using system service, and the scenario. Not
#    multi-user.target: that pulls whatever the host machine has enabled
#    (databases, gettys, timers), which differs between machines;
#  - display-manager.service -> lab-xorg.service: Xorg with the modesetting
#    driver on the lab VGA (bochs-drm, /dev/dri/card0), run as root, as a
#    display manager runs it (no logind session needed);
#  - lab-gpu-monitor.service: a system service a VM config names in
#    [takeover] stop_units;
#  - user `labuser` (uid 4242), lingering, so logind starts its user
#    manager at boot, with lab-user-audio.service (a stand-in for a user's
#    sound server) for [takeover] user_units;
#  - lab-scenario.service: runs $LAB_SCRIPT once the desktop is started,
#    records its exit code, the journal, and powers the guest off.
set -e
. /lab/lab.env
S=/etc/systemd/system
mkdir -p $S /etc/tmpfiles.d /etc/X11/xorg.conf.d /usr/local/sbin /var/lib/systemd/linger

# The host's fstab names its own disks: mount units for them would wait 90 s
# for devices the guest doesn't have. The root is already mounted (overlay).
: >/etc/fstab
# tmpfiles.d's tmp.conf ("D /tmp") empties /tmp at boot, which would remove
# a checkout under /tmp that init.sh bound in. An empty file of the same
# name in /etc masks it (tmpfiles.d(5)).
: >/etc/tmpfiles.d/tmp.conf

# Masked: what can't work here (no network, no RTC sync, no pstore), what is
# slow under TCG and not needed (hwdb and ldconfig rebuilds that trigger
# because the host's /usr is newer than /etc/.updated; udev-settle), and
# timers and gettys (a getty on ttyS0 would write over the harness's
# serial log).
for u in systemd-udev-settle.service systemd-timesyncd.service systemd-pstore.service \
	systemd-hwdb-update.service ldconfig.service systemd-journal-catalog-update.service \
	systemd-update-done.service systemd-firstboot.service systemd-repart.service \
	timers.target getty.target serial-getty@ttyS0.service console-getty.service \
	systemd-networkd.service systemd-networkd-wait-online.service networking.service \
	systemd-resolved.service apt-daily.service apt-daily-upgrade.service; do
	ln -sf /dev/null "$S/$u"
done

cat >$S/lab.target <<'EOF'
[Unit]
Description=vmrun lab: a single-GPU desktop host running a scenario
Requires=basic.target
After=basic.target
Wants=systemd-logind.service systemd-user-sessions.service display-manager.service lab-gpu-monitor.service lab-scenario.service
AllowIsolate=yes
EOF
ln -sf lab.target $S/default.target

# Xorg: the modesetting driver drives bochs-drm's KMS device. No glamor
# (AccelMethod none) and no GLX: their software GL (llvmpipe, swrast) takes
# 25 s to initialise under TCG, on every start of the server.
cat >/etc/X11/xorg.conf.d/20-lab.conf <<'EOF'
Section "Module"
	Disable "glx"
EndSection
Section "Device"
	Identifier "lab-vga"
	Driver "modesetting"
	Option "AccelMethod" "none"
EndSection
EOF
# udevadm wait: the DRM node exists and udev has processed it (as a real
# display manager waits for logind's seat0 to be graphical). At boot udev
# loads bochs by itself; after a takeover vmrun's modprobe brings it back.
cat >$S/lab-xorg.service <<'EOF'
[Unit]
Description=Lab display server (Xorg on /dev/dri/card0)
After=systemd-user-sessions.service systemd-udev-trigger.service systemd-logind.service

[Service]
ExecStartPre=/usr/bin/udevadm wait --timeout=60 /dev/dri/card0
ExecStart=/usr/lib/xorg/Xorg :0 -nolisten tcp -noreset -logfile /run/Xorg.0.log vt7

[Install]
Alias=display-manager.service
EOF
# What `systemctl enable lab-xorg` makes of the Alias: the link vmrun's
# display_manager = "auto" reads.
ln -sf $S/lab-xorg.service $S/display-manager.service

cat >$S/lab-gpu-monitor.service <<'EOF'
[Unit]
Description=Lab stand-in for a service using the GPU (stop_units)

[Service]
ExecStart=/bin/sleep infinity
EOF

useradd --uid 4242 --create-home --shell /bin/sh labuser
touch /var/lib/systemd/linger/labuser
U=/home/labuser/.config/systemd/user
mkdir -p $U/default.target.wants
cat >$U/lab-user-audio.service <<'EOF'
[Unit]
Description=Lab stand-in for a user's sound server (user_units)

[Service]
ExecStart=/bin/sleep infinity

[Install]
WantedBy=default.target
EOF
ln -sf ../lab-user-audio.service $U/default.target.wants/lab-user-audio.service
chown -R labuser:labuser /home/labuser/.config

# The scenario, as init.sh runs it in the busybox lab: a clean environment,
# its output in scenario.out, its exit code in exit_code. The journal
# replaces dmesg.log (it has the kernel's messages too).
cat >/usr/local/sbin/lab-run-scenario <<'EOF'
#!/bin/busybox sh
. /lab/lab.env
echo "lab-init: running $LAB_SCRIPT" >/dev/console
/usr/bin/env -i \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	HOME=/root TERM=dumb LANG=C.UTF-8 \
	/bin/busybox sh -c '. /lab/lab.env; cd /tmp; exec /bin/busybox sh "$LAB_SCRIPT"' \
	>/lab/scenario.out 2>&1
rc=$?
echo "$rc" >/lab/exit_code
journalctl -b --no-pager -o short-monotonic >/lab/dmesg.log 2>&1 || dmesg >/lab/dmesg.log
sync
echo "lab-init: scenario exit $rc" >/dev/console
# As busybox init.sh does: the reboot(2) syscall now, no unit stops.
/bin/busybox poweroff -f
EOF
chmod 0755 /usr/local/sbin/lab-run-scenario
cat >$S/lab-scenario.service <<EOF
[Unit]
Description=vmrun lab scenario $LAB_SCRIPT
After=display-manager.service lab-gpu-monitor.service systemd-logind.service systemd-user-sessions.service user@4242.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lab-run-scenario
TimeoutStartSec=infinity
EOF
