"""
The clients the benchmarks speak logsvc's protocols with: the journal's NDJSON (and
tcp-log-server's), the line service's first line, ``/status`` over HTTP, and
``logsvc-query watch`` as a subprocess.  Each is a plain blocking socket or process, so
a load generator's own work stays small and predictable.
"""

import collections
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import urllib.request

from .common import BenchError

# Under glibc malloc's mmap threshold: a larger recv buffer costs a mmap per call.
RECV_BYTES = 64 * 1024
QUERY = os.path.join(os.path.dirname(sys.executable), "logsvc-query")


def connect(port: int) -> socket.socket:
    """A journal connection with Nagle's algorithm off, as a latency-aware client has."""
    connection = socket.create_connection(("127.0.0.1", port))
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def parseMessages(buffer: bytes) -> tuple[list, bytes]:
    """Complete JSON messages in C{buffer}, and the incomplete rest."""
    *complete, rest = buffer.split(b"\n")
    return [json.loads(line) for line in complete if line.strip()], rest


def message(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


class Reader:
    """A blocking reader of one journal connection's messages."""

    def __init__(self, port: int):
        self.socket = connect(port)
        self._rest = b""
        self._queue: collections.deque = collections.deque()

    def send(self, body: dict) -> None:
        self.socket.sendall(message(body))

    def next(self) -> dict:
        while not self._queue:
            data = self.socket.recv(RECV_BYTES)
            if not data:
                raise BenchError("the server closed the journal connection")
            messages, self._rest = parseMessages(self._rest + data)
            self._queue.extend(messages)
        return self._queue.popleft()

    def close(self) -> None:
        self.socket.close()


def readHead(port: int, timeout: float = 30.0) -> int | None:
    """
    The head, from a pull read of one entry (the log must not be empty); None when the
    server answers C{current} instead, as tcp-log-server 10.0.0 on LevelDB does because
    it sends old entries without their index and so never sees the read complete.
    """
    reader = Reader(port)
    reader.socket.settimeout(timeout)
    try:
        reader.send({"from": 1, "read": 1})
        indexed = False
        while True:
            answer = reader.next()
            if "head" in answer:
                return answer["head"]
            if "entry" in answer:
                indexed = "index" in answer
            if "current" in answer and not indexed:
                return None
            if "error" in answer and "index" not in answer:
                raise BenchError(f"reading the head: {answer}")
    finally:
        reader.close()


def waitForIndex(port: int, index: int, timeout: float) -> None:
    """Return once entry C{index} is committed: a read from it answers with it."""
    reader = Reader(port)
    reader.socket.settimeout(timeout)
    try:
        reader.send({"from": index, "read": 1})
        while True:
            answer = reader.next()
            if answer.get("index") == index:
                return
            if "error" in answer:
                raise BenchError(f"waiting for index {index}: {answer}")
    except TimeoutError:
        raise BenchError(f"entry {index} was not committed within {timeout} s")
    finally:
        reader.close()


def lineClient(port: int, name: str, timeout: float | None = None) -> socket.socket:
    """A line-service connection that has sent its C{IAM} line."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    connection.sendall(b"IAM %s\n" % name.encode())
    return connection


def status(httpPort: int) -> dict:
    """The server's C{GET /status}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{httpPort}/status", timeout=30) as r:
        return json.load(r)


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on C{port} now."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Watch:
    """
    C{logsvc-query watch --json} as a subprocess, read one printed event at a time;
    leaving the C{with} block stops it with Ctrl-C (SIGINT), as a user would.
    """

    def __init__(self, pbPort: int, *arguments: str):
        self._process = subprocess.Popen(
            [QUERY, "--connect", f"tcp:127.0.0.1:{pbPort}", "watch", "--json", *arguments],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._process.stdout, selectors.EVENT_READ)

    def __enter__(self) -> "Watch":
        if self._process.stderr.readline() != "watching; Ctrl-C to stop\n":
            self.__exit__()
            raise BenchError("logsvc-query watch did not start")
        return self

    def next(self, timeout: float) -> dict:
        """The next event watch prints, as soon as it prints it."""
        if not self._selector.select(timeout):
            raise BenchError(f"watch printed nothing for {timeout} s")
        return json.loads(self._process.stdout.readline())

    def __exit__(self, *exc) -> None:
        process = self._process
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._selector.close()
        process.stdout.close()
        process.stderr.close()
