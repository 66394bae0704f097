"""A real ``twistd -n logatron`` subprocess on free loopback ports, for end-to-end tests."""

import os
import signal
import socket
import subprocess
import sys
import time

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """
    Start with C{Server(tmpdir).start()}; C{ports} maps each listener (C{port},
    C{journal}, C{pb}, C{http}) to its TCP port, or is missing when turned off.
    C{endpoints} overrides a listener's endpoint string, with C{{port}} for its port
    (for example C{"ssl:{port}:interface=127.0.0.1:privateKey=key.pem"}).
    """

    def __init__(self, directory, *extra, store: str | None = None,
                 listeners=("port", "journal", "pb", "http"), endpoints: dict | None = None):
        self.directory = str(directory)
        self.ports = {name: freePort() for name in listeners}
        self.endpoints = endpoints or {}
        self.store = store or f"sqlite:{os.path.join(self.directory, 'journal.db')}"
        self.extra = list(extra)
        self.process = None
        self.logPath = os.path.join(self.directory, "twistd.log")

    def arguments(self) -> list:
        args = [TWISTD, "-n", "--pidfile=", "logatron", "--store", self.store]
        for name in ("port", "journal", "pb", "http"):
            port = self.ports.get(name)
            endpoint = self.endpoints.get(name, "tcp:{port}:interface=127.0.0.1")
            args += [f"--{name}", endpoint.format(port=port) if port else "none"]
        return args + self.extra

    def start(self, timeout: float = 20.0) -> "Server":
        self._log = open(self.logPath, "ab")
        self.process = subprocess.Popen(self.arguments(), cwd=self.directory,
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        for port in self.ports.values():
            while not _accepts(port):
                if self.process.poll() is not None:
                    raise RuntimeError(f"twistd exited {self.process.returncode}:\n{self.output()}")
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"twistd did not listen on {port}:\n{self.output()}")
                time.sleep(0.05)
        return self

    def output(self) -> str:
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send C{sig} and wait for the exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False
