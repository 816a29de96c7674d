"""The tests' socket guard (tests/netguard.py) refuses and records the network, and leaves loopback open."""
from __future__ import annotations

import os
import socket
import threading

import pytest
from netguard import NetworkBlocked


def test_connection_to_an_internet_address_is_refused_and_recorded(no_network):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkBlocked, match="203.0.113.7"):
            s.connect(("203.0.113.7", 443))  # TEST-NET-3: never routed anyway
        with pytest.raises(NetworkBlocked):
            s.connect_ex(("198.51.100.1", 80))
    finally:
        s.close()
    assert no_network.attempts == ["connect: ('203.0.113.7', 443)", "connect: ('198.51.100.1', 80)"]
    no_network.reset()


def test_dns_lookup_udp_and_a_swallowed_error_are_all_recorded(no_network):
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("huggingface.co", 443)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(NetworkBlocked):
            u.sendto(b"x", ("8.8.8.8", 53))
    finally:
        u.close()

    def library_that_swallows_errors():
        try:
            socket.create_connection(("example.org", 80), timeout=1)
        except OSError:
            pass

    t = threading.Thread(target=library_that_swallows_errors)
    t.start()
    t.join()
    assert no_network.attempts == ["getaddrinfo: 'huggingface.co'", "sendto: ('8.8.8.8', 53)",
                                   "getaddrinfo: 'example.org'"]
    no_network.reset()


def test_loopback_and_unix_sockets_stay_open(no_network, tmp_path):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    for host in ("127.0.0.1", "localhost"):
        with socket.create_connection((host, port), timeout=5):
            conn, _ = server.accept()
            conn.close()
    server.close()
    path = os.path.join(str(tmp_path), "s.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(path)
    unix.listen(1)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    client.close()
    unix.close()
    assert no_network.attempts == []
