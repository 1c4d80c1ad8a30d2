#!/usr/bin/env python3
"""Holds N idle TCP connections open to a votes-host and prints its resident memory (VmRSS)
before, while they are open, and after they are closed.

    python3 scripts/hold-connections.py --port 8080 --pid "$(pgrep -f votes-host | head -1)" --count 1000

Idle connections are closed by the host after its header read timeout (10 s by default), so the
figure is read right after they are all open.
"""

import argparse
import resource
import socket
import time


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the votes-host process")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds to hold them before measuring")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    before = rss_kib(args.pid)
    sockets = []
    for _ in range(args.count):
        sockets.append(socket.create_connection((args.host, args.port)))
    time.sleep(args.hold)
    held = rss_kib(args.pid)
    open_still = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            open_still += sock.recv(1) != b""
        except BlockingIOError:
            open_still += 1
    for sock in sockets:
        sock.close()
    time.sleep(args.hold)
    after = rss_kib(args.pid)
    print(f"{args.count} idle connections ({open_still} still open when measured): "
          f"host RSS {before / 1024:.1f} MiB before, {held / 1024:.1f} MiB held, {after / 1024:.1f} MiB after")


if __name__ == "__main__":
    main()
