"""QEMU mode on a real kernel: QEMU's input-linux reads the
virtual keyboard and mouse; the keyboard is unplugged and plugged back
(a new node behind the same by-id link) and vmrun must re-add its object
over QMP so that QEMU holds the new device. Prints one JSON object."""

import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from input_lib import *  # noqa: E402,F403

R = Results()
KBD_LINK = "/dev/input/by-id/usb-lab_Keyboard-event-kbd"
MOUSE_LINK = "/dev/input/by-id/usb-lab_Mouse-event-mouse"
LOG = os.environ["VMRUN_STATE_DIR"] + "/q1/vmrun.log"


def objects():
    code, out = vmrun("qmp", "q1", "qom-list", '{"path": "/objects"}')
    try:
        return sorted(o["name"] for o in json.loads(out) if o["type"] == "child<input-linux>")
    except (ValueError, KeyError, TypeError):
        return ["unreadable: " + out]


def qom_evdev(obj):
    code, out = vmrun("qmp", "q1", "qom-get", '{"path": "/objects/%s", "property": "evdev"}' % obj)
    return out.strip().strip('"')


def log_has(text):
    try:
        return text in open(LOG).read()
    except OSError:
        return False


def main():
    kbd = keyboard("lab keyboard")
    ms = mouse("lab mouse")
    link(KBD_LINK, os.path.relpath(kbd.node, os.path.dirname(KBD_LINK)))
    link(MOUSE_LINK, os.path.relpath(ms.node, os.path.dirname(MOUSE_LINK)))
    vm_config("q1", KBD_LINK, MOUSE_LINK, mode="qemu", toggle="scrolllock")
    code, out = vmrun("start", "q1", "--detach")
    R["start_exit"], R["start_out"] = code, out
    R["objects"] = objects()
    # input-linux grabs at startup.
    R["kbd_grabbed_by_qemu"] = wait_for(lambda: not Reader(kbd.node).try_grab(), 10, 0.5)
    R["mouse_grabbed_by_qemu"] = not Reader(ms.node).try_grab()
    # QEMU runs as the VM's own uid: the devices are given to it for the run.
    R["kbd_owned_by_qemu_uid"] = os.stat(kbd.node).st_uid > 0

    # Unplug and plug back: a new node behind the same link.
    old_node = kbd.node
    kbd.close()
    os.unlink(KBD_LINK)
    R["gone_logged"] = wait_for(lambda: log_has("is gone; re-added when it is back"), 20)
    kbd = keyboard("lab keyboard")
    link(KBD_LINK, os.path.relpath(kbd.node, os.path.dirname(KBD_LINK)))
    t0 = time.monotonic()
    # Wait on vmrun's word, not on EVIOCGRAB: a test grab at the wrong
    # moment would make QEMU's own grab fail.
    R["readd_logged"] = wait_for(lambda: log_has("QEMU object kbd0 re-added"), 30)
    R["readd_ms"] = int((time.monotonic() - t0) * 1000)
    R["objects_after"] = objects()
    R["kbd_evdev_after"] = qom_evdev("kbd0")
    R["new_kbd_grabbed_by_qemu"] = wait_for(lambda: not Reader(kbd.node).try_grab(), 10, 0.5)
    R["mouse_still_grabbed"] = not Reader(ms.node).try_grab()
    code, out = vmrun("stop", "q1")
    R["stop_exit"] = code
    R["kbd_free_after_stop"] = Reader(kbd.node).try_grab()
    # Teardown gives the replugged node (reached by its link) back to root.
    R["kbd_root_after_stop"] = os.stat(kbd.node).st_uid == 0
    R["mouse_root_after_stop"] = os.stat(ms.node).st_uid == 0


try:
    main()
except Exception:
    R["error"] = traceback.format_exc()
R.dump()
