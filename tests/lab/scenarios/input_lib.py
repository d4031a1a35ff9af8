"""uinput and evdev from Python's standard library, for the input scenarios:
virtual keyboards and mice the test types on, and readers of any
/dev/input/eventN (the router's proxies included). ioctl numbers and struct
layouts are those of linux/uinput.h and linux/input.h on x86_64."""

import errno
import fcntl
import json
import os
import select
import struct
import subprocess
import time

EV_SYN, EV_KEY, EV_REL = 0, 1, 2
SYN_REPORT = 0
REL_X, REL_Y, REL_HWHEEL, REL_WHEEL = 0, 1, 6, 8
KEY_D, KEY_A, KEY_B, KEY_C, KEY_F, KEY_G = 32, 30, 48, 46, 33, 34
KEY_LEFTCTRL, KEY_RIGHTCTRL = 29, 97
BTN_LEFT, BTN_SIDE, BTN_EXTRA, BTN_TASK = 0x110, 0x113, 0x114, 0x117

EVENT = struct.Struct("qqHHi")  # struct input_event: timeval, type, code, value


def _ioc(direction, kind, nr, size):
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | nr


UI_SET_EVBIT = _ioc(1, "U", 100, 4)
UI_SET_KEYBIT = _ioc(1, "U", 101, 4)
UI_SET_RELBIT = _ioc(1, "U", 102, 4)
UI_DEV_CREATE = _ioc(0, "U", 1, 0)
UI_GET_SYSNAME_64 = _ioc(2, "U", 44, 64)
EVIOCGRAB = _ioc(1, "E", 0x90, 4)
EVIOCSCLOCKID = _ioc(1, "E", 0xA0, 4)
CLOCK_MONOTONIC = 1


class Uinput:
    """A virtual device; closing it destroys it, as an unplug would."""

    def __init__(self, name, keys, rels=()):
        self.fd = os.open("/dev/uinput", os.O_WRONLY | os.O_NONBLOCK)
        fcntl.ioctl(self.fd, UI_SET_EVBIT, EV_KEY)
        for k in keys:
            fcntl.ioctl(self.fd, UI_SET_KEYBIT, k)
        if rels:
            fcntl.ioctl(self.fd, UI_SET_EVBIT, EV_REL)
            for r in rels:
                fcntl.ioctl(self.fd, UI_SET_RELBIT, r)
        # struct uinput_user_dev: name[80], input_id, ff_effects_max, abs*[64] x4
        setup = struct.pack("80sHHHHI" + "256i", name.encode(), 3, 0x1234, 0x5678, 1, 0, *([0] * 256))
        os.write(self.fd, setup)
        fcntl.ioctl(self.fd, UI_DEV_CREATE)
        buf = bytearray(64)
        fcntl.ioctl(self.fd, UI_GET_SYSNAME_64, buf)
        sysname = buf.split(b"\0")[0].decode()
        sysdir = "/sys/devices/virtual/input/" + sysname
        events = [e for e in os.listdir(sysdir) if e.startswith("event")]
        self.node = "/dev/input/" + events[0]
        wait_for(lambda: os.path.exists(self.node), 5)

    def emit(self, *events):
        data = b"".join(EVENT.pack(0, 0, t, c, v) for (t, c, v) in events)
        os.write(self.fd, data + EVENT.pack(0, 0, EV_SYN, SYN_REPORT, 0))

    def key(self, code, value):
        self.emit((EV_KEY, code, value))

    def close(self):
        os.close(self.fd)


def keyboard(name):
    return Uinput(name, range(1, 249))


def mouse(name):
    return Uinput(name, range(BTN_LEFT, BTN_TASK + 1), (REL_X, REL_Y, REL_HWHEEL, REL_WHEEL))


