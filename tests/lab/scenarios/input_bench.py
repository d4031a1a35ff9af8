"""Router latency and idle cost, not a test: 10k key events
written on a virtual keyboard and read back, once straight from the
keyboard's own node (the floor: uinput, the input core, evdev, this
script) and once from the router's proxy. Both clocks are CLOCK_MONOTONIC:
`e2e` is write start to read return in this script; `stamp` is write start
to the kernel's timestamp of the event on the node read (for the proxy:
when the router's write reached the input core). The nested guest is paused
(QMP `stop`) while measuring: under TCG its vCPU would compete with the
router for the lab guest's two vCPUs, which a KVM guest on a real host does
not. `forwarder` is the
same hop done by the smallest possible router (a blocking read/write loop
in another process), to tell the lab's own cost of a hop from vmrun's.
Prints JSON."""

import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from input_lib import *  # noqa: E402,F403

N = int(os.environ.get("INPUT_BENCH_EVENTS", "10000"))
HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.environ["VMRUN_RUN_DIR"]
R = Results()


def pct(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))]


def ping_pong(dev, reader):
    """N single-key batches (press/release alternating), each read back."""
    e2e, stamp = [], []
    for i in range(N):
        t0 = time.monotonic_ns()
        dev.key(KEY_A, 1 - i % 2)
        while True:
            sec, usec, t, c, v = reader.read_one()
            if t == EV_KEY:
                stamp.append(sec * 1_000_000_000 + usec * 1000 - t0)
            if t == EV_SYN:
                break
        e2e.append(time.monotonic_ns() - t0)
    return {
        "e2e_p50_us": pct(e2e, 0.5) / 1000, "e2e_p99_us": pct(e2e, 0.99) / 1000,
        "stamp_p50_us": pct(stamp, 0.5) / 1000, "stamp_p99_us": pct(stamp, 0.99) / 1000,
        "n": len(e2e),
    }


def forwarder(source_node, ready_w):
    """The smallest possible router, for comparison: another process that
    grabs the device and copies each read to a uinput device, blocking."""
    src = os.open(source_node, os.O_RDONLY)
    fcntl.ioctl(src, EVIOCGRAB, 1)
    sink = keyboard("bench forwarder sink")
    os.write(ready_w, sink.node.encode())
    os.close(ready_w)
    while True:
        os.write(sink.fd, os.read(src, EVENT.size * 64))


def forwarded(dev):
    """ping_pong through `forwarder` in a child process, with its CPU time."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            forwarder(dev.node, w)
        finally:
            os._exit(0)
    os.close(w)
    node = os.read(r, 100).decode()
    reader = Reader(node, monotonic=True)
    c0 = cpu_ticks(pid)
    out = ping_pong(dev, reader)
    out["cpu_us_per_event"] = (cpu_ticks(pid) - c0) * 10_000 / N
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return out


def cpu_ticks(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime + stime


def switches(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("voluntary_ctxt_switches"):
            return int(line.split()[1])
    return -1


def main():
    kbd = keyboard("bench keyboard")
    link("/dev/input/by-id/bench-kbd", kbd.node)
    vm_config("b1", "/dev/input/by-id/bench-kbd", None, binary=HERE + "/qemu_noinput.py")
    code, out = vmrun("start", "b1", "--detach")
    R["start_exit"], R["start_out"] = code, out
    sup = status("b1").get("supervisor_pid")
    R["paused"] = vmrun("qmp", "b1", "stop")[0] == 0

    direct = keyboard("bench direct")
    R["direct"] = ping_pong(direct, Reader(direct.node, monotonic=True))
    R["forwarder"] = forwarded(direct)
    direct.close()
    proxy = Reader(os.path.realpath(RUN + "/b1/input-keyboard"), monotonic=True)
    time.sleep(2)
    c0, w0, t0 = cpu_ticks(sup), switches(sup), time.monotonic()
    R["routed"] = ping_pong(kbd, proxy)
    R["routed_cpu_us_per_event"] = (cpu_ticks(sup) - c0) * 10_000 / N
    R["routed_wakeups"] = switches(sup) - w0
    R["routed_s"] = round(time.monotonic() - t0, 2)
    # Idle: nothing typed for 10 s.
    c0, w0 = cpu_ticks(sup), switches(sup)
    time.sleep(10)
    R["idle_cpu_ticks_10s"] = cpu_ticks(sup) - c0
    R["idle_wakeups_10s"] = switches(sup) - w0
    R["clk_tck"] = os.sysconf("SC_CLK_TCK")
    vmrun("stop", "b1")
    for k in ("e2e_p50_us", "e2e_p99_us", "stamp_p50_us", "stamp_p99_us"):
        R.r["added_" + k] = round(R.r["routed"][k] - R.r["direct"][k], 1)


try:
    main()
except Exception:
    R["error"] = traceback.format_exc()
R.dump()
