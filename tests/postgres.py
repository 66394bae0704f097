"""
Throwaway PostgreSQL clusters for tests: C{initdb} in a temporary directory, the server
on a free loopback port, run as an unprivileged user (PostgreSQL refuses to run as root,
and the tests do), stopped and removed afterwards.

L{sharedCluster} is one cluster per test process, for tests that only need a fresh
database each (L{Cluster.database}); a test that stops or breaks its server starts a
L{Cluster} of its own.
"""

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from tests.server import freePort

USER, PASSWORD = "logsvc", "secret word"


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]))
    return found[-1] if found else shutil.which(name)


def available() -> bool:
    return _bin("initdb") is not None and _bin("pg_ctl") is not None


def _account() -> str | None:
    """Who runs the server: root cannot; C{postgres} (the Debian package's) or C{nobody}."""
    if os.getuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    raise RuntimeError("no unprivileged account to run PostgreSQL as")


class Cluster:
    """One PostgreSQL server: C{start()}, C{stop()}, C{start()} again, C{destroy()}."""

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix="logsvc-pg-")
        self.data = os.path.join(self.directory, "data")
        self.port = freePort()
        self.account = _account()
        self._databases = 0
        if self.account:
            entry = pwd.getpwnam(self.account)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        passwords = os.path.join(self.directory, "password")
        with open(passwords, "w") as f:
            f.write(PASSWORD + "\n")
        if self.account:
            os.chown(passwords, pwd.getpwnam(self.account).pw_uid, -1)
        self._run(_bin("initdb"), "-D", self.data, "-U", USER, "--pwfile", passwords,
                  "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
                  "--locale=C")
        os.unlink(passwords)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.directory}'\n"
                    "max_connections = 200\nshared_buffers = 64MB\n"
                    "fsync = on\nsynchronous_commit = on\n")

    def _run(self, *args: str) -> None:
        user = {"user": self.account} if self.account else {}
        result = subprocess.run(args, capture_output=True, text=True, cwd=self.directory,
                                **user)
        if result.returncode:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}")

    def uri(self, database: str = "postgres", user: str = USER,
            password: str = PASSWORD) -> str:
        quoted = password.replace(" ", "%20")
        return f"postgresql://{user}:{quoted}@127.0.0.1:{self.port}/{database}"

    def start(self) -> "Cluster":
        self._run(_bin("pg_ctl"), "-D", self.data, "-w", "-t", "60", "-l",
                  os.path.join(self.directory, "server.log"), "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(_bin("pg_ctl"), "-D", self.data, "-w", "-t", "60", "-m", mode, "stop")

    def running(self) -> bool:
        return os.path.exists(os.path.join(self.data, "postmaster.pid"))

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.directory, ignore_errors=True)

    def sql(self, statement: str, database: str = "postgres") -> list:
        """Run one statement (autocommit) and return its rows, if any."""
        import psycopg
        with psycopg.connect(self.uri(database), autocommit=True) as connection:
            cursor = connection.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def database(self) -> str:
        """A new empty database; its URI."""
        self._databases += 1
        name = f"test{self._databases}_{os.getpid()}"
        self.sql(f"CREATE DATABASE {name}")
        return self.uri(name)


_shared: Cluster | None = None


def sharedCluster() -> Cluster:
    """The test process's cluster, started at first use and removed at exit."""
    global _shared
    if _shared is None:
        cluster = Cluster()
        atexit.register(cluster.destroy)
        _shared = cluster.start()
    return _shared


def skipUnlessAvailable(case=None) -> None:
    """Skip (trial or pytest) when PostgreSQL is not installed."""
    if available():
        return
    reason = "PostgreSQL (initdb, pg_ctl) not installed"
    if case is not None:
        from twisted.trial.unittest import SkipTest
        raise SkipTest(reason)
    pytest.skip(reason)