class Reader:
    """A plain evdev client of one node."""

    def __init__(self, path, monotonic=False):
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        if monotonic:
            fcntl.ioctl(self.fd, EVIOCSCLOCKID, struct.pack("i", CLOCK_MONOTONIC))

    def try_grab(self):
        """Whether EVIOCGRAB succeeds (released again at once); False on EBUSY."""
        try:
            fcntl.ioctl(self.fd, EVIOCGRAB, 1)
        except OSError as e:
            if e.errno == errno.EBUSY:
                return False
            raise
        fcntl.ioctl(self.fd, EVIOCGRAB, 0)
        return True

    def events(self, timeout):
        """Every (type, code, value) but SYN until `timeout` s pass quietly."""
        out = []
        while True:
            batch = self.batch(timeout)
            if batch is None:
                return out
            out.extend(batch)

    def batch(self, timeout):
        """The events up to the next SYN_REPORT, or None after `timeout` s."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            data = os.read(self.fd, EVENT.size)
            _, _, t, c, v = EVENT.unpack(data)
            if t == EV_SYN and c == SYN_REPORT:
                return out
            if t != EV_SYN:
                out.append((t, c, v))

    def read_one(self):
        """Blocks for one raw event: (seconds, microseconds, type, code, value)."""
        select.select([self.fd], [], [])
        return EVENT.unpack(os.read(self.fd, EVENT.size))

    def drain(self):
        self.events(0.05)

    def close(self):
        os.close(self.fd)


def wait_for(cond, seconds, step=0.02):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def link(path, target):
    """Points `path` at `target` the way udev does: a rename into place."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.rename(tmp, path)


def sysfs_caps(node, kind):
    """A capability bitmap of `node` as a set of codes."""
    name = os.path.basename(os.path.realpath(node))
    words = open("/sys/class/input/%s/device/capabilities/%s" % (name, kind)).read().split()
    bits = set()
    for i, w in enumerate(reversed(words)):
        v = int(w, 16)
        bits.update(i * 64 + b for b in range(64) if v >> b & 1)
    return bits


def input_nodes_named(name):
    out = []
    for e in os.listdir("/sys/class/input"):
        try:
            if e.startswith("event") and open("/sys/class/input/%s/device/name" % e).read().strip() == name:
                out.append("/dev/input/" + e)
        except OSError:
            pass
    return out


def vmrun(*args, timeout=300):
    p = subprocess.run([os.environ["VMRUN"], *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr)[-3000:]


def status(name):
    code, out = vmrun("status", name, "--json")
    try:
        return json.loads(out) if code == 0 else {}
    except ValueError:
        return {}


def gone(pid):
    try:
        st = open("/proc/%d/stat" % pid).read()
    except OSError:
        return True
    return st.rsplit(")", 1)[1].split()[0] == "Z"


def vm_config(name, keyboard, mouse_path, mode="router", binary=None, toggle=None, on_switch=None,
              on_switch_user="root"):
    home = os.environ["VMRUN_HOME"]
    lines = [
        'memory = "64M"', "[cpu]", "cores = 1", "[firmware]", 'type = "bios"',
        "[network]", 'mode = "none"', "[display]", 'mode = "none"',
        "[shutdown]", 'timeout = "1s"', "[qemu]", 'accel = "tcg"',
    ]
    if binary:
        lines.append('binary = "%s"' % binary)
    lines += ["[input]", 'keyboard = "%s"' % keyboard, 'mode = "%s"' % mode]
    if mouse_path:
        lines.append('mouse = "%s"' % mouse_path)
    if toggle:
        lines.append('toggle = "%s"' % toggle)
    if on_switch:
        lines.append("on_switch = %s" % json.dumps(on_switch))
        # The lab runs as root with no sudo and no seat: name the user.
        lines.append('on_switch_user = "%s"' % on_switch_user)
    os.makedirs(home + "/vms", exist_ok=True)
    with open("%s/vms/%s.toml" % (home, name), "w") as f:
        f.write("\n".join(lines) + "\n")


class Results:
    """Facts recorded by name; an exception ends the run but keeps them."""

    def __init__(self):
        self.r = {}

    def __setitem__(self, k, v):
        self.r[k] = v

    def dump(self):
        print(json.dumps(self.r))
