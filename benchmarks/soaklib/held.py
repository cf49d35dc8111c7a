"""What Veylor really holds, as /proc says: its client connections (its socket fds
matched with the kernel's tables), what one of its sockets is, and whether it still holds
a given TCP connection."""

from __future__ import annotations

import contextlib
import os
import socket
from collections import Counter

TCP_STATES = {
    "01": "established",
    "02": "syn_sent",
    "03": "syn_recv",
    "04": "fin_wait1",
    "05": "fin_wait2",
    "06": "time_wait",
    "07": "close",
    "08": "close_wait",
    "09": "last_ack",
    "0A": "listen",
    "0B": "closing",
}


def held_sockets(pid: int, ws_port: int, unix_path: str) -> dict:
    """The client connections Veylor really holds: its socket fds (/proc/PID/fd) matched
    with the kernel's tables; TCP by state (local port = the WebSocket port, listener
    excluded), Unix connected sockets at the endpoint's path (an accepted Unix socket
    carries its listener's path). ``unlisted``: sockets it holds that no table lists, such
    as a TCP socket reset by its peer and never closed (a leaked connection)."""
    by_inode: dict[int, int] = {}
    fds = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                by_inode[int(link[8:-1])] = int(fd)
    inodes = by_inode.keys()
    listed: set[int] = set()
    tcp: Counter[str] = Counter()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as fh:
            next(fh)
            for line in fh:
                f = line.split()
                inode = int(f[9])
                if inode not in inodes:
                    continue
                listed.add(inode)
                if int(f[1].rsplit(":", 1)[1], 16) == ws_port and f[3] != "0A":
                    tcp[TCP_STATES.get(f[3], f[3])] += 1
    unix = 0
    with open(f"/proc/{pid}/net/unix") as fh:
        next(fh)
        for line in fh:
            f = line.split()
            inode = int(f[6])
            if inode not in inodes:
                continue
            listed.add(inode)
            if len(f) >= 8 and f[7] == unix_path and f[5] == "03":
                unix += 1
    for table, column in (("udp", 9), ("udp6", 9), ("netlink", 9), ("raw", 9), ("raw6", 9), ("packet", 8)):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as fh:
            next(fh)
            for line in fh:
                f = line.split()
                if len(f) > column and f[column].isdigit() and int(f[column]) in inodes:
                    listed.add(int(f[column]))
    return {
        "tcp": dict(tcp),
        "unix": unix,
        "fds": fds,
        "sockets": len(inodes),
        "unlisted": sorted(by_inode[i] for i in inodes - listed),
    }


def describe_socket(pid: int, fd: int) -> str | None:
    """What Veylor's socket ``fd`` is, from a copy of it (pidfd_getfd, Linux 5.6; Veylor is
    our child): for a socket no /proc table lists, the only way to say which it is. None
    when the fd is already closed (it was closing at the moment of the scan)."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as exc:
        return f"fd {fd}: {exc}"
    try:
        copy = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
        if copy < 0:
            code = ctypes.get_errno()
            return None if code == errno.EBADF else f"fd {fd}: pidfd_getfd: {os.strerror(code)}"
        sock = socket.socket(fileno=copy)
        try:
            text = f"fd {fd}: {sock.family.name} {sock.type.name}, local {sock.getsockname()}"
            try:
                text += f", peer {sock.getpeername()}"
            except OSError as exc:
                text += f", peer: {exc.strerror}"
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            text += f", SO_ERROR {errno.errorcode.get(err, err) if err else 0}"
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
                text += f", TCP state {TCP_STATES.get(f'{state:02X}', state)}"
            return text
        finally:
            sock.close()
    finally:
        os.close(pidfd)


def veylor_holds(pid: int, ws_port: int, client_port: int) -> bool:
    """Whether Veylor's process holds the server side of the TCP connection from
    ``client_port`` to ``ws_port`` (its socket's inode among its fds)."""
    inode = 0
    with open(f"/proc/{pid}/net/tcp") as fh:
        next(fh)
        for line in fh:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == ws_port and int(f[2].rsplit(":", 1)[1], 16) == client_port:
                inode = int(f[9])
                if inode:
                    break
    if not inode:
        return False
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                return True
    return False
