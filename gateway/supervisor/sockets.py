"""Listening sockets bound once and shared by every gateway worker.

The supervisor binds each listener before it forks, and every worker accepts on the same
socket. This is more robust on Linux than each worker binding its own socket with
``SO_REUSEPORT``. A port in use is reported once, before any worker starts, and port 0 resolves
to one port for all workers. Connections that wait in the accept queue survive a worker's death,
because the queue belongs to the socket, which the supervisor keeps open.

NOTE: the kernel does not balance connections between the workers. Whichever worker wakes first
accepts every connection waiting, so a burst of keep-alive connections can stay uneven: in the
benchmark, one of two workers served two thirds of 32 connections' requests. Per-worker
``SO_REUSEPORT`` sockets would spread connections by hash, but a dead worker's queue would then
wait for its replacement. Worse, a second gateway that the same user starts on the same port
would take a share of the connections instead of failing with "address in use".
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.config.model import Address, ListenConfig

BACKLOG = 128
"""The accept queue length, the same as aiohttp's ``TCPSite`` default."""


@dataclass(frozen=True, slots=True)
class ListenerSockets:
    """The bound sockets of the reverse listener and of the admin listener (empty when off)."""

    reverse: tuple[socket.socket, ...]
    admin: tuple[socket.socket, ...] = ()

    def all(self) -> Iterator[socket.socket]:
        yield from self.reverse
        yield from self.admin

    def close(self) -> None:
        for sock in self.all():
            sock.close()


def bind_listeners(listen: ListenConfig) -> ListenerSockets:
    """Bind the reverse and admin listeners; raise ``OSError`` naming the address that failed."""
    reverse = bind_address(listen.reverse)
    try:
        admin = bind_address(listen.admin) if listen.admin is not None else ()
    except OSError:
        for sock in reverse:
            sock.close()
        raise
    return ListenerSockets(reverse, admin)


def bind_address(address: Address) -> tuple[socket.socket, ...]:
    """Bind and listen on every address that ``address.host`` resolves to, as asyncio's
    ``create_server`` does; raise ``OSError`` naming the address when one fails."""
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {address}: {exc.strerror}") from exc

    bound: list[socket.socket] = []
    try:
        for family, kind, protocol, _, socket_address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, protocol)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # As asyncio does: an IPv6 socket does not also take the IPv4 connections.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(socket_address)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from exc
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in bound:
            with contextlib.suppress(OSError):
                sock.close()
        raise
    return tuple(bound)


def bound_address(sockets: tuple[socket.socket, ...]) -> Address:
    """Return the address of the first socket, with the port the kernel chose for port 0."""
    host, port, *_ = sockets[0].getsockname()
    return Address(str(host), int(port))
