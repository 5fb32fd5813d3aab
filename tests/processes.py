"""What the test session leaves running: the PostgreSQL servers and deepmem processes it
started. A postmaster is reparented once `pg_ctl` returns, so it is found by its working
directory (its data directory, always under one of the session's temporary folders); a server
or CLI the tests started is found as a child of this process."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from pathlib import Path

import psutil

#: Every folder the session's servers live under (tests.db adds the ones it creates).
SESSION_ROOTS: list[Path] = []


def _under(path: str, roots: Iterable[Path]) -> bool:
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):
        return False
    return any(resolved.is_relative_to(root) for root in roots)


def leftover_processes(roots: Iterable[Path]) -> list[psutil.Process]:
    """Live processes whose cwd or a path on whose command line is under `roots`, and live
    descendants of this process."""
    roots = [Path(root).resolve() for root in roots]
    me = psutil.Process()
    found: dict[int, psutil.Process] = {}
    for child in me.children(recursive=True):
        found[child.pid] = child
    for process in psutil.process_iter(["pid", "cwd", "cmdline"]):
        if process.pid == me.pid:
            continue
        cwd = process.info.get("cwd") or ""
        args = process.info.get("cmdline") or []
        paths = [cwd, *(arg for arg in args if arg.startswith("/"))]
        if any(_under(path, roots) for path in paths if path):
            found[process.pid] = process
    alive = []
    for process in found.values():
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            continue
    return alive


def describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:200]} (cwd {process.cwd()})"
    except psutil.Error:
        return str(process.pid)


def kill_all(processes: Iterable[psutil.Process]) -> None:
    """Clean up after a failed check, so one failure does not leave servers behind."""
    for process in processes:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except OSError:
            continue
