"""
The floor under durable writes on this machine: the least a server can do per write
and still be durable, measured with the ``writes`` scenario's own load generator.

``python -m bench.floor MODE DIRECTORY`` serves journal writes on a free loopback port
(printed first) with nothing but a socket, ``json`` and SQLite configured as logsvc's
store is (WAL, ``synchronous=FULL``, the WAL preallocated): no Twisted, hashing,
deduplication or reads.  In ``thread`` mode a second thread commits whatever is queued
as one transaction and wakes the network thread through a pipe, the hand-off logsvc's
design requires (the reactor never waits on the disk); in ``inline`` mode the network
thread commits each write itself.
"""

import json
import os
import selectors
import socket
import sqlite3
import subprocess
import sys
import threading

from bench.common import BenchError, Target, report
from bench.journal import writeAll
from logsvc.sqlite.writer import CHECKPOINT_PAGES, preallocateWAL

MODES = ("thread", "inline")
PRAGMAS = ("journal_mode=WAL", "synchronous=FULL", f"wal_autocheckpoint={CHECKPOINT_PAGES}",
           "journal_size_limit=67108864", "cache_size=-32768")


def openStore(path: str) -> sqlite3.Connection:
    store = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        store.execute(f"PRAGMA {pragma}")
    store.execute("CREATE TABLE entries (idx INTEGER PRIMARY KEY, id TEXT, data BLOB)")
    preallocateWAL(store, path)
    return store


def commit(store: sqlite3.Connection, writes: list) -> list:
    """One transaction for C{writes} (id, line); their indices."""
    store.execute("BEGIN IMMEDIATE")
    indices = [store.execute("INSERT INTO entries (id, data) VALUES (?, ?)", write).lastrowid
               for write in writes]
    store.execute("COMMIT")
    return indices


def serve(mode: str, directory: str) -> None:
    store = openStore(os.path.join(directory, "floor.db"))
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    acks = []                       # (connection, id, index) from the committing thread
    queued = []                     # (connection, id, line) for the committing thread
    wakeup = threading.Condition()
    woken, wake = os.pipe()

    def committer() -> None:
        while True:
            with wakeup:
                while not queued:
                    wakeup.wait()
                batch = queued[:]
                queued.clear()
            indices = commit(store, [(writeId, line) for _, writeId, line in batch])
            acks.extend((connection, writeId, index)
                        for (connection, writeId, _), index in zip(batch, indices))
            os.write(wake, b"x")

    if mode == "thread":
        threading.Thread(target=committer, daemon=True).start()
        selector.register(woken, selectors.EVENT_READ)
    pending = {}
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                connection, _ = listener.accept()
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(connection, selectors.EVENT_READ)
                pending[connection] = b""
            elif key.fileobj is woken:
                os.read(woken, 4096)
                while acks:
                    connection, writeId, index = acks.pop(0)
                    connection.sendall(json.dumps({"id": writeId, "index": index}).encode()
                                       + b"\n")
            else:
                connection = key.fileobj
                data = connection.recv(65536)
                if not data:
                    selector.unregister(connection)
                    connection.close()
                    continue
                *lines, pending[connection] = (pending[connection] + data).split(b"\n")
                writes = [(json.loads(line)["id"], line) for line in lines]
                if mode == "thread":
                    with wakeup:
                        queued.extend((connection, writeId, line) for writeId, line in writes)
                        wakeup.notify()
                elif writes:
                    indices = commit(store, writes)
                    connection.sendall(b"".join(
                        json.dumps({"id": writeId, "index": index}).encode() + b"\n"
                        for (writeId, _), index in zip(writes, indices)))


class Floor(Target):
    """The minimal server, in a child process."""

    def __init__(self, mode: str):
        self.name = f"floor-{mode}"
        super().__init__()
        self.mode = mode
        self.process = None

    def start(self) -> "Floor":
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.process = subprocess.Popen([sys.executable, "-m", "bench.floor", self.mode,
                                         self.directory], cwd=root, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE)
        self.pid = self.process.pid
        port = self.process.stdout.readline()
        if not port.strip().isdigit():
            raise BenchError(f"{self.name} did not start")
        self.journalPort = int(port)
        self.watchMemory()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run(mode: str, writers: int = 1, inFlight: int = 1, duration: float = 5.0,
        size: int = 100, timeout: float = 600.0) -> dict:
    with Floor(mode).start() as server:
        before = server.cpu()
        figures = writeAll(server.journalPort, writers, inFlight, size, timeout,
                           duration=duration)
        figures.update(server.figures(since=before))
        return report("floor", server.name, {"writers": writers, "in_flight": inFlight,
                                             "duration": duration, "size": size}, figures)


if __name__ == "__main__":
    serve(*sys.argv[1:])
