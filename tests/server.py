"""
A real ``twistd -n logatron`` subprocess on loopback, for end-to-end tests, and the
checks that tell a test when the server itself broke.

Every test that starts twistd takes the C{twistd} fixture (tests/conftest.py)::

    def test_something(twistd):
        server = twistd("--max-line", "100", store="memory:", listeners=("port",))
        ...  # talk to server.ports["port"]; server.stop() / server.kill() / server.start()

C{twistd(*extra, directory=None, start=True, **keywords)} builds a L{Server} (same
arguments; C{directory} defaults to the test's C{tmp_path}) and starts it.  At teardown
every server still running is stopped with SIGTERM, and the test fails if any server's
log holds a traceback or an C{Unhandled error}, or if any run ended with another exit
status than the test expected: 0, or -9 after L{Server.kill}, or what the test gave to
L{Server.expectExit} before the run ended.  A module-scoped fixture gets the same
checks from C{with Servers(directory) as twistd: yield twistd(...)}.

A command line that must not start at all: C{startupError(*arguments)} runs it,
checks exit status 1 exactly, no traceback and one line on stderr, and returns the line.

Listeners bind port 0 and the ports are read from the server's log
(C{"LineFactory (ConnectionLimit) starting on 41234"}): nothing can take a port
between its choice and its use.  L{freePort} (bind and close) remains for what must
know a port before anything listens on it, such as a port nothing listens on.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

LISTENERS = ("port", "journal", "pb", "http")

_FACTORIES = {"LineFactory": "port", "JournalFactory": "journal", "PBServerFactory": "pb",
              "Site": "http"}
"""The factory each listener names in its C{starting on} log line."""

_STARTING = re.compile(r"\] (\w+) \(ConnectionLimit\)(?: \(TLS\))? starting on (\d+)$",
                       re.MULTILINE)

PROBLEMS = re.compile(r"^.*(Traceback \(most recent call last\)|Unhandled [Ee]rror).*$",
                      re.MULTILINE)
"""Lines of a server log that mean something in the server went wrong."""


def freePort() -> int:
    """A port that was free a moment ago (bind and close: use only when unavoidable)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """
    Start with C{Server(tmpdir).start()}; C{ports} maps each listener (C{port},
    C{journal}, C{pb}, C{http}) to its TCP port once started, or is missing when turned
    off; a restart may get other ports.  C{endpoints} overrides a listener's endpoint
    string, with C{{port}} for its port (for example
    C{"ssl:{port}:interface=127.0.0.1:privateKey=key.pem"}).

    C{runs} records each run's end as C{(exit status, expected status, process)};
    L{problems} says what in the log or the runs means the server broke.
    """

    def __init__(self, directory, *extra, store: str | None = None,
                 listeners=LISTENERS, endpoints: dict | None = None):
        self.directory = str(directory)
        self.listeners = tuple(listeners)
        self.ports: dict = {}
        self.endpoints = endpoints or {}
        self.store = store or f"sqlite:{os.path.join(self.directory, 'journal.db')}"
        self.extra = list(extra)
        self.process = None
        self.logPath = os.path.join(self.directory, "twistd.log")
        self.runs: list = []
        self._expected: int | None = None

    def arguments(self) -> list:
        args = [TWISTD, "-n", "--pidfile=", "logatron", "--store", self.store]
        for name in LISTENERS:
            endpoint = self.endpoints.get(name, "tcp:{port}:interface=127.0.0.1")
            args += [f"--{name}", endpoint.format(port=0) if name in self.listeners else "none"]
        return args + self.extra

    def start(self, timeout: float = 20.0) -> "Server":
        """Start twistd and wait until every listener is bound."""
        self._log = open(self.logPath, "ab")
        logStart = self._log.tell()
        self._expected = None
        self.process = subprocess.Popen(self.arguments(), cwd=self.directory,
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        wanted = set(self.listeners)
        while True:
            bound = {_FACTORIES[factory]: int(port) for factory, port in
                     _STARTING.findall(self.output()[logStart:])
                     if _FACTORIES.get(factory) in wanted}
            if set(bound) == wanted:
                self.ports.clear()  # the same dict: callers may hold it
                self.ports.update(bound)
                return self
            if self.process.poll() is not None:
                self._ended(self.process.returncode)
                raise RuntimeError(f"twistd exited {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"twistd did not listen in {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def expectExit(self, status: int) -> None:
        """The current run is expected to end with C{status} (instead of 0)."""
        self._expected = status

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send C{sig} and wait for the exit; returns the exit code."""
        if self.process.poll() is None:
            if sig == signal.SIGKILL and self._expected is None:
                self._expected = -signal.SIGKILL
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        finally:
            self._log.close()
        self._ended(code)
        return code

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _ended(self, code: int) -> None:
        if not self._log.closed:
            self._log.close()
        if self.runs and self.runs[-1][2] is self.process:
            return
        self.runs.append((code, 0 if self._expected is None else self._expected, self.process))

    def problems(self) -> list:
        """Why this server looks broken: log lines and unexpected exits; empty if fine."""
        found = [f"log: {line}" for line in
                 (m.group(0) for m in PROBLEMS.finditer(self.output()))] \
            if os.path.exists(self.logPath) else []
        found += [f"twistd exited {code}, expected {expected}"
                  for code, expected, _ in self.runs if code != expected]
        return found


class Servers:
    """
    Starts servers for one test (or one module) and, on leaving, stops those still
    running and fails if any of them broke (see the module's docstring).
    """

    def __init__(self, directory):
        self.directory = directory
        self.started: list = []

    def __call__(self, *extra, directory=None, start: bool = True, **keywords) -> Server:
        server = Server(directory or self.directory, *extra, **keywords)
        self.started.append(server)
        return server.start() if start else server

    def __enter__(self) -> "Servers":
        return self

    def __exit__(self, *exc_info) -> None:
        problems = []
        for server in self.started:
            if server.running():
                try:
                    server.stop()
                except subprocess.TimeoutExpired:
                    server.kill()
                    problems.append(f"{server.directory}: twistd ignored SIGTERM for 20 s")
        problems += [f"{server.directory}: {problem}"
                     for server in self.started for problem in server.problems()]
        if problems:
            logs = "\n".join(server.output()[-3000:] for server in self.started
                             if os.path.exists(server.logPath))
            raise AssertionError("the server broke:\n" + "\n".join(problems)
                                 + "\n--- end of its log ---\n" + logs)


def startupError(*arguments: str, cwd=None) -> str:
    """
    Run C{twistd -n logatron ARGUMENTS}, which must refuse to start as documented:
    exit status 1, no traceback, one line on stderr.  Returns that line.
    """
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "logatron", *arguments],
                            capture_output=True, text=True, timeout=60, cwd=cwd,
                            stdin=subprocess.DEVNULL)
    output = result.stderr + result.stdout
    assert result.returncode == 1, (result.returncode, output)
    assert not PROBLEMS.search(output), output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    return errors[0]
