"""What a CLI command runs against: the configured store and workflow, or the embedded
default (PostgreSQL from the wheel under `.deepmem/`, the ASL run locally by moto)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
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


def quiet_handlers() -> None:
    for key, value in _QUIET_HANDLERS.items():
        os.environ.setdefault(key, value)


class Runtime:
    """Opens the store (starting the embedded PostgreSQL when nothing else is configured) and
    builds the workflow on demand; closes both, and stops a server it started, on exit."""

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
        self._started_server = False
        self._store: RunStore | None = None
        self._workflow: Workflow | None = None

    # lifecycle

    def __enter__(self) -> Runtime:
        if not self.config.database_url and not self.config.supabase_url:
            self._open_embedded()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        close = getattr(self._workflow, "close", None)
        if close is not None:
            close()
        store_close = getattr(self._store, "close", None)
        if store_close is not None:
            store_close()
        from deepmem import wiring

        wiring.forget_run_stores()
        if self._embedded is not None and self._started_server:
            self._embedded.stop()

    def _open_embedded(self) -> None:
        import psycopg

        from deepmem.local.embedded_postgres import EmbeddedPostgres
        from deepmem.local.migrations import apply_bootstrap, apply_migrations

        data_dir = self.config.home.resolve() / "postgres"
        self._embedded = EmbeddedPostgres(data_dir)
        was_running = (data_dir / "postmaster.pid").exists() and self._embedded.running()
        self._embedded.start()
        self._started_server = not was_running
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
        return self._store

    @property
    def workflow(self) -> Workflow:
        if self._workflow is None:
            from deepmem import wiring

            if self.is_local:
                options: dict[str, Any] = {"time_scale": self._time_scale}
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
