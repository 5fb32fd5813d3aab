"""Hostile probes of the embedded PostgreSQL (issue 15, item 1): it lets no one in without its
password, no role deepmem does not need as superuser can run a program, and no exit deepmem
controls (or a SIGKILL it does not) leaves a server running."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from deepmem.local.embedded_postgres import EmbeddedPostgres, _pg

from tests.db import TestServer
from tests.integration.test_cli import ROOT, deepmem

#: The roles deepmem creates or uses besides the superuser that applies the migrations.
API_ROLES = ("anon", "authenticated", "service_role")


def _embedded(pg_server: TestServer) -> EmbeddedPostgres:
    if pg_server.embedded is None:
        pytest.skip("DEEPMEM_TEST_PG names another server: these probes are of the embedded one")
    return pg_server.embedded


def _psql() -> str:
    return str(EmbeddedPostgres.programs() / "psql")


def test_a_connection_without_the_password_is_refused(pg_server: TestServer) -> None:
    server = _embedded(pg_server)
    for dsn in (
        f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres",
        f"host={server.data_dir} port={server.port} user=postgres dbname=postgres",
        f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres password=wrong",
    ):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(dsn, connect_timeout=10)
    with psycopg.connect(server.url, connect_timeout=10) as conn:
        assert conn.execute("select current_user").fetchone() == ("postgres",)


def test_no_trust_line_and_private_files(pg_server: TestServer) -> None:
    server = _embedded(pg_server)
    with psycopg.connect(server.url) as conn:
        rules = conn.execute(
            "select type, auth_method, address from pg_hba_file_rules where error is null"
        ).fetchall()
        socket_mode = conn.execute("show unix_socket_permissions").fetchone()
    assert rules, "the server read its pg_hba.conf"
    assert {method for _, method, _ in rules} == {"scram-sha-256"}
    assert {address for kind, _, address in rules if kind == "host"} == {"127.0.0.1"}
    assert socket_mode == ("0700",)
    assert (server.data_dir.stat().st_mode & 0o777) == 0o700
    assert (server.password_file.stat().st_mode & 0o777) == 0o600


def _as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    runuser = shutil.which("runuser")
    if os.geteuid() != 0 or runuser is None:
        pytest.skip("needs root and runuser to act as another OS user")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C"}
    return subprocess.run(
        [runuser, "-u", "nobody", "--", *command],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def test_another_os_user_gets_nothing(pg_server: TestServer) -> None:
    """As `nobody`: no password over TCP, no way into the socket's folder, no password file."""
    server = _embedded(pg_server)
    query = ("-w", "-X", "-c", "select 1")
    tcp = _as_nobody(_psql(), f"host=127.0.0.1 port={server.port} user=postgres", *query)
    assert tcp.returncode != 0
    assert "password" in tcp.stderr, tcp.stderr
    sock = _as_nobody(_psql(), f"host={server.data_dir} port={server.port} user=postgres", *query)
    assert sock.returncode != 0
    assert "Permission denied" in sock.stderr or "No such file" in sock.stderr, sock.stderr
    secret = _as_nobody("cat", str(server.password_file))
    assert secret.returncode != 0 and secret.stdout == ""


