"""A throwaway PostgreSQL database for the tests that use Dagster's Postgres storage.

The database lives on the server at 127.0.0.1:5432 (user postgres, trust auth), on the server that
NTHLAYER_TEST_POSTGRES_URL names, or, when neither answers, on a server started from the local
PostgreSQL binaries in a temporary directory. It is created fresh and dropped at the end.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

SERVER_URL_ENV = "NTHLAYER_TEST_POSTGRES_URL"
LOCAL_SERVER_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
# SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; dagster-postgres installs psycopg2.
DRIVER = "postgresql+psycopg2"
INSTALL_HINT = "install PostgreSQL (Debian: apt-get install postgresql) or set NTHLAYER_TEST_POSTGRES_URL"


class PostgresUnavailable(RuntimeError):
    """No server answers and none can be started here."""


def with_psycopg2(url: str | URL) -> URL:
    """The URL with the psycopg2 driver, whatever scheme it was written with."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"{SERVER_URL_ENV}: expected a postgresql:// URL, got {parsed.drivername}://")
    return parsed.set(drivername=DRIVER)


def server_answers(url: str | URL, timeout_seconds: int = 2) -> bool:
    engine = sa.create_engine(url, connect_args={"connect_timeout": timeout_seconds})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_binary(name: str) -> str:
    candidates = [shutil.which(name), *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)]
    found = next((c for c in candidates if c), None)
    if not found:
        raise PostgresUnavailable(
            f"no PostgreSQL server answers and `{name}` is not installed: {INSTALL_HINT}"
        )
    return found


def _unprivileged_user() -> pwd.struct_passwd | None:
    """initdb refuses to run as root: as root, run the server as `postgres` (else `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable(
        f"running as root and no `postgres` or `nobody` user to run initdb as: {INSTALL_HINT}"
    )


@dataclass(frozen=True)
class PrivateServer:
    """A PostgreSQL server of our own, which a test may restart under its clients."""

    url: URL
    pg_ctl: str
    data: Path
    log: Path
    run_as: dict[str, Any]

    def restart(self, mode: str = "immediate") -> None:
        """pg_ctl restart: `immediate` drops every connection at once, as a crash does (then recovery).
        The server logs to a file: given our pipe, it would hold it open and this would never return."""
        subprocess.run(
            [self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-m", mode, "-w", "-t", "60", "restart"],
            check=True,
            capture_output=True,
            **self.run_as,
        )


@contextmanager
def private_server(*, crash_safe: bool = False) -> Iterator[PrivateServer]:
    """A PostgreSQL server of our own on a free loopback port, its data in a temporary directory.

    `crash_safe` keeps synchronous commits, for tests that crash it: without them an immediate restart
    loses the commits of the last fraction of a second, as it would in production."""
    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    user = _unprivileged_user()
    run_as: dict[str, Any] = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    base = Path(tempfile.mkdtemp(prefix="nthlayer-postgres-"))
    if user:
        os.chown(base, user.pw_uid, user.pw_gid)
    data, log, port = base / "data", base / "server.log", free_port()
    try:
        cluster = ["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        subprocess.run(
            [initdb, "-D", str(data), *cluster],
            check=True,
            capture_output=True,
            **run_as,
        )
        # Durability is worth nothing to a database that is deleted within the minute. The options go
        # into the cluster's configuration, so a restart keeps them.
        options = {"port": port, "unix_socket_directories": f"'{base}'", "listen_addresses": "'127.0.0.1'"}
        options |= {"fsync": "off"} if crash_safe else {"fsync": "off", "synchronous_commit": "off"}
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in options.items())
        started = subprocess.run(
            [pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "30", "start"],
            capture_output=True,
            text=True,
            **run_as,
        )
        if started.returncode != 0:
            details = log.read_text() if log.exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {started.stderr.strip()}\n{details}")
        try:
            url = make_url(f"{DRIVER}://postgres@127.0.0.1:{port}/postgres")
            yield PrivateServer(url=url, pg_ctl=pg_ctl, data=data, log=log, run_as=run_as)
        finally:
            subprocess.run(
                [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True, **run_as
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def temporary_server() -> Iterator[URL]:
    """The admin URL of a private server (see `private_server`)."""
    with private_server() as server:
        yield server.url


@contextmanager
def postgres_server() -> Iterator[URL]:
    """An admin URL (the `postgres` database) of a server that may create databases."""
    configured = os.environ.get(SERVER_URL_ENV)
    if configured:
        url = with_psycopg2(configured)
        if not server_answers(url):
            raise PostgresUnavailable(f"{SERVER_URL_ENV} names a server that does not answer: {url!r}")
        yield url
    elif server_answers(LOCAL_SERVER_URL):
        yield make_url(LOCAL_SERVER_URL)
    else:
        with temporary_server() as url:
            yield url


@contextmanager
def fresh_database(server: URL, prefix: str = "nthlayer_test") -> Iterator[URL]:
    """CREATE DATABASE <prefix>_<random> on the server; DROP it (closing what still holds it) at the end."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", pool_pre_ping=True)  # outlives restarts
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def render(url: URL) -> str:
    """The URL as text with its password, for DAGSTER_POSTGRES_URL and NTHLAYER_LEDGER_URL."""
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty database for this test session, as a postgresql+psycopg2:// URL."""
    failure = None
    try:
        with postgres_server() as server, fresh_database(server) as database:
            yield render(database)
    except PostgresUnavailable as error:
        failure = str(error)  # reported outside the handler, so the message is shown once
    if failure:
        pytest.fail(failure, pytrace=False)


@pytest.fixture(scope="module")
def restartable_postgres() -> Iterator[PrivateServer]:
    """A private, crash-safe server of the module's own, which its tests may restart."""
    failure = None
    try:
        with private_server(crash_safe=True) as server:
            yield server
    except PostgresUnavailable as error:
        failure = str(error)  # reported outside the handler, so the message is shown once
    if failure:
        pytest.fail(failure, pytrace=False)


@contextmanager
def private_database(prefix: str) -> Iterator[str]:
    """A fresh database of its own for one test, as a URL; the test fails (never skips) without a server."""
    failure = None
    try:
        with postgres_server() as server, fresh_database(server, prefix=prefix) as database:
            yield render(database)
    except PostgresUnavailable as error:
        failure = str(error)  # reported outside the handler, so the message is shown once
    if failure:
        pytest.fail(failure, pytrace=False)
