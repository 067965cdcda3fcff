#!/usr/bin/env python3
"""Benchmark harness for tcp-router: compares it side by side with no proxy ("direct"), with the
shape's floor (bench/floor/relay.c, the leanest C relay in tcp-router's shape, built here) and with
the TCP forwarders Debian packages (socat, haproxy, nginx stream, rinetd, redir), all on loopback.

Run `python3 bench/bench.py --help`, and see bench/README.md for what each figure means.

Python 3 standard library only. Every address used is 127.0.0.1; every loop is bounded in count
and in time; every process started here runs in its own process group and is stopped at the end,
also on Ctrl-C, SIGTERM or an error.
"""

import argparse
import csv
import datetime
import io
import json
import os
import platform
import re
import resource
import select
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"  # the only address this harness ever talks to
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30

ALL_PROXIES = ["direct", "floor", "tcp-router", "tcp-router-quiet", "socat", "haproxy", "nginx", "rinetd", "redir"]
# Variants of tcp-router, run only when asked for (--baseline, --with-admin).
ROUTER_VARIANTS = ["tcp-router-admin"]
# Variants of the floor, run only when asked for (--floor-log, --floor-small-tls).
FLOOR_VARIANTS = ["floor-log", "floor-small-tls"]
PEERS = ["socat", "haproxy", "nginx", "rinetd", "redir"]
FLOOR_SOURCE = os.path.join(BENCH_DIR, "floor", "relay.c")
# glibc reserves static TLS for modules dlopen'ed later (glibc.rtld.optional_static_tls, and some
# per namespace, glibc.rtld.nns); with its thread block that fills a thread's top stack page, so
# a thread's frames start on a second page. The floor loads nothing later, so floor-small-tls
# runs it with neither reserve: one stack page per thread.
SMALL_TLS_TUNABLES = "glibc.rtld.optional_static_tls=0:glibc.rtld.nns=1"

# tool -> Debian package(s) that provide it
PACKAGES = {
    "iperf3": ["iperf3"],
    "redis-server": ["redis-server"],
    "redis-benchmark": ["redis-tools"],
    "socat": ["socat"],
    "haproxy": ["haproxy"],
    "nginx": ["nginx", "libnginx-mod-stream"],
    "rinetd": ["rinetd"],
    "redir": ["redir"],
}
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

