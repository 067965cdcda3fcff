#!/usr/bin/env python3
"""Scale check: N concurrent connections held through tcp-router, all echoing correctly.

Opens N client connections through tcp-router to a single-threaded epoll echo server (all on
loopback), keeps every one of them open, then makes each send a unique message and checks the
echo, twice. Reports how many were served, the router's threads, file descriptors and RSS.
Bounded in time: every wait has a deadline, and the script exits on its own.

Usage: python3 bench/scale.py [--router PATH] [--connections N]
"""

import argparse
import os
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time

DEADLINE_S = 120


def echo_server(listener, stop):
    """Echoes every connection on one thread with epoll."""
    sel = selectors.DefaultSelector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ)
    while not stop.is_set():
        for key, _ in sel.select(timeout=0.2):
            sock = key.fileobj
            if sock is listener:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()
                continue
            sock.sendall(data)  # small messages: fits in the send buffer


def router_port(proc):
    """Reads the router's stderr until it logs its listening address."""
    for line in proc.stderr:
        if "listening on " in line:
            return int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    raise SystemExit("tcp-router exited before listening")


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1]
    return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--router", default="target/release/tcp-router")
    ap.add_argument("--connections", type=int, default=8000)
    args = ap.parse_args()
    n = args.connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if 2 * n + 100 > hard:
        sys.exit(f"open-files limit {hard} is too low for {n} connections in this process")

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    stop = threading.Event()
    threading.Thread(target=echo_server, args=(listener, stop), daemon=True).start()
    upstream = f"127.0.0.1:{listener.getsockname()[1]}"

    # At info the router logs its address, and one line per connection (drained below).
    proc = subprocess.Popen(
        [args.router, "--log-level", "info", "127.0.0.1:0", upstream],
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    try:
        port = router_port(proc)
        # Drain the router's log so it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        clients = []
        for i in range(n):
            if time.monotonic() - started > DEADLINE_S:
                sys.exit(f"FAILED: opened only {i} connections in {DEADLINE_S}s")
            c = socket.create_connection(("127.0.0.1", port), timeout=30)
            clients.append(c)
        opened = time.monotonic() - started
        ok = 0
        for round_ in range(2):
            for i, c in enumerate(clients):
                c.sendall(f"{round_}:{i:08d}\n".encode())
            for i, c in enumerate(clients):
                want = f"{round_}:{i:08d}\n".encode()
                got = b""
                while len(got) < len(want):
                    chunk = c.recv(len(want) - len(got))
                    if not chunk:
                        break
                    got += chunk
                if got == want:
                    ok += 1
        threads = status(proc.pid, "Threads")
        rss = status(proc.pid, "VmRSS")
        fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        total = time.monotonic() - started
        print(
            f"{n} connections held through tcp-router: {ok}/{2 * n} echoes correct; "
            f"opened in {opened:.1f}s, all checked in {total:.1f}s; router: {threads} threads, "
            f"{fds} fds, RSS {int(rss) // 1024} MiB"
        )
        for c in clients:
            c.close()
        if ok != 2 * n:
            sys.exit("FAILED: not every connection echoed correctly")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        stop.set()


if __name__ == "__main__":
    main()
