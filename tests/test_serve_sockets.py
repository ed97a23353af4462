"""`tandem serve`'s sockets and start-up line: one port for every address, a URL that is
one. Binds on this machine's own interfaces (every interface for the port-0 case, closed at
once, never listening)."""

from __future__ import annotations

import socket

import pytest

from runtime.errors import ConfigError
from runtime.interface import bind_sockets, serving_at


def test_port_zero_gives_every_address_the_same_port() -> None:
    families = {info[0] for info in socket.getaddrinfo(None, 0, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)}
    if len(families) < 2:
        pytest.skip("this machine resolves all interfaces to one address family")
    sockets = bind_sockets("", 0)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(sockets) == len(families) and len(ports) == 1 and ports != {0}
    finally:
        for sock in sockets:
            sock.close()


def test_a_busy_port_is_one_config_error() -> None:
    taken = bind_sockets("127.0.0.1", 0)
    try:
        port = taken[0].getsockname()[1]
        taken[0].listen()
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1 port {port}"):
            bind_sockets("127.0.0.1", port)
    finally:
        taken[0].close()


@pytest.mark.parametrize(("host", "url"), [
    ("127.0.0.1", "http://127.0.0.1:8080"),
    ("::1", "http://[::1]:8080"),
    ("localhost", "http://localhost:8080"),
    ("", "every interface, port 8080 (http://localhost:8080 here)"),
])
def test_the_start_up_line_names_a_usable_url(host: str, url: str) -> None:
    assert serving_at(host, 8080) == url
