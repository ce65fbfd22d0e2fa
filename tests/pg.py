"""PostgreSQL for the tests: a fresh database on the local server, or a throwaway cluster.

The local server (127.0.0.1:5432, trust authentication, user postgres) is started by CI when
it is not running. A throwaway cluster is a real server of our own (initdb + pg_ctl on a free
port, password authentication), for tests that stop and restart the database or need roles.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

LOCAL = "postgresql://postgres@127.0.0.1:5432"
BIN = Path("/usr/lib/postgresql/15/bin")


@contextmanager
def fresh_database(
    prefix: str = "tuner_test", server: str = f"{LOCAL}/postgres", *, template: str | None = None
) -> Iterator[str]:
    """A new database on ``server`` (the local one by default), empty or a copy of the database
    ``template``; dropped afterwards. Yields its URL. The benchmarks use it too."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    run_sql(server, f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        run_sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_sql(url: str, sql: str) -> list[tuple[object, ...]]:
    """Run ``sql`` on the database at ``url`` (autocommit); return the rows it returns."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A PostgreSQL server of the test's own, with password authentication."""

    folder: Path
    port: int
    password: str

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, user: str = "postgres", database: str = "postgres") -> str:
        """URL without the password (give it as PGPASSWORD)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin_url(self, database: str = "postgres") -> str:
        """The superuser's URL with its password, for the test's own reads."""
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=True)

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w",
            "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def sql(self, statement: str, database: str = "postgres", user: str = "postgres") -> None:
        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=user, password=self.password, dbname=database
        )
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()


@contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """initdb a cluster (superuser postgres, password auth) in a new folder, start it, yield it.

    The folder is made outside pytest's private temporary tree, which the postgres user (the
    server refuses to run as root) could not enter.
    """
    folder = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
    folder.chmod(0o755)
    password = uuid.uuid4().hex
    cluster = Cluster(folder, free_port(), password)
    pwfile = folder / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        postgres = pwd.getpwnam("postgres")
        for path in (folder, pwfile):
            os.chown(path, postgres.pw_uid, postgres.pw_gid)
    cluster._run(
        "initdb", "-D", str(cluster.data), "-U", "postgres", "--pwfile", str(pwfile),
        "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8",
    )  # fmt: skip
    cluster.start()
    try:
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


def wait_until(predicate, timeout: float = 60, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
