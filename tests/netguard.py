"""A socket guard for the tests: every attempt to reach a non-loopback address is recorded and refused.

Loopback stays open (127.0.0.0/8, ::1, ``localhost``, UNIX sockets): the demo, browser, Milvus-lite
and Ray tests talk to servers on this machine. What is guarded, in this process and all its threads:
``socket.connect`` / ``connect_ex`` / ``sendto`` / ``sendmsg`` to an internet address, and
``getaddrinfo`` of a host name other than this machine's (a DNS query is already network traffic).
A refused attempt raises ``NetworkBlocked`` (an OSError, so a library sees an ordinary network
failure), and is kept in ``attempts``: a caller that swallows the error still fails the test, which
checks ``attempts`` when it ends. Child processes are not covered.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import threading
import traceback

__all__ = ["NetworkBlocked", "NetworkGuard", "GUARD"]


class NetworkBlocked(OSError):
    """A test tried to reach the network."""


def _is_local_host(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%", 1)[0]
    if host in ("", "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"):
        return True
    if host in (socket.gethostname(), socket.gethostname().split(".", 1)[0]):
        return True  # this machine's own name, answered from /etc/hosts
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name that needs DNS
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def _caller() -> str:
    """The innermost frames outside socket.py and this file, and the thread: where an attempt came from."""
    frames = [f for f in traceback.extract_stack()[:-3]
              if not f.filename.endswith(("socket.py", "netguard.py"))]
    where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames[-4:]))
    return f"{where} [thread {threading.current_thread().name}]"


class NetworkGuard:
    """Install once; ``attempts`` lists "what: address" of every refused attempt since ``reset``."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.origins: list[str] = []  # where each attempt came from (file:line, thread)
        self._lock = threading.Lock()
        self._saved: dict[str, object] = {}

    @property
    def installed(self) -> bool:
        return bool(self._saved)

    def reset(self) -> None:
        with self._lock:
            self.attempts.clear()
            self.origins.clear()

    def _refuse(self, what: str, address) -> None:
        with self._lock:
            self.attempts.append(f"{what}: {address!r}")
            self.origins.append(_caller())
        raise NetworkBlocked(f"network access blocked in the tests ({what} {address!r}); tests must stay offline")

    def _check_address(self, sock: socket.socket, what: str, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) \
                and not _is_local_host(address[0]):
            self._refuse(what, address)

    def install(self) -> None:
        if self.installed:
            return
        guard = self
        cls = socket.socket
        saved = {name: getattr(cls, name) for name in ("connect", "connect_ex", "sendto", "sendmsg")}
        saved["getaddrinfo"] = socket.getaddrinfo

        def connect(sock, address):
            guard._check_address(sock, "connect", address)
            return saved["connect"](sock, address)

        def connect_ex(sock, address):
            guard._check_address(sock, "connect", address)
            return saved["connect_ex"](sock, address)

        def sendto(sock, data, *args):
            guard._check_address(sock, "sendto", args[-1] if args else None)
            return saved["sendto"](sock, data, *args)

        def sendmsg(sock, buffers, ancdata=(), flags=0, address=None):
            if address is not None:
                guard._check_address(sock, "sendmsg", address)
                return saved["sendmsg"](sock, buffers, ancdata, flags, address)
            return saved["sendmsg"](sock, buffers, ancdata, flags)

        def getaddrinfo(host, *args, **kwargs):
            if not _is_local_host(host):
                guard._refuse("getaddrinfo", host)
            return saved["getaddrinfo"](host, *args, **kwargs)

        cls.connect, cls.connect_ex, cls.sendto, cls.sendmsg = connect, connect_ex, sendto, sendmsg
        socket.getaddrinfo = getaddrinfo
        self._saved = saved

    def uninstall(self) -> None:
        if not self.installed:
            return
        for name in ("connect", "connect_ex", "sendto", "sendmsg"):
            setattr(socket.socket, name, self._saved[name])
        socket.getaddrinfo = self._saved["getaddrinfo"]
        self._saved = {}


GUARD = NetworkGuard()  # one per test process: the conftest and the quickstart test share it