def test_copy_from_program_is_impossible_for_every_role_but_the_superuser(
    database_url: str,
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        superusers = {r for (r,) in conn.execute("select rolname from pg_roles where rolsuper")}
        runners = conn.execute(
            "select m.rolname from pg_auth_members a"
            " join pg_roles g on g.oid = a.roleid join pg_roles m on m.oid = a.member"
            " where g.rolname = 'pg_execute_server_program'"
        ).fetchall()
        login = {
            r for (r,) in conn.execute("select rolname from pg_roles where rolcanlogin")
        } - superusers
        assert superusers == {"postgres"}
        assert runners == []
        assert login == set(), "no role but the superuser logs in"
        conn.execute("create table probe (line text)")
        conn.execute("grant all on probe to anon, authenticated, service_role")
        for role in API_ROLES:
            with conn.transaction():
                conn.execute(f"set local role {role}")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("copy probe from program 'id'")
            with conn.transaction():
                conn.execute(f"set local role {role}")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("copy (select 1) to program 'cat'")


# -- the CLI's server: stopped on every exit, a killed process's leftover found -------------


def _postmaster_pid(home: Path) -> int | None:
    pid_file = home / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return None
    return int(pid_file.read_text().splitlines()[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(home: Path, port: int | None = None) -> subprocess.Popen[str]:
    """`deepmem serve` on `home`, its output in `home/serve.log`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SUPABASE"))}
    env |= {"DEEPMEM_HOME": str(home), "COLUMNS": "4000", "DEEPMEM_DATASET": ""}
    home.mkdir(parents=True, exist_ok=True)
    with (home / "serve.log").open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "deepmem.cli", "serve", "--port", str(port or _free_port())],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )


def _log(home: Path) -> str:
    return (home / "serve.log").read_text()


def _wait_for_database(server: subprocess.Popen[str], home: Path) -> int:
    """The pid of the postmaster `server` started, once it says it serves (it prints that
    only once it listens, inside the runtime that holds the store)."""
    deadline = time.monotonic() + 120
    while "serving the API on " not in _log(home):
        assert server.poll() is None, f"serve ended early ({server.returncode}): {_log(home)}"
        assert time.monotonic() < deadline, f"serve did not open the store: {_log(home)}"
        time.sleep(0.1)
    pid = _postmaster_pid(home)
    assert pid is not None and _alive(pid), "serve runs the embedded PostgreSQL"
    return pid


def _gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _listening(port: int, server: subprocess.Popen[str], home: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert server.poll() is None, f"serve ended early ({server.returncode}): {_log(home)}"
        assert time.monotonic() < deadline, f"serve does not listen: {_log(home)}"
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_serve_stops_the_database(tmp_path: Path, sig: signal.Signals) -> None:
    port = _free_port()
    server = _serve(tmp_path, port)
    try:
        postmaster = _wait_for_database(server, tmp_path)
        _listening(port, server, tmp_path)
        server.send_signal(sig)
        try:
            code = server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve still runs 90 s after {sig.name}: {_log(tmp_path)}")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    # A graceful shutdown may end 0 (the server handled the signal) or 128 + the signal.
    assert code in (0, 128 + sig), _log(tmp_path)
    assert _gone(postmaster), f"the database outlived serve after {sig.name}: {_log(tmp_path)}"
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()


def test_a_killed_process_leftover_is_found_and_stopped_by_the_next_command(
    tmp_path: Path,
) -> None:
    server = _serve(tmp_path)
    try:
        leftover = _wait_for_database(server, tmp_path)
    finally:
        server.kill()  # SIGKILL: nothing of deepmem runs on the way out
        server.wait()
    assert _alive(leftover), "SIGKILL leaves the database running"

    listed = deepmem(tmp_path, "runs", "--json")

    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert _gone(leftover), "the next command stopped the leftover server"
    assert _postmaster_pid(tmp_path) is None, "and stopped its own on the way out"


def test_a_second_process_shares_the_server_and_the_last_one_out_stops_it(
    tmp_path: Path,
) -> None:
    server = _serve(tmp_path)
    try:
        postmaster = _wait_for_database(server, tmp_path)
        listed = deepmem(tmp_path, "runs", "--json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert _alive(postmaster), "a command beside serve leaves serve's database running"
        assert _postmaster_pid(tmp_path) == postmaster
        server.terminate()
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert _gone(postmaster), _log(tmp_path)


def test_a_data_directory_of_the_trusting_version_is_locked_on_first_start(
    tmp_path: Path,
) -> None:
    """A `.deepmem/postgres` an earlier deepmem made (`--auth=trust`, no password) keeps its
    data and gets the password and the rules at its next start."""
    data = tmp_path / "postgres"
    older = EmbeddedPostgres(data)
    older.data_dir.mkdir(parents=True)
    if os.geteuid() == 0:
        older._prepare_for_system_user()
    older._run(_pg("initdb"), ["--auth=trust", "--encoding=utf8", "-U", "postgres"])
    assert "trust" in (data / "pg_hba.conf").read_text()
    assert not older.password_file.exists()

    with EmbeddedPostgres(data).session() as server:
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres")
        with psycopg.connect(server.url) as conn:
            rules = conn.execute("select auth_method from pg_hba_file_rules").fetchall()
        assert {method for (method,) in rules} == {"scram-sha-256"}
    assert not server.running()


def test_a_new_data_directory_beside_an_old_password_file_gets_its_own(tmp_path: Path) -> None:
    first = EmbeddedPostgres(tmp_path / "postgres")
    with first.session():
        old_password = first.password()
    shutil.rmtree(first.data_dir)  # the user removed the data, not the password file

    with EmbeddedPostgres(tmp_path / "postgres").session() as again:
        assert again.password() != old_password
        with psycopg.connect(again.url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
