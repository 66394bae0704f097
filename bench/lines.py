"""
Line ingest: N clients each send M ``LOG`` lines of B bytes to the line service.

A client is done when the server has processed all it sent: after the last line it
shuts its sending side down and waits for the server to close the connection, which
the server only does once it has read, and so handled, every byte before the EOF.
With journaling on, the run lasts until the journal holds every event of the run.
"""

import functools
import socket
import threading
import time

from .common import BenchError, Generators, Logsvc, report
from .wire import lineClient, waitForIndex

CHUNK_BYTES = 256 * 1024


def payload(lines: int, size: int) -> tuple[bytes, int, bytes]:
    """One pre-built chunk of whole lines, how many chunks to send, and the remainder."""
    line = b"LOG " + b"x" * (size - 5) + b"\n"
    perChunk = max(1, CHUNK_BYTES // size)
    chunks, rest = divmod(lines, perChunk)
    return line * perChunk, chunks, line * rest


def sendLines(port: int, lines: int, size: int, clients: list, ready, go) -> list:
    """Connect C{clients} (their numbers), stream their lines at C{go}; finish times."""
    chunk, count, rest = payload(lines, size)
    sockets = []
    for number in clients:
        sockets.append(lineClient(port, f"bench-{number}"))
    ready.put(("ready", len(sockets)))
    go.wait()
    finished: list = [None] * len(sockets)
    failures: list = []

    def stream(position: int, connection: socket.socket) -> None:
        try:
            for _ in range(count):
                connection.sendall(chunk)
            if rest:
                connection.sendall(rest)
            connection.shutdown(socket.SHUT_WR)
            answer = connection.recv(4096)
            if answer:
                raise BenchError(f"server answered {answer[:200]!r}")
            finished[position] = time.monotonic()
        except Exception as e:
            failures.append(f"client {clients[position]}: {e}")
        finally:
            connection.close()

    threads = [threading.Thread(target=stream, args=(i, c)) for i, c in enumerate(sockets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise BenchError("; ".join(failures))
    return finished


def run(clients: int = 8, lines: int = 1_000_000, size: int = 100, journal: bool = False,
        perProcess: int = 4, serverArgs: tuple = (), timeout: float = 600.0,
        store: str | None = None) -> dict:
    """
    Without C{journal}: C{--no-journal-lines}, and the store is C{memory:} unless given.
    With it: every event is journaled, to a fresh SQLite file unless C{store} is given.
    """
    if size < 5:
        raise BenchError("--size counts 'LOG ', the message and the newline: at least 5")
    if journal:
        server = Logsvc("--journal-lines", *serverArgs, store=store or "sqlite",
                        listeners=("port", "journal", "http"))
    else:
        server = Logsvc("--no-journal-lines", *serverArgs, store=store or "memory:",
                        listeners=("port",))
    parameters = {"clients": clients, "lines": lines, "size": size,
                  "journal_lines": journal, "store": server.store.split(":")[0],
                  "server_args": list(serverArgs)}
    with server:
        server.start()
        work = functools.partial(sendLines, server.ports["port"], lines, size)
        with Generators(work, list(range(clients)), perProcess) as generators:
            generators.ready(timeout=30)
            before = server.cpu()
            started = generators.go()
            finishes, generatorCPU = generators.results(timeout)
        processed = max(finishes) - started
        total = clients * lines
        figures = {"seconds": round(processed, 3), "lines_per_s": round(total / processed)}
        if journal:
            # Each client adds its ready and close events to its lines.
            waitForIndex(server.journalPort, clients * (lines + 2), timeout)
            journaled = time.monotonic() - started
            figures = {"processed_s": round(processed, 3),
                       "processed_lines_per_s": round(total / processed),
                       "seconds": round(journaled, 3),
                       "lines_per_s": round(total / journaled)}
        figures.update(server.figures(since=before))
        figures["generator_cpu_s"] = round(generatorCPU, 2)
    return report("lines", "logsvc", parameters, figures)
