"""Listening sockets that the supervisor binds once for every worker."""

from __future__ import annotations

import socket

import pytest

from gateway.config.model import Address, ListenConfig
from gateway.supervisor.sockets import bind_address, bind_listeners, bound_address


def test_port_zero_resolves_once() -> None:
    listeners = bind_listeners(
        ListenConfig(reverse=Address("127.0.0.1", 0), admin=Address("127.0.0.1", 0))
    )
    try:
        reverse, admin = bound_address(listeners.reverse), bound_address(listeners.admin)
        assert reverse.port != 0
        assert admin.port != 0
        assert reverse.port != admin.port
        with socket.create_connection(("127.0.0.1", reverse.port), timeout=5):
            pass
    finally:
        listeners.close()


def test_admin_off_binds_reverse_only() -> None:
    listeners = bind_listeners(ListenConfig(reverse=Address("127.0.0.1", 0), admin=None))
    try:
        assert len(listeners.reverse) == 1
        assert listeners.admin == ()
    finally:
        listeners.close()


def test_port_in_use_names_address() -> None:
    with socket.socket() as occupied_socket:
        occupied_socket.bind(("127.0.0.1", 0))
        occupied_socket.listen()
        port = occupied_socket.getsockname()[1]

        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind_address(Address("127.0.0.1", port))


def test_admin_failure_closes_reverse() -> None:
    with socket.socket() as occupied_socket:
        occupied_socket.bind(("127.0.0.1", 0))
        occupied_socket.listen()
        port = occupied_socket.getsockname()[1]
        free = bind_address(Address("127.0.0.1", 0))
        free_port = bound_address(free).port
        for sock in free:
            sock.close()

        with pytest.raises(OSError, match="cannot listen"):
            bind_listeners(
                ListenConfig(
                    reverse=Address("127.0.0.1", free_port), admin=Address("127.0.0.1", port)
                )
            )
        # The reverse socket was closed again, so its port can be bound once more.
        for sock in bind_address(Address("127.0.0.1", free_port)):
            sock.close()