# (case id, kind, parameters, title)
CASES = [
    ("bulk1", "bulk", {"parallel": 1, "reverse": False}),
    ("bulk8", "bulk", {"parallel": 8, "reverse": False}),
    ("bulkR", "bulk", {"parallel": 1, "reverse": True}),
    ("rr1", "rr", {"clients": 1, "keepalive": True}),
    ("rr50", "rr", {"clients": 50, "keepalive": True}),
    ("conn50", "rr", {"clients": 50, "keepalive": False}),
    ("memA", "mem", {"which": 0}),
    ("memB", "mem", {"which": 1}),
    # tcp-router only: what idle listening ports cost (one range of 1,000 against one port)
    ("listen1k", "listeners", {"ports": 1000}),
    # tcp-router only: what idle UDP flows cost (1,000 client addresses against one)
    ("udpflows1k", "udpflows", {"flows": 1000}),
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Interrupted(Exception):
    pass


def _on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


# ---------------------------------------------------------------------------------------------
# /proc helpers


def read_file(path, default=None):
    try:
        with open(path, "r") as f:
            return f.read()
    except OSError:
        return default


def proc_stat(pid):
    """(pgrp, ppid, cpu ticks incl. reaped children) of one process, or None if gone."""
    text = read_file(f"/proc/{pid}/stat")
    if not text:
        return None
    rest = text[text.rfind(")") + 2 :].split()
    # rest[0]=state [1]=ppid [2]=pgrp ... [11]=utime [12]=stime [13]=cutime [14]=cstime
    try:
        ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
        return int(rest[2]), int(rest[1]), ticks
    except (IndexError, ValueError):
        return None


def group_pids(pgid, live_only=False):
    """Processes in the process group (zombies too, unless live_only)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            if live_only:
                text = read_file(f"/proc/{name}/stat") or ""
                if text[text.rfind(")") + 2 : text.rfind(")") + 3] == "Z":
                    continue
            st = proc_stat(int(name))
            if st and st[0] == pgid:
                pids.append(int(name))
    return pids


def group_cpu_seconds(pgid):
    """CPU seconds (user+system, all threads) of every process in the group, plus what their
    reaped children used (cutime/cstime), so forked and already-exited workers count too."""
    total = 0
    for pid in group_pids(pgid):
        st = proc_stat(pid)
        if st:
            total += st[2]
    return total / CLK_TCK


class CpuSampler:
    """CPU seconds used by a process group between start and stop(), children included.

    Two estimates, and the larger is taken: (1) the group's utime+stime+cutime+cstime, exact
    when parents reap their children with wait() (socat), but blind to children that are
    auto-reaped (a parent ignoring SIGCHLD, e.g. redir); (2) each process's own utime+stime,
    sampled every 0.1 s by a thread and remembered after it exits, which misses at most the last
    0.1 s of each exited child. Neither double counts."""

    def __init__(self, pgid, interval=0.1):
        import threading

        self.pgid = pgid
        self.interval = interval
        self.base = {}
        self.last = {}
        self.exact0 = group_cpu_seconds(pgid)
        for pid in group_pids(pgid):
            t = self._own_ticks(pid)
            if t is not None:
                self.base[pid] = t
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @staticmethod
    def _own_ticks(pid):
        text = read_file(f"/proc/{pid}/stat")
        if not text:
            return None
        rest = text[text.rfind(")") + 2 :].split()
        try:
            return int(rest[11]) + int(rest[12])
        except (IndexError, ValueError):
            return None

    def _sample(self):
        for pid in group_pids(self.pgid):
            t = self._own_ticks(pid)
            if t is not None:
                self.last[pid] = max(t, self.last.get(pid, 0))

    def _loop(self):
        # bounded: stops when asked, or after an hour at most
        for _ in range(int(3600 / self.interval)):
            if self.done.wait(self.interval):
                return
            self._sample()

    def stop(self):
        self.done.set()
        self.thread.join(timeout=5)
        self._sample()
        sampled = sum(t - self.base.get(pid, 0) for pid, t in self.last.items()) / CLK_TCK
        exact = group_cpu_seconds(self.pgid) - self.exact0
        return max(sampled, exact)


def group_memory_kib(pgid):
    """(PSS, RSS) in KiB summed over the process group, from /proc/PID/smaps_rollup."""
    pss = rss = 0
    for pid in group_pids(pgid):
        text = read_file(f"/proc/{pid}/smaps_rollup")
        if text is None:
            text = read_file(f"/proc/{pid}/status", "")
            m = re.search(r"^VmRSS:\s+(\d+)", text, re.M)
            if m:
                pss += int(m.group(1))
                rss += int(m.group(1))
            continue
        m = re.search(r"^Pss:\s+(\d+)", text, re.M)
        if m:
            pss += int(m.group(1))
        m = re.search(r"^Rss:\s+(\d+)", text, re.M)
        if m:
            rss += int(m.group(1))
    return pss, rss


def group_threads(pgid):
    n = 0
    for pid in group_pids(pgid):
        m = re.search(r"^Threads:\s+(\d+)", read_file(f"/proc/{pid}/status", ""), re.M)
        if m:
            n += int(m.group(1))
    return n


def mem_available_kib():
    m = re.search(r"^MemAvailable:\s+(\d+)", read_file("/proc/meminfo", ""), re.M)
    return int(m.group(1)) if m else 0


def kernel_mem_kib():
    """Slab + KernelStack + PageTables from /proc/meminfo: the kernel memory that sockets,
    threads and processes cost, far less disturbed by other programs' page cache and heaps than
    MemAvailable."""
    text = read_file("/proc/meminfo", "")
    total = 0
    for key in ("Slab", "KernelStack", "PageTables"):
        m = re.search(rf"^{key}:\s+(\d+)", text, re.M)
        if m:
            total += int(m.group(1))
    return total


def mem_settled(samples=5, gap=0.2):
    """(MemAvailable, kernel memory) in KiB, each the median of a few samples."""
    avail, kern = [], []
    for _ in range(samples):
        avail.append(mem_available_kib())
        kern.append(kernel_mem_kib())
        time.sleep(gap)
    return statistics.median(avail), statistics.median(kern)


TCP_LISTEN = "0A"
TCP_TIME_WAIT = "06"
TCP_ESTABLISHED = "01"


def _tcp_sockets_netlink():
    """[(local port, remote port, state hex)] via NETLINK_SOCK_DIAG, asking the kernel for every
    state but TIME_WAIT: with tens of thousands of TIME_WAIT sockets left by the connection-rate
    case, reading /proc/net/tcp costs ~0.1 s of CPU each time, this a few ms."""
    import struct

    NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
    NLM_F_REQUEST, NLM_F_DUMP, NLMSG_DONE, NLMSG_ERROR = 0x1, 0x300, 3, 2
    states = ((1 << 12) - 1) & ~(1 << 6)  # all TCP states except TIME_WAIT (6)
    out = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(5)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, states) + bytes(48)
            hdr = struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
            nl.send(hdr + req)
            done = False
            for _ in range(100000):  # bounded: one dump ends with NLMSG_DONE
                data = nl.recv(1 << 20)
                if not data:
                    raise OSError("netlink: empty read")
                off = 0
                while off + 16 <= len(data):
                    mlen, mtype, _fl, mseq, _pid = struct.unpack_from("=IHHII", data, off)
                    if mlen < 16:
                        raise OSError("netlink: bad message")
                    if mtype == NLMSG_DONE:
                        done = True
                    elif mtype == NLMSG_ERROR:
                        raise OSError("netlink: error reply")
                    elif mtype == SOCK_DIAG_BY_FAMILY and mseq == seq:
                        st = data[off + 17]
                        sport, dport = struct.unpack_from(">HH", data, off + 20)
                        out.append((sport, dport, f"{st:02X}"))
                    off += (mlen + 3) & ~3
                if done:
                    break
    return out


_netlink_ok = True


def tcp_sockets():
    """[(local port, remote port, state hex)] of every TCP socket (v4 and v6) in this network
    namespace except those in TIME_WAIT."""
    global _netlink_ok
    if _netlink_ok:
        try:
            return _tcp_sockets_netlink()
        except OSError:
            _netlink_ok = False
    out = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = read_file(path, "")
        for line in text.splitlines()[1:]:
            parts = line.split()
            if len(parts) < 4 or parts[3] == TCP_TIME_WAIT:
                continue
            try:
                lport = int(parts[1].rsplit(":", 1)[1], 16)
                rport = int(parts[2].rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            out.append((lport, rport, parts[3]))
    return out


def is_listening(port):
    return any(l == port and st == TCP_LISTEN for l, _r, st in tcp_sockets())


def count_established_local(port):
    return sum(1 for l, _r, st in tcp_sockets() if l == port and st == TCP_ESTABLISHED)


def count_live_on(ports):
    """Sockets with a local or remote port in `ports` that are neither listening nor in
    TIME_WAIT: connections not yet fully closed by both sides."""
    ports = set(ports)
    return sum(
        1
        for l, r, st in tcp_sockets()
        if (l in ports or r in ports) and st not in (TCP_LISTEN, TCP_TIME_WAIT)
    )


# ---------------------------------------------------------------------------------------------
# ports


_used_ports = set()


def _below_ephemeral():
    """(start, end): the ports this harness hands out, the 12,000 below the kernel's ephemeral
    range (so client sockets in TIME_WAIT never sit on them)."""
    try:
        low = int(read_file("/proc/sys/net/ipv4/ip_local_port_range", "32768 60999").split()[0])
    except ValueError:
        low = 32768
    return max(1025, low - 12000), low


def free_port():
    """A free loopback TCP port below the ephemeral range (so client sockets in TIME_WAIT never
    sit on it), not handed out before in this run."""
    start, low = _below_ephemeral()
    import random

    for _ in range(500):
        port = random.randrange(start, low) if low - start > 100 else 0
        if port in _used_ports:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((HOST, port))
            port = s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free loopback port found")


def free_block(count):
    """The first of `count` consecutive loopback ports free a moment ago (all bound, then
    released), below the ephemeral range and none handed out before in this run."""
    start, low = _below_ephemeral()
    import random

    for _ in range(200):
        first = random.randrange(start, max(start + 1, low - count))
        ports = range(first, first + count)
        if any(p in _used_ports for p in ports):
            continue
        bound = []
        try:
            for port in ports:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                bound.append(sock)
                sock.bind((HOST, port))
        except OSError:
            continue
        finally:
            for sock in bound:
                sock.close()
        _used_ports.update(ports)
        return first
    raise RuntimeError(f"no {count} consecutive free loopback ports found")


# ---------------------------------------------------------------------------------------------
# processes


class Proc:
    """A child in its own process group (session), output to a log file."""

    registry = []

    def __init__(self, name, argv, logpath, cwd=None, env=None):
        self.name = name
        self.argv = argv
        self.logpath = logpath
        self.logf = open(logpath, "ab")
        self.p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self.pgid = self.p.pid
        self.stopped = None
        Proc.registry.append(self)

    def alive(self):
        return self.p.poll() is None

    def log_tail(self, n=8):
        try:
            with open(self.logpath, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def _killpg(self, sig):
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace=10.0):
        """SIGTERM the group, wait up to `grace` s, then SIGKILL. Returns (exit code, seconds to
        exit, killed?)."""
        if self.stopped is not None:
            return self.stopped
        t0 = time.monotonic()
        killed = False
        if self.alive():
            self._killpg(signal.SIGTERM)
            try:
                self.p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                killed = True
                self._killpg(signal.SIGKILL)
                try:
                    self.p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        secs = time.monotonic() - t0
        # leftovers of the group (forked children, workers) go too
        deadline = time.monotonic() + 3
        while group_pids(self.pgid) and time.monotonic() < deadline:
            self._killpg(signal.SIGKILL)
            time.sleep(0.05)
        self.logf.close()
        self.stopped = (self.p.returncode, secs, killed)
        return self.stopped

    @classmethod
    def stop_all(cls):
        for pr in reversed(cls.registry):
            try:
                pr.stop(grace=3.0)
            except Exception as e:  # keep stopping the others
                log(f"warning: could not stop {pr.name}: {e}")


def run_cmd(argv, timeout, **kw):
    """Run a command in its own process group with a hard timeout; the whole group is killed on
    timeout. Returns (returncode or None on timeout, stdout, stderr)."""
    p = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **kw,
    )
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            out, err = b"", b""
        return None, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    except BaseException:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=5)
        raise


def wait_until(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


# ---------------------------------------------------------------------------------------------
# the idle-connection holder: a tiny upstream that answers each read with +PONG and keeps the
# connection open until the peer closes it.


def holder_main(port, max_seconds):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((HOST, port))
    ls.listen(4096)
    ls.setblocking(False)
    ep = select.epoll()
    ep.register(ls.fileno(), select.EPOLLIN)
    conns = {}
    parent = os.getppid()
    deadline = time.monotonic() + max_seconds
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while time.monotonic() < deadline and os.getppid() == parent:
        for fd, _ev in ep.poll(1.0):
            if fd == ls.fileno():
                for _ in range(1024):
                    try:
                        c, _a = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        time.sleep(0.01)
                        break
                    c.setblocking(False)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN)
            else:
                c = conns.get(fd)
                if c is None:
                    continue
                try:
                    data = c.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    try:
                        c.send(b"+PONG\r\n")
                    except OSError:
                        pass
                else:
                    ep.unregister(fd)
                    del conns[fd]
                    c.close()


# ---------------------------------------------------------------------------------------------
# proxies


class Proxy:
    name = "?"

    def __init__(self, h):
        self.h = h  # the Harness

    def start(self, listen_port, upstream_port, workdir, tag):
        raise NotImplementedError

    def version(self):
        return ""


class Direct(Proxy):
    name = "direct"


class Floor(Proxy):
    """The shape's floor: bench/floor/relay.c, built by the harness (Harness.build_floor) into
    its work directory. The reference every run shows tcp-router against."""

    name = "floor"
    relay_args = []
    env = None

    def start(self, lp, up, workdir, tag):
        argv = [self.h.floor_binary] + self.relay_args + [str(lp), HOST, str(up)]
        env = dict(os.environ, **self.env) if self.env else None
        return Proc(self.name, argv, os.path.join(workdir, f"{tag}.log"), env=env)

    def version(self):
        return self.h.floor_version


class FloorLog(Floor):
    """The floor with its one log line per connection (--floor-log), against tcp-router at info."""

    name = "floor-log"
    relay_args = ["--log"]


class FloorSmallTls(Floor):
    """The floor under glibc tunables that drop its reserve of static TLS (--floor-small-tls):
    one stack page per thread instead of two."""

    name = "floor-small-tls"
    env = {"GLIBC_TUNABLES": SMALL_TLS_TUNABLES}


class TcpRouter(Proxy):
    name = "tcp-router"

    def binary(self):
        return self.h.args.router

    def log_level(self):
        return self.h.args.router_log_level

    def start(self, lp, up, workdir, tag):
        argv = [self.binary(), "--log-level", self.log_level()]
        argv += self.h.args.router_arg
        argv += [f"{HOST}:{lp}", f"{HOST}:{up}"]
        return Proc(self.name, argv, os.path.join(workdir, f"{tag}.log"))

    def version(self):
        rc, out, err = run_cmd([self.binary(), "--version"], 5)
        v = (out or err).strip().splitlines()
        v = v[0] if rc == 0 and v else "(no --version)"
        try:
            mtime = datetime.datetime.fromtimestamp(os.path.getmtime(self.binary()))
            v += f", binary {self.binary()} built {mtime:%Y-%m-%d %H:%M}"
        except OSError:
            pass
        rc, out, _ = run_cmd(["git", "-C", REPO_DIR, "log", "-1", "--format=%h %cd", "--date=short"], 5)
        if rc == 0 and out.strip():
            v += f", repo at {out.strip()}"
        return v


def baseline_class(name, path):
    """A proxy class for another tcp-router build (--baseline NAME=PATH), to compare builds in one
    run: it runs as `tcp-router-NAME`."""

    class Baseline(TcpRouter):
        def binary(self):
            return path

    Baseline.name = f"tcp-router-{name}"
    return Baseline


def variant_class(name, args):
    """A proxy class for tcp-router (the --router build) with more arguments (--variant
    NAME=ARGS), to measure what a setting costs in one run: it runs as `tcp-router-NAME`."""

    class Variant(TcpRouter):
        def start(self, lp, up, workdir, tag):
            argv = [self.binary(), "--log-level", self.log_level()]
            argv += self.h.args.router_arg + shlex.split(args)
            argv += [f"{HOST}:{lp}", f"{HOST}:{up}"]
            return Proc(self.name, argv, os.path.join(workdir, f"{tag}.log"))

    Variant.name = f"tcp-router-{name}"
    return Variant


class TcpRouterQuiet(TcpRouter):
    """tcp-router with --log-level off, beside tcp-router at --router-log-level (default info,
    tcp-router's own default): what the per-connection log line costs, and the column to hold
    against peers and a floor that log nothing."""

    name = "tcp-router-quiet"

    def log_level(self):
        return "off"


class TcpRouterAdmin(TcpRouter):
    """tcp-router with its admin endpoint on, scraped once a second (--with-admin)."""

    name = "tcp-router-admin"

    def start(self, lp, up, workdir, tag):
        admin_port = free_port()
        argv = [self.binary(), "--log-level", self.log_level()]
        argv += self.h.args.router_arg
        argv += ["--admin", f"{HOST}:{admin_port}", f"{HOST}:{lp}", f"{HOST}:{up}"]
        proc = Proc(self.name, argv, os.path.join(workdir, f"{tag}.log"))
        threading.Thread(target=scrape_while_alive, args=(proc, admin_port), daemon=True).start()
        return proc


def scrape_while_alive(proc, port):
    """GETs /metrics once a second while `proc` runs, as a Prometheus server would."""
    import urllib.request

    url = f"http://{HOST}:{port}/metrics"
    while proc.alive():
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
        except OSError:
            pass
        time.sleep(1.0)


class Socat(Proxy):
    name = "socat"

    def start(self, lp, up, workdir, tag):
        # backlog=4096: socat's default listen backlog is 5, which drops SYNs as soon as 50
        # clients connect at once; every other proxy here has a backlog of 511 or more.
        argv = [
            "socat",
            f"TCP-LISTEN:{lp},fork,reuseaddr,bind={HOST},backlog=4096",
            f"TCP:{HOST}:{up}",
        ]
        return Proc(self.name, argv, os.path.join(workdir, f"{tag}.log"))

    def version(self):
        _, out, _ = run_cmd(["socat", "-V"], 5)
        m = re.search(r"socat version (\S+)", out)
        return m.group(1) if m else "?"


class Haproxy(Proxy):
    name = "haproxy"

    def start(self, lp, up, workdir, tag):
        conf = os.path.join(workdir, f"{tag}.cfg")
        with open(conf, "w") as f:
            f.write(
                f"""# generated by bench.py
global
    # 2 threads for 2 cores; no 'log' line, so nothing is logged
    nbthread {self.h.cores}
    # 4,000 idle connections through the proxy plus headroom; haproxy needs about
    # 2 fds per connection, within the 20,000 open-files limit the harness passes on
    maxconn 9000
defaults
    mode tcp
    maxconn 9000
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend fe
    bind {HOST}:{lp}
    default_backend be
backend be
    server up1 {HOST}:{up}
"""
            )
        return Proc(self.name, ["haproxy", "-db", "-f", conf], os.path.join(workdir, f"{tag}.log"))

    def version(self):
        _, out, _ = run_cmd(["haproxy", "-v"], 5)
        m = re.search(r"version (\S+)", out)
        return m.group(1) if m else "?"


class Nginx(Proxy):
    name = "nginx"

    @staticmethod
    def stream_load_line():
        """'' if the stream module is built in, a load_module line if it is a dynamic module
        (Debian: libnginx-mod-stream), None if it is not available."""
        _, out, err = run_cmd(["nginx", "-V"], 5)
        text = out + err
        if re.search(r"--with-stream(\s|$)", text):
            return ""
        if "--with-stream=dynamic" in text and os.path.exists(NGINX_STREAM_MODULE):
            return f"load_module {NGINX_STREAM_MODULE};\n"
        return None

    def start(self, lp, up, workdir, tag):
        prefix = os.path.join(workdir, f"{tag}-nginx")
        os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(
                f"""# generated by bench.py
{self.h.nginx_load}daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile 20000;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{
    worker_connections 10000;
}}
stream {{
    server {{
        listen {HOST}:{lp};
        proxy_pass {HOST}:{up};
    }}
}}
"""
            )
        argv = ["nginx", "-p", prefix + "/", "-c", conf, "-e", f"{prefix}/logs/error.log"]
        return Proc(self.name, argv, os.path.join(workdir, f"{tag}.log"))

    def version(self):
        _, out, err = run_cmd(["nginx", "-v"], 5)
        m = re.search(r"nginx/(\S+)", out + err)
        return m.group(1) if m else "?"


class Rinetd(Proxy):
    name = "rinetd"

    def start(self, lp, up, workdir, tag):
        conf = os.path.join(workdir, f"{tag}.conf")
        with open(conf, "w") as f:
            f.write(f"# generated by bench.py; no logfile line, so nothing is logged\n{HOST} {lp} {HOST} {up}\n")
        return Proc(self.name, ["rinetd", "-f", "-c", conf], os.path.join(workdir, f"{tag}.log"))

    def version(self):
        _, out, err = run_cmd(["rinetd", "-v"], 5)
        m = re.search(r"rinetd (\S+)", out + err)
        return m.group(1) if m else "?"


class Redir(Proxy):
    name = "redir"

    def start(self, lp, up, workdir, tag):
        argv = ["redir", "-n", "-l", "err", f"{HOST}:{lp}", f"{HOST}:{up}"]
        return Proc(self.name, argv, os.path.join(workdir, f"{tag}.log"))

    def version(self):
        _, out, err = run_cmd(["redir", "-v"], 5)
        return (out + err).strip().splitlines()[0] if (out + err).strip() else "?"


PROXY_CLASSES = {
    c.name: c
    for c in (Direct, Floor, FloorLog, FloorSmallTls, TcpRouter, TcpRouterQuiet, TcpRouterAdmin,
              Socat, Haproxy, Nginx, Rinetd, Redir)
}


def router_log_level(args, name):
    """The --log-level a tcp-router column runs at."""
    return "off" if name == "tcp-router-quiet" else args.router_log_level


# ---------------------------------------------------------------------------------------------
# the harness


class Harness:
    def __init__(self, args):
        self.args = args
        self.cores = os.cpu_count() or 2
        self.workdir = tempfile.mkdtemp(prefix="tcp-router-bench-")
        self.skipped = {}  # proxy -> reason
        self.notes = []  # free-form problems seen during the run
        self.results = {}  # (rep, case, proxy) -> dict
        self.stops = {}  # proxy -> list of (rc, secs, killed)
        self.proxy_logs = {}  # proxy -> [(case tag, [log paths])]
        self.log_summary = {}  # proxy -> report lines, made before the work dir is removed
        self.nginx_load = ""
        self.iperf = None
        self.redis = None
        self.holder = None
        self.versions = {}
        self.proxies = []
        self.mem_ns = args.mem_conns
        self.t_start = None
        self.elapsed = 0.0
        self.incomplete = None
        self.hung = {}  # proxy -> consecutive cases that timed out
        self.floor_binary = None
        self.floor_version = ""
        self.cases = list(CASES)

    # ----- setup -----

    def install(self, tools):
        missing = [t for t in tools if not shutil.which(t)]
        if "nginx" in tools and shutil.which("nginx") and Nginx.stream_load_line() is None:
            missing.append("nginx-stream")
        if not missing:
            return
        pkgs = []
        for t in missing:
            pkgs += PACKAGES.get(t, ["libnginx-mod-stream"] if t == "nginx-stream" else [])
        pkgs = sorted(set(pkgs))
        if self.args.no_install:
            log(f"not installing (--no-install): {' '.join(pkgs)}")
            return
        if os.geteuid() != 0:
            log(f"not root, cannot install: {' '.join(pkgs)} (apt-get install -y {' '.join(pkgs)})")
            return
        log(f"installing with apt-get: {' '.join(pkgs)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + pkgs
        rc, out, err = run_cmd(cmd, 900, env=env)
        if rc != 0:
            log("apt-get install failed; running apt-get update and trying again")
            run_cmd(["apt-get", "update", "-q"], 600, env=env)
            rc, out, err = run_cmd(cmd, 900, env=env)
            if rc != 0:
                log(f"apt-get install failed (rc={rc}):\n{err[-2000:]}")

    def select_proxies(self):
        """direct; the floor (unless --skip-floor) and its variants asked for; tcp-router, and
        tcp-router-quiet beside it when the floor runs; the other tcp-router builds asked for;
        the peers (unless --skip-peers). --only keeps direct and the floor, and what it names
        (tcp-router-quiet comes with tcp-router while the floor runs)."""
        a = self.args
        variants = []
        for spec in a.baseline:
            name, _, path = spec.rpartition("=")
            cls = baseline_class(name or "base", path)
            PROXY_CLASSES[cls.name] = cls
            ROUTER_VARIANTS.append(cls.name)
            variants.append(cls.name)
        for spec in a.variant:
            name, _, args = spec.partition("=")
            cls = variant_class(name, args)
            PROXY_CLASSES[cls.name] = cls
            ROUTER_VARIANTS.append(cls.name)
            variants.append(cls.name)
        if a.with_admin:
            variants.append("tcp-router-admin")
        floors = []
        if not a.skip_floor:
            floors = ["floor"] + (["floor-log"] if a.floor_log else []) + (["floor-small-tls"] if a.floor_small_tls else [])
        names = ["direct"] + floors + ["tcp-router"] + (["tcp-router-quiet"] if floors else []) + variants
        if not a.skip_peers:
            names += PEERS
        if a.only:
            wanted = {n.strip() for n in a.only.split(",") if n.strip()}
            known = ALL_PROXIES + ROUTER_VARIANTS + FLOOR_VARIANTS
            bad = sorted(n for n in wanted if n not in known)
            if bad:
                sys.exit(f"unknown proxy in --only: {', '.join(bad)} (known: {', '.join(known)})")
            if a.skip_floor and any(n.startswith("floor") for n in wanted):
                sys.exit("--only names a floor column, but --skip-floor leaves the floor out")
            keep = wanted | {"direct"} | ({"floor"} if floors else set())
            if "tcp-router" in wanted and floors:
                keep.add("tcp-router-quiet")
            # what --only names runs, even a peer with --skip-peers or a floor variant without its flag
            order = ["direct", "floor"] + FLOOR_VARIANTS + ["tcp-router", "tcp-router-quiet"] + variants + PEERS
            names = [n for n in order if n in keep]
        return names

    def build_floor(self):
        """Compiles bench/floor/relay.c into the work directory with `$CC -O2 -pthread` (CC
        from the environment, else cc, gcc or clang). Exits with a clear message if there is no
        C compiler or the build fails: the floor is the reference of every run, so a run
        without it is only made on purpose (--skip-floor)."""
        cc = shlex.split(os.environ.get("CC", "")) or next(([c] for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
        if not cc or not shutil.which(cc[0]):
            sys.exit(
                f"error: no C compiler found ({'CC=' + os.environ['CC'] if os.environ.get('CC') else 'cc, gcc, clang'}) "
                f"to build the floor relay, {FLOOR_SOURCE}. Install one (apt-get install -y gcc), "
                "or run without the floor column: --skip-floor"
            )
        out = os.path.join(self.workdir, "floor-relay")
        argv = cc + ["-O2", "-pthread", "-o", out, FLOOR_SOURCE]
        rc, so, se = run_cmd(argv, 120)
        if rc != 0 or not os.access(out, os.X_OK):
            sys.exit(f"error: building the floor relay failed (`{' '.join(argv)}`, rc={rc}):\n{(se or so).strip()[-2000:]}\n"
                     "(or run without it: --skip-floor)")
        _, vo, ve = run_cmd(cc + ["--version"], 10)
        ccv = ((vo or ve).strip().splitlines() or ["?"])[0]
        import hashlib

        with open(FLOOR_SOURCE, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        self.floor_binary = out
        self.floor_version = f"bench/floor/relay.c sha256 {digest}, `{' '.join(cc)} -O2 -pthread` ({ccv})"
        log(f"built the floor relay: {' '.join(argv)}")

    def check_proxy(self, name):
        """None if the proxy can run, else why not."""
        if name == "direct":
            return None
        if name.startswith("floor"):
            return None if self.floor_binary else "not built"
        if name.startswith("tcp-router"):
            r = PROXY_CLASSES[name](self).binary()
            if not (os.path.isfile(r) and os.access(r, os.X_OK)):
                return f"binary not found at {r} (build it with `cargo build --release`, or pass --router PATH)"
            return None
        if not shutil.which(name):
            pk = " ".join(PACKAGES[name])
            why = "not root, so not installed" if os.geteuid() != 0 else "install failed"
            if self.args.no_install:
                why = "--no-install"
            return f"`{name}` not installed ({why}; apt-get install -y {pk})"
        if name == "nginx":
            line = Nginx.stream_load_line()
            if line is None:
                return "nginx has no stream module (apt-get install -y libnginx-mod-stream)"
            self.nginx_load = line
        return None

    def start_upstreams(self):
        w = self.workdir
        self.iperf_port = free_port()
        self.redis_port = free_port()
        self.holder_port = free_port()
        self.start_iperf()
        self.redis = Proc(
            "redis-server",
            [
                "redis-server", "--port", str(self.redis_port), "--bind", HOST,
                "--save", "", "--appendonly", "no", "--protected-mode", "no",
                "--maxclients", "10000", "--daemonize", "no", "--logfile", "",
            ],
            os.path.join(w, "redis-server.log"),
        )
        self.holder = Proc(
            "holder",
            [sys.executable, os.path.abspath(__file__), "--internal-holder", str(self.holder_port)],
            os.path.join(w, "holder.log"),
        )
        for pr, port in ((self.redis, self.redis_port), (self.holder, self.holder_port)):
            if not wait_until(lambda: is_listening(port) or not pr.alive(), 15) or not pr.alive():
                raise RuntimeError(f"{pr.name} did not start on port {port}:\n{pr.log_tail()}")

    def start_iperf(self):
        if self.iperf is not None:
            self.iperf.stop(grace=3)
        self.iperf = Proc(
            "iperf3-server",
            ["iperf3", "-s", "-B", HOST, "-p", str(self.iperf_port)],
            os.path.join(self.workdir, "iperf3-server.log"),
        )
        if not wait_until(lambda: is_listening(self.iperf_port) or not self.iperf.alive(), 15) or not self.iperf.alive():
            raise RuntimeError(f"iperf3 server did not start:\n{self.iperf.log_tail()}")

    def gather_versions(self, proxies):
        v = {}
        _, out, _ = run_cmd(["iperf3", "--version"], 5)
        v["iperf3"] = (out.split() + ["?", "?"])[1]
        _, out, _ = run_cmd(["redis-server", "--version"], 5)
        m = re.search(r"v=(\S+)", out)
        v["redis-server"] = m.group(1) if m else "?"
        _, out, _ = run_cmd(["redis-benchmark", "--version"], 5)
        v["redis-benchmark"] = (out.split() + ["?", "?"])[1]
        v["python3"] = platform.python_version()
        for n in proxies:
            if n != "direct":
                try:
                    v[n] = PROXY_CLASSES[n](self).version()
                except Exception as e:
                    v[n] = f"? ({e})"
        self.versions = v

    # ----- one case -----

    def upstream_for(self, kind):
        return {"bulk": self.iperf_port, "rr": self.redis_port, "mem": self.holder_port}[kind]

    def run_case(self, rep, case, kind, params, pname):
        """Start a fresh proxy, run one measurement through it, stop it."""
        if kind == "listeners":
            return self.case_listeners(pname, f"r{rep + 1}-{case}-{pname}", **params)
        if kind == "udpflows":
            return self.case_udp_flows(pname, f"r{rep + 1}-{case}-{pname}", **params)
        up = self.upstream_for(kind)
        proc = None
        port = up
        tag = f"r{rep + 1}-{case}-{pname}"
        try:
            if pname != "direct":
                port = free_port()
                proc = PROXY_CLASSES[pname](self).start(port, up, self.workdir, tag)
                paths = [proc.logpath]
                if pname == "nginx":
                    paths.append(os.path.join(self.workdir, f"{tag}-nginx", "logs", "error.log"))
                self.proxy_logs.setdefault(pname, []).append((tag, paths))
                ok = wait_until(lambda: is_listening(port) or not proc.alive(), 10)
                if not ok or not proc.alive():
                    return {"error": f"did not start listening: rc={proc.p.poll()} {proc.log_tail(3)}"}
                time.sleep(0.3)  # let workers (nginx) come up after the listener
            if kind == "bulk":
                return self.case_bulk(port, proc, **params)
            if kind == "rr":
                return self.case_rr(port, proc, **params)
            return self.case_mem(port, proc, pname, self.mem_ns[params["which"]])
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as e:
            return {"error": f"harness error: {type(e).__name__}: {e}"}
        finally:
            if proc is not None:
                st = proc.stop(grace=self.args.stop_grace)
                self.stops.setdefault(pname, []).append((tag,) + st)

    def case_bulk(self, port, proc, parallel, reverse):
        a = self.args
        argv = ["iperf3", "-c", HOST, "-p", str(port), "-t", str(a.duration), "-J"]
        if parallel > 1:
            argv += ["-P", str(parallel)]
        if reverse:
            argv += ["-R"]
        sampler = CpuSampler(proc.pgid) if proc else None
        nprocs0 = len(group_pids(proc.pgid)) if proc else 0
        res = None
        try:
            for attempt in range(2):
                rc, out, err = run_cmd(argv, a.duration + 25)
                res = self._parse_iperf(rc, out, err)
                if "error" not in res:
                    break
                # the iperf3 server may be left busy or wedged: restart it, retry a "busy" once
                self.start_iperf()
                if "busy" not in res["error"]:
                    break
                time.sleep(1)
            if proc is not None:
                # let forked children (socat, redir) finish and be reaped before the last sample
                wait_until(lambda: len(group_pids(proc.pgid, live_only=True)) <= nprocs0, 3)
                time.sleep(0.2)
        finally:
            cpu = sampler.stop() if sampler else None
        if proc is not None:
            if not proc.alive():
                return {"error": f"proxy exited during the run (rc={proc.p.returncode}): {proc.log_tail(3)}"}
            if "error" not in res:
                res["cpu_s"] = cpu
        return res

    @staticmethod
    def _parse_iperf(rc, out, err):
        if rc is None:
            return {"error": "timeout (iperf3 killed)"}
        try:
            j = json.loads(out)
        except ValueError:
            return {"error": f"iperf3 rc={rc}, no JSON: {(err or out).strip()[-200:]}"}
        if j.get("error"):
            return {"error": f"iperf3: {j['error']}"}
        try:
            recv = j["end"]["sum_received"]
            bytes_ = recv["bytes"]
            bps = recv["bits_per_second"]
        except (KeyError, TypeError):
            return {"error": "iperf3 JSON without end.sum_received"}
        if bytes_ <= 0:
            return {"error": "iperf3 moved no data"}
        return {"gbps": bps / 1e9, "bytes": bytes_}

    def case_rr(self, port, proc, clients, keepalive):
        a = self.args
        if keepalive:
            n = a.rr_requests_1 if clients == 1 else a.rr_requests_50
        else:
            n = a.conn_requests
        argv = [
            "redis-benchmark", "-h", HOST, "-p", str(port), "-t", "ping_mbulk",
            "-c", str(clients), "-n", str(n), "--csv",
        ]
        if not keepalive:
            argv += ["-k", "0"]
        rc, out, err = run_cmd(argv, a.rr_timeout)
        if rc is None:
            return {"error": f"timeout after {a.rr_timeout}s (redis-benchmark killed)"}
        row = None
        for r in csv.reader(io.StringIO(out)):
            if r and r[0] == "PING_MBULK":
                row = r
        errlines = [l for l in err.splitlines() if l.strip() and not l.startswith("WARNING: Keepalive")]
        if rc != 0 or row is None:
            return {"error": f"redis-benchmark rc={rc}: {' | '.join(errlines[-3:]) or out.strip()[-200:]}"}
        res = {"rps": float(row[1]), "p50_ms": float(row[4]), "p99_ms": float(row[6])}
        if errlines:
            res["stderr"] = " | ".join(errlines[-3:])[:300]
        if proc is not None and not proc.alive():
            return {"error": f"proxy exited during the run (rc={proc.p.returncode}): {proc.log_tail(3)}"}
        return res

    def wait_closed(self, ports, timeout):
        return wait_until(lambda: count_live_on(ports) == 0, timeout, step=0.2)

    def case_mem(self, port, proc, pname, n):
        hp = self.holder_port
        if not self.wait_closed([hp], 30):
            return {"error": f"{count_live_on([hp])} connections to the holder still open before the case"}
        time.sleep(0.5)
        pss0, rss0 = group_memory_kib(proc.pgid) if proc else (0, 0)
        avail0, kern0 = mem_settled()
        socks = []
        errors = []
        res = {}
        answered = 0
        try:
            # One at a time: connect, send one small request, wait for the answer, so both legs
            # are established end to end before the next connect, and a proxy's short listen
            # backlog (redir: 10) never overflows into 1 s SYN retransmits.
            deadline = time.monotonic() + self.args.mem_open_timeout
            for _ in range(n):
                if time.monotonic() > deadline:
                    errors.append(f"opening took over {self.args.mem_open_timeout}s")
                    break
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(5)
                try:
                    s.connect((HOST, port))
                    socks.append(s)
                    s.sendall(b"PING\r\n")
                    data = s.recv(64)
                    if data.startswith(b"+PONG"):
                        answered += 1
                    else:
                        errors.append("closed before answering" if not data else f"answer {data[:20]!r}")
                except OSError as e:
                    if s not in socks:
                        s.close()
                    errors.append(f"{type(e).__name__}: {e}")
                if len(errors) >= 3:
                    break
            res["open_s"] = round(time.monotonic() - deadline + self.args.mem_open_timeout, 2)
            at_holder = count_established_local(hp)
            if answered < n or at_holder < n:
                uniq = sorted(set(errors))[:3]
                return {
                    "error": f"only {answered}/{n} answered, {at_holder} established at the upstream"
                    + (f" ({'; '.join(uniq)})" if uniq else "")
                }
            time.sleep(self.args.mem_settle)
            if proc is not None:
                pss1, rss1 = group_memory_kib(proc.pgid)
                res["pss_kib_per_conn"] = (pss1 - pss0) / n
                res["rss_kib_per_conn"] = (rss1 - rss0) / n
                res["threads"] = group_threads(proc.pgid)
                res["procs"] = len(group_pids(proc.pgid))
                if not proc.alive():
                    return {"error": f"proxy exited (rc={proc.p.returncode}): {proc.log_tail(3)}"}
            avail1, kern1 = mem_settled()
            res["avail_drop_kib_per_conn"] = (avail0 - avail1) / n
            res["kernel_kib_per_conn"] = (kern1 - kern0) / n
            res["n"] = n
        finally:
            for s in socks:
                try:
                    s.close()
                except OSError:
                    pass
            t0 = time.monotonic()
            if not self.wait_closed([port, hp], 30 if answered == n else 5):
                left = count_live_on([port, hp])
                msg = f"{left} sockets still not closed 30 s after the clients closed {n} connections"
                self.notes.append(f"{pname} mem n={n}: {msg}")
                res["lingering"] = left
            else:
                res["close_s"] = round(time.monotonic() - t0, 2)
        return res

    def case_listeners(self, pname, tag, ports):
        """What idle listening ports cost tcp-router: a process listening on one range of `ports`
        ports against one listening on a single port, neither with a client. Each is measured
        after it settles: PSS and RSS (the growth per extra port is the listener's user-space
        cost), threads, and the CPU it uses over 10 s (5 s with --quick) with nothing to do
        (utime+stime from /proc/PID/stat: the accept loop's wake-ups)."""
        cls = PROXY_CLASSES[pname](self)
        res = {"ports": ports}
        for key, count in (("one", 1), ("many", ports)):
            first = free_block(count)
            last = first + count - 1
            listen = f"{HOST}:{first}" if count == 1 else f"{HOST}:{first}-{last}"
            argv = [cls.binary(), "--log-level", cls.log_level()] + self.args.router_arg
            argv += [listen, f"{HOST}:{self.holder_port}"]
            proc = Proc(pname, argv, os.path.join(self.workdir, f"{tag}-{key}.log"))
            self.proxy_logs.setdefault(pname, []).append((f"{tag}-{key}", [proc.logpath]))
            try:
                up = wait_until(lambda: is_listening(last) or not proc.alive(), 30)
                if not up or not proc.alive():
                    return {"error": f"did not start listening on {listen}: rc={proc.p.poll()} {proc.log_tail(3)}"}
                time.sleep(self.args.mem_settle)
                pss, rss = group_memory_kib(proc.pgid)
                cpu0 = group_cpu_seconds(proc.pgid)
                t0 = time.monotonic()
                time.sleep(self.args.listen_idle)
                cpu = group_cpu_seconds(proc.pgid) - cpu0
                res[f"pss_kib_{key}"] = pss
                res[f"rss_kib_{key}"] = rss
                res[f"threads_{key}"] = group_threads(proc.pgid)
                res[f"cpu_ms_per_s_{key}"] = cpu * 1000 / (time.monotonic() - t0)
            finally:
                st = proc.stop(grace=self.args.stop_grace)
                self.stops.setdefault(pname, []).append((f"{tag}-{key}",) + st)
        extra = ports - 1
        res["pss_kib_per_listener"] = (res["pss_kib_many"] - res["pss_kib_one"]) / extra
        res["rss_kib_per_listener"] = (res["rss_kib_many"] - res["rss_kib_one"]) / extra
        return res

    def case_udp_flows(self, pname, tag, flows):
        """What idle UDP flows cost tcp-router: one UDP listener to a UDP echo server (in this
        process), with one client address, then with `flows` (each its own socket, one datagram
        each way, then silent under an hour's idle timeout). Each is measured after it settles:
        PSS and RSS (the growth per extra flow is a flow's cost: its thread, its 64 KiB receive
        buffer, its socket) and threads."""
        cls = PROXY_CLASSES[pname](self)
        echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        echo.bind((HOST, 0))
        echo.settimeout(0.5)
        stop = threading.Event()

        def answer():
            while not stop.is_set():
                try:
                    data, peer = echo.recvfrom(2048)
                    echo.sendto(data, peer)
                except OSError:
                    continue

        threading.Thread(target=answer, daemon=True).start()
        res = {"flows": flows}
        clients = []
        try:
            for key, count in (("one", 1), ("many", flows)):
                port = free_port()
                conf = os.path.join(self.workdir, f"{tag}-{key}.conf")
                with open(conf, "w") as f:
                    f.write(f"route {HOST}:{port}/udp {HOST}:{echo.getsockname()[1]}/udp "
                            f"idle_timeout=1h max_flows={flows + 16}\n")
                argv = [cls.binary(), "--log-level", cls.log_level(), "-c", conf]
                proc = Proc(pname, argv, os.path.join(self.workdir, f"{tag}-{key}.log"))
                self.proxy_logs.setdefault(pname, []).append((f"{tag}-{key}", [proc.logpath]))
                try:
                    if not wait_until(lambda: "/udp ->" in read_file(proc.logpath, "") or not proc.alive(), 30) \
                            or not proc.alive():
                        return {"error": f"did not start: rc={proc.p.poll()} {proc.log_tail(3)}"}
                    for i in range(count):
                        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        c.settimeout(10)
                        c.bind((HOST, 0))
                        clients.append(c)
                        c.sendto(b"flow %d" % i, (HOST, port))
                        if c.recv(64) != b"flow %d" % i:
                            return {"error": f"flow {i}: a wrong echo"}
                    time.sleep(self.args.mem_settle)
                    pss, rss = group_memory_kib(proc.pgid)
                    res[f"pss_kib_{key}"] = pss
                    res[f"rss_kib_{key}"] = rss
                    res[f"threads_{key}"] = group_threads(proc.pgid)
                finally:
                    st = proc.stop(grace=self.args.stop_grace)
                    self.stops.setdefault(pname, []).append((f"{tag}-{key}",) + st)
                    for c in clients:
                        c.close()
                    clients.clear()
        except (OSError, socket.timeout) as e:
            return {"error": f"a client: {e}"}
        finally:
            stop.set()
            echo.close()
        extra = flows - 1
        res["pss_kib_per_flow"] = (res["pss_kib_many"] - res["pss_kib_one"]) / extra
        res["rss_kib_per_flow"] = (res["rss_kib_many"] - res["rss_kib_one"]) / extra
        return res

    # ----- the run -----

    def run(self):
        a = self.args
        names = self.select_proxies()
        tools = ["iperf3", "redis-server", "redis-benchmark"] + [n for n in names if n in PEERS]
        self.install(tools)
        for t in ("iperf3", "redis-server", "redis-benchmark"):
            if not shutil.which(t):
                sys.exit(f"error: `{t}` is needed (apt-get install -y {' '.join(PACKAGES[t])})")
        if any(n.startswith("floor") for n in names):
            self.build_floor()
        proxies = []
        for n in names:
            why = self.check_proxy(n)
            if why:
                self.skipped[n] = why
                log(f"SKIPPING {n}: {why}")
            else:
                proxies.append(n)
        self.proxies = proxies
        self.mem_ns = a.mem_conns
        self.cases = [c for c in CASES if not a.cases or c[0] in a.cases]
        self.gather_versions(proxies)
        self.start_upstreams()
        log(f"proxies: {', '.join(proxies)}; {a.reps} repetition(s); work dir {self.workdir}")
        t_start = self.t_start = time.monotonic()
        for rep in range(a.reps):
            # rotate the order each repetition so no proxy always runs first or last
            k = rep % len(proxies)
            order = proxies[k:] + proxies[:k]
            for case, kind, params in self.cases:
                for pname in order:
                    if kind in ("listeners", "udpflows") and not pname.startswith("tcp-router"):
                        continue  # a range of ports, and UDP, are tcp-router's own
                    if time.monotonic() - t_start > a.max_minutes * 60:
                        raise RuntimeError(f"whole run exceeded --max-minutes {a.max_minutes}")
                    t0 = time.monotonic()
                    if self.hung.get(pname, 0) >= 3:
                        # a proxy that hung three cases in a row is not waited on any more
                        res = {"error": "not run: the proxy timed out in the 3 cases before"}
                    else:
                        res = self.run_case(rep, case, kind, params, pname)
                        hung = "error" in res and re.search(r"timeout|timed out|took over", res["error"], re.I)
                        self.hung[pname] = self.hung.get(pname, 0) + 1 if hung else 0
                    self.results[(rep, case, pname)] = res
                    log(f"[rep {rep + 1}/{a.reps}] {case_title(case, self.mem_ns):<22} {pname:<11} "
                        f"{brief(res)}  ({time.monotonic() - t0:.1f}s)")
        self.elapsed = time.monotonic() - t_start

    def cleanup(self):
        Proc.stop_all()
        for pname, logs in self.proxy_logs.items():
            try:
                self.log_summary[pname] = log_summary(logs, 12 if pname.startswith(("tcp-router", "floor")) else 3)
            except Exception as e:
                self.log_summary[pname] = [f"- could not read the logs: {e}"]
        if self.args.keep_workdir:
            log(f"kept work dir {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def case_title(case, mem_ns):
    return {
        "bulk1": "bulk 1 stream",
        "bulk8": "bulk 8 streams",
        "bulkR": "bulk reverse",
        "rr1": "PING 1 conn",
        "rr50": "PING 50 conns",
        "conn50": "new conns (-k 0, 50)",
        "memA": f"idle mem {mem_ns[0]} conns",
        "memB": f"idle mem {mem_ns[1]} conns",
        "listen1k": "idle 1,000 listeners",
        "udpflows1k": "idle 1,000 UDP flows",
    }[case]


def brief(res):
    if "error" in res:
        return "FAILED: " + res["error"][:160]
    if "pss_kib_per_flow" in res:
        return (f"PSS {res['pss_kib_one']} KiB at 1 flow, {res['pss_kib_many']} KiB at {res['flows']:,} "
                f"(+{res['pss_kib_per_flow']:.2f} KiB/flow, RSS +{res['rss_kib_per_flow']:.2f}); "
                f"threads {res['threads_one']} / {res['threads_many']}")
    if "pss_kib_per_listener" in res:
        return (f"PSS {res['pss_kib_one']} KiB at 1 port, {res['pss_kib_many']} KiB at {res['ports']:,} "
                f"(+{res['pss_kib_per_listener']:.2f} KiB/listener, RSS +{res['rss_kib_per_listener']:.2f}); "
                f"idle CPU {res['cpu_ms_per_s_one']:.2f} / {res['cpu_ms_per_s_many']:.2f} ms/s; "
                f"threads {res['threads_one']} / {res['threads_many']}")
    if "gbps" in res:
        s = f"{res['gbps']:.2f} Gbit/s"
        if res.get("cpu_s") is not None:
            s += f", proxy {res['cpu_s']:.2f} CPU-s"
        return s
    if "rps" in res:
        return f"{res['rps']:.0f}/s p50 {res['p50_ms']:.3f} p99 {res['p99_ms']:.3f} ms"
    s = (f"MemAvailable drop {res.get('avail_drop_kib_per_conn', 0):.1f}, kernel "
         f"{res.get('kernel_kib_per_conn', 0):.1f} KiB/conn")
    if "pss_kib_per_conn" in res:
        s += f", PSS +{res['pss_kib_per_conn']:.1f} KiB/conn, {res.get('procs')} procs {res.get('threads')} threads"
    if "open_s" in res:
        s += f"; opened in {res['open_s']:.1f}s, closed in {res.get('close_s', -1):.1f}s"
    if "lingering" in res:
        s += f", {res['lingering']} sockets LINGERING"
    return s


# ---------------------------------------------------------------------------------------------
# report


def fmt(x, digits):
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def summarize(vals, digits):
    """'median [min–max]' or a single value."""
    if not vals:
        return None
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med, digits)
    return f"{fmt(med, digits)} [{fmt(min(vals), digits)}–{fmt(max(vals), digits)}]"


def build_report(h):
    a = h.args
    R = h.results
    reps = range(a.reps)
    px = h.proxies

    def values(case, p, key):
        return [R[(r, case, p)][key] for r in reps if (r, case, p) in R and key in R[(r, case, p)]]

    def fails(case, p):
        errs = [R[(r, case, p)]["error"] for r in reps if (r, case, p) in R and "error" in R[(r, case, p)]]
        return errs

    def cell(case, p, key, digits, ratio):
        vals = values(case, p, key)
        errs = fails(case, p)
        if not vals:
            return "FAILED" if errs else "—"
        s = summarize(vals, digits)
        if ratio and p != "direct":
            d = values(case, "direct", key)
            if d and statistics.median(d) > 0:
                s += f" ({statistics.median(vals) / statistics.median(d):.2f}×)"
        if errs:
            s += f" ({len(errs)} failed)"
        return s

    def cpu_cell(p):
        if p == "direct":
            return "—"
        per_rep = []
        for r in reps:
            cpu = sum(R[(r, c, p)].get("cpu_s", 0) for c in ("bulk1", "bulk8", "bulkR") if "gbps" in R.get((r, c, p), {}))
            gib = sum(R[(r, c, p)]["bytes"] for c in ("bulk1", "bulk8", "bulkR") if "gbps" in R.get((r, c, p), {})) / GIB
            if gib > 0:
                per_rep.append(cpu / gib)
        if not per_rep:
            return "FAILED" if any(fails(c, p) for c in ("bulk1", "bulk8", "bulkR")) else "—"
        return summarize(per_rep, 2)

    def minus_direct_cell(case, p, key):
        """Per repetition: the proxy's figure minus direct's in the same repetition (or direct's
        median if direct failed there); then median [min–max]."""
        dvals = values(case, "direct", key)
        if p == "direct":
            if dvals:
                return f"(baseline {summarize(dvals, 1)})"
            return "FAILED" if fails(case, p) else "—"
        per_rep = []
        for r in reps:
            pr = R.get((r, case, p), {})
            if key not in pr:
                continue
            base = R.get((r, case, "direct"), {}).get(key)
            if base is None and dvals:
                base = statistics.median(dvals)
            if base is not None:
                per_rep.append(pr[key] - base)
        s = summarize(per_rep, 1)
        errs = fails(case, p)
        if s is None:
            return "FAILED" if errs else "—"
        if errs:
            s += f" ({len(errs)} failed)"
        return s

    def pss_cell(case, p):
        if p == "direct":
            return "—"
        return cell(case, p, "pss_kib_per_conn", 1, False)

    def table(header, rows):
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)

    def floor_cells(case, p, key, digits, minus_direct):
        """Against the floor: for the connection rate the proxy's median and its ratio to the
        floor's; for memory, per repetition the proxy's figure minus the floor's in the same
        repetition (median [min–max], KiB), and the ratio of the medians (for MemAvailable and
        kernel both taken minus direct's)."""
        vals, fvals = values(case, p, key), values(case, "floor", key)
        errs = fails(case, p)
        if not vals:
            return "FAILED" if errs else "—"
        if minus_direct:
            dvals = values(case, "direct", key)
            dmed = statistics.median(dvals) if dvals else 0.0

            def net(r, q):
                v = R.get((r, case, q), {}).get(key)
                if v is None:
                    return None
                base = R.get((r, case, "direct"), {}).get(key)
                return v - (dmed if base is None else base)

            vals = [v for v in (net(r, p) for r in reps) if v is not None]
            fvals = [v for v in (net(r, "floor") for r in reps) if v is not None]
        if p == "floor":
            s = summarize(vals, digits)
        elif not fvals:
            s = summarize(vals, digits) + " (floor FAILED)"
        elif key == "rps":
            s = f"{summarize(vals, digits)} ({statistics.median(vals) / statistics.median(fvals):.2f}×)"
        else:
            diffs = []
            for r in reps:
                v = R.get((r, case, p), {}).get(key)
                f = R.get((r, case, "floor"), {}).get(key)
                if v is not None and f is not None:
                    diffs.append(v - f)  # direct's baseline cancels out within a repetition
            fmed = statistics.median(fvals)
            s = (f"+{summarize(diffs, digits)}" if diffs else "?").replace("+-", "−")
            if fmed > 0:
                s += f" ({statistics.median(vals) / fmed:.2f}×)"
        if errs:
            s += f" ({len(errs)} failed)"
        return s

    def table(header, rows):
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)

    def columns(specs):
        """The (header, case, cell function) specs of the cases this run selected; [] if none."""
        return [sp for sp in specs if sp[1] in ran]

    def build(cols):
        return table(["proxy"] + [c[0] for c in cols], [[f"**{p}**"] + [c[2](p) for c in cols] for p in px])

    ran = {c[0] for c in h.cases}
    nA, nB = h.mem_ns
    n_of = {"memA": nA, "memB": nB}
    bulk_cols = columns([
        ("1 stream Gbit/s", "bulk1", lambda p: cell("bulk1", p, "gbps", 2, True)),
        ("8 streams Gbit/s", "bulk8", lambda p: cell("bulk8", p, "gbps", 2, True)),
        ("reverse Gbit/s", "bulkR", lambda p: cell("bulkR", p, "gbps", 2, True)),
    ])
    if bulk_cols:
        bulk_cols.append(("proxy CPU-s per GiB", "bulk", cpu_cell))
    rr_cols = columns([
        ("PING/s, 1 conn", "rr1", lambda p: cell("rr1", p, "rps", 0, True)),
        ("p50 / p99 ms, 1 conn", "rr1",
         lambda p: f"{cell('rr1', p, 'p50_ms', 3, False)} / {cell('rr1', p, 'p99_ms', 3, False)}"),
        ("PING/s, 50 conns", "rr50", lambda p: cell("rr50", p, "rps", 0, True)),
        ("p50 / p99 ms, 50 conns", "rr50",
         lambda p: f"{cell('rr50', p, 'p50_ms', 3, False)} / {cell('rr50', p, 'p99_ms', 3, False)}"),
        ("new conns/s (-k 0, 50 clients)", "conn50", lambda p: cell("conn50", p, "rps", 0, True)),
    ])
    mem_cols = columns([
        sp
        for c in ("memA", "memB")
        for sp in (
            (f"PSS @{n_of[c]:,}", c, lambda p, c=c: pss_cell(c, p)),
            (f"MemAvailable @{n_of[c]:,}", c, lambda p, c=c: minus_direct_cell(c, p, "avail_drop_kib_per_conn")),
            (f"kernel @{n_of[c]:,}", c, lambda p, c=c: minus_direct_cell(c, p, "kernel_kib_per_conn")),
        )
    ])
    floor_cols = columns([("new conns/s (-k 0, 50)", "conn50", lambda p: floor_cells("conn50", p, "rps", 0, False))] + [
        sp
        for c in ("memA", "memB")
        for sp in (
            (f"PSS @{n_of[c]:,}", c, lambda p, c=c: floor_cells(c, p, "pss_kib_per_conn", 1, False)),
            (f"MemAvailable @{n_of[c]:,}", c, lambda p, c=c: floor_cells(c, p, "avail_drop_kib_per_conn", 1, True)),
            (f"kernel @{n_of[c]:,}", c, lambda p, c=c: floor_cells(c, p, "kernel_kib_per_conn", 1, True)),
        )
    ])
    floor_rows = [p for p in px if p not in ("direct",)]
    show_floor = "floor" in px and floor_cols

    cpu = "?"
    m = re.search(r"^model name\s*:\s*(.+)$", read_file("/proc/cpuinfo", ""), re.M)
    if m:
        cpu = m.group(1).strip()
    memtotal = re.search(r"^MemTotal:\s+(\d+)", read_file("/proc/meminfo", ""), re.M)
    load = read_file("/proc/loadavg", "?").split()[:3]
    lines = []
    lines.append("# tcp-router benchmark results\n")
    if h.incomplete:
        lines.append(f"**INCOMPLETE RUN ({h.incomplete}): only the cases measured before it stopped.**\n")
    lines.append(f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    lines.append(f"- kernel: {platform.release()}; CPU: {cpu}; {h.cores} cores; "
                 f"{int(memtotal.group(1)) / 1024 / 1024:.1f} GiB RAM" if memtotal else f"- kernel: {platform.release()}; CPU: {cpu}")
    lines.append(f"- load average at the end: {' '.join(load)}")
    lines.append(f"- run: {a.reps} repetition(s), interleaved; iperf3 -t {a.duration}; redis-benchmark -n "
                 f"{a.rr_requests_1} (1 conn) / {a.rr_requests_50} (50 conns) / {a.conn_requests} (-k 0); "
                 f"idle connections {nA:,} and {nB:,}; took {h.elapsed / 60:.1f} min"
                 + (" (--quick)" if a.quick else ""))
    lines.append("- versions: " + "; ".join(f"{k} {v}" for k, v in h.versions.items()))
    extra = " ".join(a.router_arg)
    for p in px:
        if p in ("tcp-router", "tcp-router-quiet"):
            lines.append(f"- {p} run as: `tcp-router --log-level {router_log_level(a, p)} {extra + ' ' if extra else ''}LISTEN UPSTREAM`")
        elif any(spec.partition("=")[0] == p.removeprefix("tcp-router-") for spec in a.variant):
            args = next(s.partition("=")[2] for s in a.variant if s.partition("=")[0] == p.removeprefix("tcp-router-"))
            lines.append(f"- {p} run as: `tcp-router --log-level {router_log_level(a, p)} {extra + ' ' if extra else ''}{args} LISTEN UPSTREAM`")
        elif p.startswith("floor"):
            cls = PROXY_CLASSES[p]
            env = " ".join(f"{k}={v}" for k, v in (cls.env or {}).items())
            lines.append(f"- {p} run as: `{env + ' ' if env else ''}floor-relay {' '.join(cls.relay_args) + ' ' if cls.relay_args else ''}LISTEN_PORT {HOST} UPSTREAM_PORT`")
    lines.append("")
    lines.append("Cells: median [min–max] over the repetitions; (N×) = median relative to direct. "
                 "Everything on loopback, client, proxy and server sharing the same cores.")
    lines.append("")
    if bulk_cols:
        lines.append("## Bulk throughput (iperf3)\n")
        lines.append(build(bulk_cols))
        lines.append("")
    if rr_cols:
        lines.append("## Request/response and new connections (redis-benchmark PING)\n")
        lines.append(build(rr_cols))
        lines.append("")
    if mem_cols:
        lines.append("## Memory per idle connection (KiB per connection)\n")
        lines.append(build(mem_cols))
        lines.append("")
        lines.append("PSS: growth of the proxy's own processes (all of them, proportional set size; for a "
                     "single process the same as its RSS growth). "
                     "MemAvailable: drop of the whole machine's available memory with the connections "
                     "open through the proxy, minus the same drop direct: what the proxy costs the "
                     "machine, kernel included (its two sockets, thread stacks, page tables). kernel: "
                     "the same difference for Slab+KernelStack+PageTables only, less disturbed by other "
                     "programs. Direct's row shows its own baseline (client and upstream sockets). "
                     "MemAvailable is machine-wide: on a busy machine it is noisy. See bench/README.md.")
        lines.append("")
    if "listen1k" in ran:
        lrows = [p for p in px if p.startswith("tcp-router")]
        lcols = [
            ("PSS, 1 port (KiB)", lambda p: cell("listen1k", p, "pss_kib_one", 0, False)),
            ("PSS, 1,000 ports (KiB)", lambda p: cell("listen1k", p, "pss_kib_many", 0, False)),
            ("PSS per listener (KiB)", lambda p: cell("listen1k", p, "pss_kib_per_listener", 2, False)),
            ("RSS per listener (KiB)", lambda p: cell("listen1k", p, "rss_kib_per_listener", 2, False)),
            ("idle CPU ms/s, 1 port", lambda p: cell("listen1k", p, "cpu_ms_per_s_one", 2, False)),
            ("idle CPU ms/s, 1,000 ports", lambda p: cell("listen1k", p, "cpu_ms_per_s_many", 2, False)),
            ("threads, 1 / 1,000 ports", lambda p: f"{cell('listen1k', p, 'threads_one', 0, False)} / "
                                                   f"{cell('listen1k', p, 'threads_many', 0, False)}"),
        ]
        lines.append("## Idle listeners (tcp-router, one range of 1,000 ports against one port)\n")
        lines.append(table(["proxy"] + [c[0] for c in lcols], [[f"**{p}**"] + [c[1](p) for c in lcols] for p in lrows]))
        lines.append("")
        lines.append("Each process listens with no client: one on a single port, one on a range of 1,000 "
                     "(`tcp-router 127.0.0.1:FIRST-LAST UPSTREAM`). PSS/RSS after it settles; per listener: "
                     "(1,000 ports minus 1 port) / 999. Idle CPU: utime+stime while idle "
                     f"(/proc/PID/stat, counted in ticks of {1000 / CLK_TCK:.0f} ms: over {a.listen_idle} s the resolution is "
                     f"{1000 / CLK_TCK / a.listen_idle:.1f} ms/s, so 0.00 means not one tick), the accept loop's "
                     "wake-ups with nothing to accept. See bench/README.md.")
        lines.append("")
    if "udpflows1k" in ran:
        urows = [p for p in px if p.startswith("tcp-router")]
        ucols = [
            ("PSS, 1 flow (KiB)", lambda p: cell("udpflows1k", p, "pss_kib_one", 0, False)),
            ("PSS, 1,000 flows (KiB)", lambda p: cell("udpflows1k", p, "pss_kib_many", 0, False)),
            ("PSS per flow (KiB)", lambda p: cell("udpflows1k", p, "pss_kib_per_flow", 2, False)),
            ("RSS per flow (KiB)", lambda p: cell("udpflows1k", p, "rss_kib_per_flow", 2, False)),
            ("threads, 1 / 1,000 flows", lambda p: f"{cell('udpflows1k', p, 'threads_one', 0, False)} / "
                                                   f"{cell('udpflows1k', p, 'threads_many', 0, False)}"),
        ]
        lines.append("## Idle UDP flows (tcp-router, 1,000 client addresses against one)\n")
        lines.append(table(["proxy"] + [c[0] for c in ucols], [[f"**{p}**"] + [c[1](p) for c in ucols] for p in urows]))
        lines.append("")
        lines.append("One UDP listener to a UDP echo server: one client address, then 1,000, each sending one "
                     "datagram and reading its echo, then silent (idle timeout 1 h). PSS/RSS after it settles; "
                     "per flow: (1,000 flows minus 1 flow) / 999. A flow is a thread, its receive buffer and "
                     "a connected socket. See bench/README.md.")
        lines.append("")
    if show_floor:
        lines.append("## Against the floor (the leanest relay in tcp-router's shape, bench/floor/relay.c)\n")
        lines.append(table(["proxy"] + [c[0] for c in floor_cols],
                           [[f"**{p}**"] + [c[2](p) for c in floor_cols] for p in floor_rows]))
        lines.append("")
        lines.append("The floor's row: its own figures (MemAvailable and kernel minus direct's, as above). "
                     "Other rows: new connections/s as median (ratio to the floor's median); memory as "
                     "+KiB per connection over the floor (per repetition, the proxy's figure minus the "
                     "floor's in the same repetition: median [min–max]) and (ratio of the medians). "
                     "See bench/README.md, *The floor*.")
        lines.append("")
    # problems
    probs = []
    for p, why in h.skipped.items():
        probs.append(f"- skipped **{p}**: {why}")
    for (r, c, p), res in sorted(R.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        if "error" in res:
            probs.append(f"- {p}, {case_title(c, h.mem_ns)}, rep {r + 1}: FAILED: {res['error'][:300]}")
        elif res.get("stderr"):
            probs.append(f"- {p}, {case_title(c, h.mem_ns)}, rep {r + 1}: client stderr: {res['stderr']}")
    for n in h.notes:
        probs.append(f"- {n}")
    for p, stops in h.stops.items():
        bad = [s for s in stops if s[3] or (p.startswith("tcp-router") and s[1] != 0)]
        if p.startswith("tcp-router"):
            secs = [s[2] for s in stops]
            probs.append(f"- {p} stopped by SIGTERM {len(stops)} times: exit codes "
                         f"{sorted(set(s[1] for s in stops))}, {sum(1 for s in stops if s[3])} needed SIGKILL, "
                         f"time to exit median {statistics.median(secs):.2f}s, max {max(secs):.2f}s")
        elif bad:
            probs.append(f"- {p}: {len(bad)} of {len(stops)} stops needed SIGKILL")
    lines.append("## Problems and observations\n")
    lines.extend(probs or ["- none"])
    for p in px:
        if p in h.log_summary:
            lvl = f" (--log-level {router_log_level(a, p)})" if p.startswith("tcp-router") else ""
            lines.append("")
            lines.append(f"### {p} output{lvl}\n")
            lines.extend(h.log_summary[p])
    lines.append("")
    return "\n".join(lines)


def log_summary(logs, top):
    """Line count and the most frequent message shapes (digits folded, timestamp dropped) over
    the log files of one proxy's runs."""
    total = 0
    counts = {}
    examples = {}
    for tag, paths in logs:
        for path in paths:
            text = read_file(path, "") or ""
            for line in text.splitlines():
                if not line.strip():
                    continue
                total += 1
                shape = re.sub(r"^\d{4}-\d\d-\d\dT\S+\s+", "", line.strip())
                shape = re.sub(r"0x[0-9a-fA-F]+", "0xH", shape)
                shape = re.sub(r"\d+", "N", shape)[:160]
                counts[shape] = counts.get(shape, 0) + 1
                examples.setdefault(shape, f"{tag}: {line.strip()[:240]}")
    out = [f"- {total} lines over {len(logs)} runs"]
    for shape, c in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"- {c}× `{examples[shape]}`")
    return out


# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    default_router = os.path.join(
        os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO_DIR, "target"), "release", "tcp-router"
    )
    p = argparse.ArgumentParser(
        description="Benchmark tcp-router against direct loopback, the shape's floor (bench/floor/relay.c) and Debian's TCP forwarders.",
        epilog="See bench/README.md.",
    )
    p.add_argument("--router", default=default_router, help=f"tcp-router binary (default {default_router})")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="1 repetition, short runs, fewer connections: a smoke test")
    p.add_argument("--only", help="comma-separated proxies to run (direct and the floor are always included): " + ",".join(ALL_PROXIES[1:] + FLOOR_VARIANTS))
    p.add_argument("--cases", help="comma-separated cases to run (default all): " + ",".join(c[0] for c in CASES))
    p.add_argument("--skip-peers", action="store_true", help="no peers: only direct, the floor and tcp-router (at --router-log-level and off)")
    p.add_argument("--skip-floor", action="store_true", help="leave out the floor (bench/floor/relay.c, built with cc) and tcp-router-quiet")
    p.add_argument("--floor-log", action="store_true", help="also run floor-log: the floor with its one log line per connection")
    p.add_argument("--floor-small-tls", action="store_true", help=f"also run floor-small-tls: the floor with GLIBC_TUNABLES={SMALL_TLS_TUNABLES} (one stack page per thread)")
    p.add_argument("--no-install", action="store_true", help="never run apt-get")
    p.add_argument("--out", default=os.path.join(BENCH_DIR, "results.md"), help="Markdown report (default bench/results.md)")
    p.add_argument("--json", default=None, help="also write raw results as JSON here")
    p.add_argument("--router-log-level", default="info", help="tcp-router --log-level during the run (default info, tcp-router's own default; tcp-router-quiet runs at off)")
    p.add_argument("--router-arg", action="append", default=[], help="extra argument for tcp-router (repeatable)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS", help="tcp-router (the --router build) with more arguments, run as tcp-router-NAME beside tcp-router (repeatable: what a setting costs, e.g. checks=\"--health-check connect --check-interval 1s\")")
    p.add_argument("--baseline", action="append", default=[], metavar="[NAME=]PATH", help="another tcp-router build, run as tcp-router-NAME (default tcp-router-base) beside tcp-router (repeatable: compare builds in one run)")
    p.add_argument("--with-admin", action="store_true", help="also run tcp-router-admin: tcp-router with --admin, /metrics scraped once a second")
    p.add_argument("--duration", type=int, default=None, help="iperf3 -t seconds (default 5; 2 with --quick)")
    p.add_argument("--mem-conns", default=None, help="two idle-connection counts, e.g. 1000,4000 (default; 250,1000 with --quick)")
    p.add_argument("--max-minutes", type=float, default=60, help="abort the whole run after this long (default 60)")
    p.add_argument("--keep-workdir", action="store_true", help="keep the temp dir with configs and logs")
    p.add_argument("--internal-holder", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    q = a.quick
    a.reps = a.reps if a.reps is not None else (1 if q else 3)
    known = [c[0] for c in CASES]
    a.cases = a.cases.split(",") if a.cases else []
    for c in a.cases:
        if c not in known:
            p.error(f"--cases: unknown case {c!r}; known: {', '.join(known)}")
    if a.reps < 1:
        p.error("--reps must be at least 1")
    a.duration = a.duration if a.duration is not None else (2 if q else 5)
    a.rr_requests_1 = 10000 if q else 30000
    a.rr_requests_50 = 40000 if q else 100000
    a.conn_requests = 4000 if q else 10000
    a.rr_timeout = 30 if q else 60
    ns = a.mem_conns or ("250,1000" if q else "1000,4000")
    try:
        a.mem_conns = [int(x) for x in ns.split(",")]
        assert len(a.mem_conns) == 2 and all(0 < x <= 8000 for x in a.mem_conns)
    except (ValueError, AssertionError):
        p.error("--mem-conns takes two counts between 1 and 8000, e.g. 1000,4000")
    a.mem_open_timeout = 90
    a.mem_settle = 0.5 if q else 1.0
    a.listen_idle = 5 if q else 10
    a.stop_grace = 12.0
    a.router = os.path.abspath(a.router)
    return a


def main(argv):
    a = parse_args(argv)
    if a.internal_holder:
        holder_main(a.internal_holder, max_seconds=4 * 3600)
        return 0
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    need = 2 * max(a.mem_conns) + 200
    if target < need:
        log(f"warning: open-files limit {target} is below the {need} the idle-connection cases need")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    h = Harness(a)
    rc = 0
    try:
        h.run()
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"interrupted ({e or 'Ctrl-C'}); stopping everything")
        rc = 130
    except Exception as e:
        log(f"error: {type(e).__name__}: {e}")
        rc = 1
    finally:
        # ignore further Ctrl-C while cleaning up, so nothing is left running
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        h.cleanup()
    if rc != 0 and h.results:
        # an error or a Ctrl-C part-way: still report what was measured, marked as incomplete
        h.incomplete = "interrupted" if rc == 130 else "stopped by an error"
        h.elapsed = time.monotonic() - h.t_start if h.t_start else 0.0
    if h.results:
        report = build_report(h)
        print(report)
        out = a.out
        if h.incomplete:
            out = (out[:-3] if out.endswith(".md") else out) + ".incomplete.md"
        with open(out, "w") as f:
            f.write(report)
        log(f"wrote {out}")
        if a.json:
            raw = {
                "results": [{"rep": r + 1, "case": c, "proxy": p, **res} for (r, c, p), res in h.results.items()],
                "skipped": h.skipped,
                "versions": h.versions,
            }
            with open(a.json, "w") as f:
                json.dump(raw, f, indent=1)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
