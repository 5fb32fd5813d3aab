"""What a CLI command runs against: the configured store and workflow, or the embedded
default (PostgreSQL from the wheel under `.deepmem/`, the ASL run locally by moto)."""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from deepmem.config import Config, load_config
from deepmem.domain.errors import DeepmemError
from deepmem.domain.status import Phase
from deepmem.ports import Execution, ExecutionState, RunStore, Workflow
from deepmem.services.runs import RunService

EMBEDDED_DATABASE = "deepmem"

# The CLI prints its own story; the handlers' JSON logs and EMF metrics are for CloudWatch.
_QUIET_HANDLERS = {
    "POWERTOOLS_LOG_LEVEL": "ERROR",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "deepmem",
    "BUGGER_OFF": "true",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class AlreadyRunningError(DeepmemError):
    """Another process holds the lock (a second demo while one runs)."""


class ProcessLock:
    """An exclusive, non-blocking lock on a file, released when the process ends."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._file: Any = None

    def __enter__(self) -> ProcessLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._file.close()
            raise AlreadyRunningError(
                f"{self.what} is already running (lock {self.path}): wait for it to finish"
            ) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


class TerminatedError(SystemExit):
    """SIGTERM or SIGHUP, raised in the main thread so every `with` block unwinds (the
    embedded PostgreSQL is stopped, the local executions are stopped and their runs marked)."""


@contextmanager
def exit_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, `signals` end the process as an exception would (exit 128 + signal)
    instead of killing it on the spot; SIGINT already does (KeyboardInterrupt). A server that
    handles SIGTERM itself (graceful shutdown) and then re-raises it lands here as well."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    raised: list[int] = []

    def terminate(signum: int, frame: FrameType | None) -> None:
        if not raised:  # a second signal must not break the shutdown the first one began
            raised.append(signum)
            raise TerminatedError(128 + signum)

    previous = {sig: signal.signal(sig, terminate) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def quiet_handlers() -> None:
    for key, value in _QUIET_HANDLERS.items():
        os.environ.setdefault(key, value)


class Runtime:
    """Opens the store (starting the embedded PostgreSQL when nothing else is configured) and
    builds the workflow on demand; closes both, and stops the embedded server when no other
    deepmem process uses it, on every exit: normal, error, SIGINT, SIGTERM, SIGHUP. This is the
    one place a command's shutdown happens: `serve`, `demo` and `generate` run inside it."""

    def __init__(
        self,
        *,
        time_scale: float = 0.05,
        handlers: Callable[[Runtime], Mapping[str, Any]] | None = None,
    ) -> None:
        quiet_handlers()
        self.config: Config = load_config()
        self._time_scale = time_scale
        self._handlers = handlers
        self._embedded: Any = None
        self._exit = ExitStack()
        self._store: RunStore | None = None
        self._workflow: Workflow | None = None

    # lifecycle

    def __enter__(self) -> Runtime:
        self._exit.enter_context(exit_on_signals())
        try:
            if not self.config.database_url and not self.config.supabase_url:
                self._open_embedded()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            close = getattr(self._workflow, "close", None)
            if close is not None:
                close()
            store_close = getattr(self._store, "close", None)
            if store_close is not None:
                store_close()
            from deepmem import wiring

            wiring.forget_run_stores()
        finally:
            self._exit.close()  # the embedded server's session, then the signal handlers

    def _open_embedded(self) -> None:
        import psycopg

        from deepmem.local.embedded_postgres import EmbeddedPostgres
        from deepmem.local.migrations import apply_bootstrap, apply_migrations

        data_dir = self.config.home.resolve() / "postgres"
        self._embedded = self._exit.enter_context(EmbeddedPostgres(data_dir).session())
        with psycopg.connect(self._embedded.url, autocommit=True) as conn:
            exists = conn.execute(
                "select 1 from pg_database where datname = %s", (EMBEDDED_DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f"create database {EMBEDDED_DATABASE}")
        url = self._embedded.url_for(EMBEDDED_DATABASE)
        with psycopg.connect(url, autocommit=True) as conn:
            apply_bootstrap(conn)
            apply_migrations(conn)
        # The in-process handlers read their configuration from the environment, as a Lambda.
        os.environ["DATABASE_URL"] = url
        load_config.cache_clear()
        self.config = load_config()

    # parts

    @property
    def is_local(self) -> bool:
        return not self.config.state_machine_arn

    @property
    def store(self) -> RunStore:
        if self._store is None:
            from deepmem import wiring

            self._store = wiring.shared_run_store(self.config)
            self._sweep(self._store)
        return self._store

    @staticmethod
    def _sweep(store: RunStore) -> None:
        """The local safety net, run by every command that opens the store: a run whose local
        process was killed (its lease expired) is failed, so it can be proceeded."""
        from deepmem.services.runs import fail_lost_local_runs

        if hasattr(store, "expired_leases"):
            fail_lost_local_runs(store, store)  # type: ignore[arg-type]

    @property
    def workflow(self) -> Workflow:
        if self._workflow is None:
            from deepmem import wiring

            if self.is_local:
                options: dict[str, Any] = {
                    "time_scale": self._time_scale,
                    "leases": self.store,
                    "lease_seconds": self.config.local_lease_seconds,
                }
                if self._handlers is not None:
                    self._workflow = wiring.build_local_workflow(
                        self.config, handlers=self._handlers(self), **options
                    )
                else:
                    self._workflow = wiring.build_local_workflow(self.config, **options)
            else:
                self._workflow = wiring.build_workflow(self.config)
        return self._workflow

    def runs(self) -> RunService:
        from deepmem import wiring

        return wiring.build_run_service(self.config, self.store, self.workflow)

    def execution(self, run_id: Any, phase: Phase, attempt: int) -> Execution | None:
        return self.workflow.describe(run_id, phase, attempt)

    def wait(
        self,
        run_id: Any,
        phase: Phase,
        attempt: int,
        on_tick: Callable[[], None] | None = None,
        interval: float = 0.2,
    ) -> Execution:
        """Until the execution ends (locally it lives in this process: the CLI must wait)."""
        while True:
            if on_tick is not None:
                on_tick()
            execution = self.workflow.describe(run_id, phase, attempt)
            if execution is not None and execution.state is not ExecutionState.RUNNING:
                if on_tick is not None:
                    on_tick()
                return execution
            time.sleep(interval)
