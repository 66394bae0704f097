"""
Many connections at once: thousands of line clients logging together, and hundreds of
journal readers following live while writers append.  Both raise the file-descriptor
limit to the hard limit first (the server and the generators inherit it).
"""

import functools
import json
import resource
import selectors
import socket
import time

from .common import BenchError, Generators, Logsvc, procStatus, report
from .journal import write
from .wire import RECV_BYTES, connect, lineClient, message, status, waitForIndex


def raiseFileLimit(needed: int) -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; refuse a run that cannot fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise BenchError(f"{needed} file descriptors needed, the hard limit is {soft}")
    return soft


def waitOnline(httpPort: int, clients: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (online := status(httpPort)["clients"]["online"]) != clients:
        if time.monotonic() > deadline:
            raise BenchError(f"{online} of {clients} line clients online after {timeout} s")
        time.sleep(0.1)


def untilClosed(selector: selectors.BaseSelector, count: int, what: str) -> float:
    """Wait until the server closed C{count} registered sockets; the last close time."""
    while count:
        events = selector.select(timeout=60)
        if not events:
            raise BenchError(f"no progress from the server for 60 s ({what})")
        for key, _ in events:
            if key.fileobj.recv(RECV_BYTES):
                raise BenchError(f"the server answered a {what}")
            selector.unregister(key.fileobj)
            key.fileobj.close()
            count -= 1
    return time.monotonic()


def manyLineClients(port: int, lines: int, size: int, clients: list, ready, go) -> list:
    """
    Connect every client of C{clients} and say IAM; at C{go} each sends its lines and
    shuts its sending side; done when the server has closed them all, which it does only
    after handling every line before the EOF.
    """
    payload = (b"LOG " + b"x" * (size - 5) + b"\n") * lines
    sockets = []
    for number in clients:
        sockets.append(lineClient(port, f"load-{number}", timeout=60))
    ready.put(("ready", len(sockets)))
    go.wait()
    selector = selectors.DefaultSelector()
    for connection in sockets:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        selector.register(connection, selectors.EVENT_READ)
    return [untilClosed(selector, len(sockets), "line client")]


def runClients(clients: int = 5000, lines: int = 100, size: int = 100,
               journal: bool = False, perProcess: int = 625, serverArgs: tuple = (),
               timeout: float = 600.0) -> dict:
    """C{clients} line clients connected at once, each logging C{lines} lines."""
    if size < 5:
        raise BenchError("--size counts 'LOG ', the message and the newline: at least 5")
    raiseFileLimit(clients + 1000)
    if journal:
        server = Logsvc("--journal-lines", *serverArgs, store="sqlite",
                        listeners=("port", "journal", "http"))
    else:
        server = Logsvc("--no-journal-lines", *serverArgs, store="memory:",
                        listeners=("port", "http"))
    parameters = {"clients": clients, "lines": lines, "size": size, "journal_lines": journal,
                  "store": server.store.split(":")[0], "server_args": list(serverArgs)}
    with server:
        server.start()
        idle = procStatus(server.pid, "VmRSS")
        work = functools.partial(manyLineClients, server.ports["port"], lines, size)
        with Generators(work, list(range(clients)), perProcess) as generators:
            generators.ready(timeout)
            waitOnline(server.ports["http"], clients, timeout)
            connected = procStatus(server.pid, "VmRSS")
            before = server.cpu()
            started = generators.go()
            finishes, generatorCPU = generators.results(timeout)
        seconds = max(finishes) - started
        total = clients * lines
        figures = {"online": clients, "seconds": round(seconds, 3),
                   "lines_per_s": round(total / seconds),
                   "server_kb_per_idle_client": round((connected - idle) / clients / 1024, 1)}
        if journal:
            waitForIndex(server.journalPort, clients * (lines + 2), timeout)
            journaled = time.monotonic() - started
            figures.update(journaled_s=round(journaled, 3),
                           journaled_lines_per_s=round(total / journaled))
        figures.update(server.figures(since=before))
        figures["generator_cpu_s"] = round(generatorCPU, 2)
    return report("clients", "logsvc", parameters, figures)


def liveReaders(port: int, entries: int, readers: list, ready, go) -> list:
    """
    Follow the empty log live from index 1 on each connection; done when each has
    received C{entries} entries, the last being index C{entries}.  Returns each
    reader's finish time.
    """
    selector = selectors.DefaultSelector()
    for _ in readers:
        connection = connect(port)
        connection.settimeout(60)
        connection.sendall(message({"from": 1}))
        answer = connection.recv(RECV_BYTES)
        if answer != b'{"current":true}\n':
            raise BenchError(f"a live reader expected an empty log, got {answer[:200]!r}")
        connection.setblocking(False)
        selector.register(connection, selectors.EVENT_READ, [0, b""])
    ready.put(("ready", len(readers)))
    go.wait()
    finishes, waiting = [], len(readers)
    while waiting:
        events = selector.select(timeout=60)
        if not events:
            raise BenchError("no entry reached a live reader for 60 s")
        for key, _ in events:
            state = key.data
            data = key.fileobj.recv(RECV_BYTES)
            if not data:
                raise BenchError("the server closed a live reader's connection")
            state[0] += data.count(b"\n")
            state[1] = (state[1] + data)[-512:]
            if state[0] >= entries:
                last = json.loads(state[1].rstrip(b"\n").rsplit(b"\n", 1)[-1])
                if state[0] != entries or last.get("index") != entries:
                    raise BenchError(f"a live reader got {state[0]} messages, last {last}")
                finishes.append(time.monotonic())
                selector.unregister(key.fileobj)
                key.fileobj.close()
                waiting -= 1
    return finishes


def runFollowers(readers: int = 200, writers: int = 8, entries: int = 50_000,
                 inFlight: int = 100, size: int = 100, readersPerProcess: int = 25,
                 serverArgs: tuple = (), timeout: float = 600.0) -> dict:
    """C{readers} live followers while C{writers} append C{entries} in all."""
    raiseFileLimit(readers + writers + 1000)
    server = Logsvc("--no-journal-lines", *serverArgs, store="sqlite",
                    listeners=("port", "journal", "http"))
    each, extra = divmod(entries, writers)
    if extra:
        raise BenchError("--entries must be a multiple of --writers")
    parameters = {"readers": readers, "writers": writers, "entries": entries,
                  "in_flight": inFlight, "size": size, "store": "sqlite",
                  "server_args": list(serverArgs)}
    with server:
        server.start()
        port = server.journalPort
        followers = Generators(functools.partial(liveReaders, port, entries),
                               list(range(readers)), readersPerProcess)
        appenders = Generators(functools.partial(write, port, inFlight, size, None, each),
                               list(range(writers)), 4)
        with followers, appenders:
            followers.ready(timeout)
            appenders.ready(timeout)
            before = server.cpu()
            started = followers.go()
            appenders.go()
            written, writerCPU = appenders.results(timeout)
            finishes, readerCPU = followers.results(timeout)
        if sum(r[1] for r in written):
            raise BenchError(f"{sum(r[1] for r in written)} writes answered with an error")
        writeSeconds = max(r[2] for r in written) - started
        readSeconds = max(finishes) - started
        figures = {"writes_per_s": round(entries / writeSeconds),
                   "write_s": round(writeSeconds, 3),
                   "last_reader_s": round(readSeconds, 3),
                   "delivered_entries_per_s": round(entries * readers / readSeconds)}
        figures.update(server.figures(since=before))
        figures["generator_cpu_s"] = round(writerCPU + readerCPU, 2)
    return report("followers", "logsvc", parameters, figures)
