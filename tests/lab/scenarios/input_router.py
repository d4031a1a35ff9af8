"""Router mode on a real kernel. Virtual keyboard and mouse on
/dev/uinput stand in for the real ones, with by-id links the way udev makes
them. VM r1 runs under a QEMU that leaves the proxies alone
(qemu_noinput.py), so this script can read what reaches them; VM r3 runs
the real QEMU, which must hold them. Prints one JSON object of facts."""

import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from input_lib import *  # noqa: E402,F403

R = Results()
HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.environ["VMRUN_RUN_DIR"]
KBD_LINK = "/dev/input/by-id/usb-lab_Keyboard-event-kbd"
MOUSE_LINK = "/dev/input/by-id/usb-lab_Mouse-event-mouse"
SWITCHES = "/tmp/switches"


def keys(events):
    """The key events of `events` as [code, value] lists (JSON-friendly)."""
    return [[c, v] for (t, c, v) in events if t == EV_KEY]


def focus(name):
    return status(name).get("input_focus")


def main():
    kbd = keyboard("lab keyboard")
    ms = mouse("lab mouse")
    link(KBD_LINK, os.path.relpath(kbd.node, os.path.dirname(KBD_LINK)))
    link(MOUSE_LINK, os.path.relpath(ms.node, os.path.dirname(MOUSE_LINK)))

    # ---- vmrun input list, against the real kernel's sysfs
    code, out = vmrun("input", "list", "--json")
    R["list_exit"] = code
    listed = {d["name"]: d for d in json.loads(out)} if code == 0 else {}
    R["list_kbd_kind"] = listed.get("lab keyboard", {}).get("kind")
    R["list_mouse_kind"] = listed.get("lab mouse", {}).get("kind")
    R["list_kbd_by_id"] = listed.get("lab keyboard", {}).get("by_id")

    # ---- r1: the router with readable proxies; on_switch as a user with
    # a supplementary group (as ddcutil's user is in i2c), which it keeps.
    with open("/etc/passwd", "a") as f:
        f.write("switcher:x:4242:4242::/tmp:/bin/sh\n")
    with open("/etc/group", "a") as f:
        f.write("switcher:x:4242:\ni2c:x:4343:switcher\n")
    vm_config("r1", KBD_LINK, MOUSE_LINK, binary=HERE + "/qemu_noinput.py",
              on_switch=["sh", "-c", 'echo "$1 $(id -u) $(id -G)" >> ' + SWITCHES, "on-switch"],
              on_switch_user="switcher")
    code, out = vmrun("start", "r1", "--detach")
    R["r1_start_exit"] = code
    R["r1_start_out"] = out
    pk_node = os.path.realpath(RUN + "/r1/input-keyboard")
    pm_node = os.path.realpath(RUN + "/r1/input-mouse")
    R["proxy_kbd_name"] = open("/sys/class/input/%s/device/name" % os.path.basename(pk_node)).read().strip()
    mouse_keys = sysfs_caps(pm_node, "key")
    R["proxy_mouse_extra_buttons"] = BTN_SIDE in mouse_keys and BTN_EXTRA in mouse_keys
    R["proxy_mouse_hwheel"] = REL_HWHEEL in sysfs_caps(pm_node, "rel")
    pk, pm = Reader(pk_node), Reader(pm_node)
    R["focus_at_start"] = focus("r1")
    R["kbd_grabbed_by_router"] = not Reader(kbd.node).try_grab()

    # Guest focus: events reach the proxies, extra buttons and hwheel too.
    kbd.key(KEY_A, 1)
    kbd.key(KEY_A, 0)
    R["guest_a"] = keys(pk.events(1.0))
    ms.emit((EV_REL, REL_HWHEEL, -1), (EV_KEY, BTN_SIDE, 1))
    ms.emit((EV_KEY, BTN_SIDE, 0))
    R["guest_mouse"] = [[t, c, v] for (t, c, v) in pm.events(1.0)]

    # A key held while the guest loses focus is released on the proxy.
    kbd.key(KEY_D, 1)
    R["held_d_down"] = keys(pk.events(1.0))
    code, out = vmrun("input", "r1", "host")
    R["to_host_exit"], R["to_host_out"] = code, out
    R["held_d_released"] = keys(pk.events(1.0))
    host = Reader(kbd.node)
    kbd.key(KEY_D, 0)

    # Host focus: nothing reaches the proxy, the host's reader sees it all.
    kbd.key(KEY_B, 1)
    kbd.key(KEY_B, 0)
    R["host_proxy"] = keys(pk.events(0.5))
    R["host_reader"] = keys(host.events(0.5))
    R["kbd_free_on_host"] = Reader(kbd.node).try_grab()

    # The hotkey on the host: the guest gets nothing of it, and the grab
    # waits until both keys are up, so the host sees them released.
    kbd.key(KEY_LEFTCTRL, 1)
    kbd.key(KEY_RIGHTCTRL, 1)
    R["hotkey_host_focus"] = focus("r1")
    kbd.key(KEY_RIGHTCTRL, 0)
    kbd.key(KEY_LEFTCTRL, 0)
    R["hotkey_host_reader"] = keys(host.events(0.5))
    R["hotkey_host_proxy"] = keys(pk.events(0.5))
    kbd.key(KEY_C, 1)
    kbd.key(KEY_C, 0)
    R["after_hotkey_proxy"] = keys(pk.events(1.0))
    R["after_hotkey_host_reader"] = keys(host.events(0.3))

    # The hotkey in the guest: the first Ctrl reached the guest and is
    # released there; the second never reaches it.
    kbd.key(KEY_LEFTCTRL, 1)
    kbd.key(KEY_RIGHTCTRL, 1)
    R["hotkey_guest_proxy"] = keys(pk.events(1.0))
    R["hotkey_guest_focus"] = focus("r1")
    kbd.key(KEY_RIGHTCTRL, 0)
    kbd.key(KEY_LEFTCTRL, 0)
    R["hotkey_guest_proxy_after"] = keys(pk.events(0.3))
    code, out = vmrun("input", "r1", "toggle")
    R["toggle_out"] = out
    R["switches"] = open(SWITCHES).read().splitlines() if wait_for(
        lambda: os.path.exists(SWITCHES) and len(open(SWITCHES).read().splitlines()) >= 4, 10) else []

    # Replug: a held key is released when its device vanishes; the new
    # device is opened and grabbed behind the same proxy.
    host.close()
    kbd.key(KEY_G, 1)
    R["replug_g_down"] = keys(pk.events(1.0))
    kbd.close()
    R["replug_g_released"] = keys(pk.events(2.0))
    os.unlink(KBD_LINK)
    kbd = keyboard("lab keyboard")
    link(KBD_LINK, os.path.relpath(kbd.node, os.path.dirname(KBD_LINK)))

    def replug_routes():
        kbd.key(KEY_F, 1)
        kbd.key(KEY_F, 0)
        return keys(pk.events(0.3)) == [[KEY_F, 1], [KEY_F, 0]]

    t0 = time.monotonic()
    R["replug_routes"] = wait_for(replug_routes, 20)
    R["replug_ms"] = int((time.monotonic() - t0) * 1000)
    R["replug_same_proxy"] = os.path.realpath(RUN + "/r1/input-keyboard") == pk_node
    R["replug_grabbed"] = not Reader(kbd.node).try_grab()

    # Stop: the kernel takes the proxies away and the grabs with them.
    pk.close()
    pm.close()
    code, out = vmrun("stop", "r1")
    R["r1_stop_exit"] = code
    R["r1_proxies_after_stop"] = input_nodes_named("vmrun r1 keyboard") + input_nodes_named("vmrun r1 mouse")
    R["r1_kbd_free_after_stop"] = Reader(kbd.node).try_grab()

    # kill -9 of the supervisor: same, with nobody cleaning up but the kernel.
    vm_config("r2", KBD_LINK, MOUSE_LINK, binary=HERE + "/qemu_noinput.py")
    code, out = vmrun("start", "r2", "--detach")
    R["r2_start_exit"] = code
    st = status("r2")
    R["r2_proxies_running"] = len(input_nodes_named("vmrun r2 keyboard"))
    R["r2_grabbed_running"] = not Reader(kbd.node).try_grab()
    sup, qpid = st.get("supervisor_pid"), st.get("qemu_pid")
    if sup:
        os.kill(sup, signal.SIGKILL)
        wait_for(lambda: gone(sup), 30)
    R["r2_proxies_after_kill"] = input_nodes_named("vmrun r2 keyboard") + input_nodes_named("vmrun r2 mouse")
    R["r2_kbd_free_after_kill"] = Reader(kbd.node).try_grab()
    R["r2_mouse_free_after_kill"] = Reader(ms.node).try_grab()
    if qpid:
        os.kill(qpid, signal.SIGKILL)

    # ---- r3: the real QEMU holds the proxies for good.
    vm_config("r3", KBD_LINK, MOUSE_LINK)
    code, out = vmrun("start", "r3", "--detach")
    R["r3_start_exit"], R["r3_start_out"] = code, out
    st = status("r3")
    qpid = st.get("qemu_pid")
    cmdline = open("/proc/%d/cmdline" % qpid).read().split("\0") if qpid else []
    p3 = os.path.realpath(RUN + "/r3/input-keyboard")
    m3 = os.path.realpath(RUN + "/r3/input-mouse")
    # QEMU runs as the VM's own uid: it opens the proxies' nodes, which
    # vmrun gave to that uid, not the links in the 0700 run dir.
    R["r3_virtio_input_host_is_the_proxy_node"] = [a for a in cmdline if a.startswith("virtio-input-host-pci")] == [
        "virtio-input-host-pci,id=kbd0,evdev=" + p3,
        "virtio-input-host-pci,id=mouse0,evdev=" + m3,
    ]
    quid = os.stat("/proc/%d" % qpid).st_uid if qpid else -1
    R["r3_qemu_uid_not_root"] = quid > 0
    R["r3_proxies_owned_by_qemu"] = all(os.stat(n).st_uid == quid for n in (p3, m3))
    R["r3_proxy_grabbed_by_qemu"] = not Reader(p3).try_grab()
    R["r3_mouse_proxy_grabbed_by_qemu"] = not Reader(os.path.realpath(RUN + "/r3/input-mouse")).try_grab()
    vmrun("input", "r3", "host")
    R["r3_proxy_grabbed_on_host_focus"] = not Reader(p3).try_grab()
    code, out = vmrun("stop", "r3")
    R["r3_stop_exit"] = code


try:
    main()
except Exception:
    R["error"] = traceback.format_exc()
R.dump()
