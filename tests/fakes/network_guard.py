"""Refuse (and record) every outbound connection that is not to loopback."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths are local by definition
        return True
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def loopback_only() -> Iterator[list[Any]]:
    """Yields the list of refused addresses; a test asserts it stays empty."""
    refused: list[Any] = []
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self: socket.SocketType, address: Any) -> None:
        if not _is_loopback(address):
            refused.append(address)
            raise ConnectionRefusedError(f"test network guard: {address!r} is not loopback")
        return original_connect(self, address)

    def connect_ex(self: socket.SocketType, address: Any) -> int:
        if not _is_loopback(address):
            refused.append(address)
            return 111
        return original_connect_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    try:
        yield refused
    finally:
        socket.socket.connect = original_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = original_connect_ex  # type: ignore[method-assign]
