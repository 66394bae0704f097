"""
Journal scenarios (the tcp-log-server protocol) against logsvc or the npm
tcp-log-server: durable writes, catch-up, pull reads of 5, write-to-reader latency.

The generators keep the per-message work small (pre-formatted bytes out, acks counted
by newline) so the server, not Python on the client side, is what gets measured.
"""

import collections
import dataclasses
import functools
import json
import select
import selectors
import socket
import time

from .common import BenchError, Generators, Logsvc, TcpLogServer, percentiles, report
from .wire import RECV_BYTES, Reader, connect, message, parseMessages, readHead

# tcp-log-server 10.0.0 only serves reads with a "read" count; this stands for "all".
EVERYTHING = 2**31 - 1


def writeMessage(writer: int, number: int, size: int) -> bytes:
    """A write whose canonical entry is about C{size} bytes and unique to (writer, number)."""
    head = b'{"id":"%d.%d","entry":{"n":%d,"text":"' % (writer, number, number)
    tail = b'","writer":%d}}\n' % writer
    padding = max(0, size - 30)
    return head + b"x" * padding + tail


def write(port: int, inFlight: int, size: int, duration: float | None, limit: int | None,
          writers: list, ready, go) -> list:
    """
    Keep C{inFlight} writes outstanding on each writer's connection until C{limit}
    writes each (or C{duration} seconds) are sent, then wait for every ack.  Returns,
    per writer, (acks, errors, time of the last ack, ack latencies in ns, highest index);
    latencies pair acks with sends in order, as both servers acknowledge one connection
    in order, and only the last ack is parsed, for the highest index.
    """
    selector = selectors.DefaultSelector()
    state = {}
    for writer in writers:
        connection = connect(port)
        state[connection] = {"writer": writer, "sent": 0, "acked": 0, "errors": 0,
                             "times": collections.deque(), "latencies": [], "last": 0.0,
                             "chunks": (b"", b"")}
        selector.register(connection, selectors.EVENT_READ)
    ready.put(("ready", len(writers)))
    go.wait()
    deadline = None if duration is None else time.monotonic() + duration

    def send(connection, count: int) -> None:
        record = state[connection]
        if limit is not None:
            count = min(count, limit - record["sent"])
        if count <= 0:
            return
        first = record["sent"]
        record["sent"] += count
        data = b"".join([writeMessage(record["writer"], n, size)
                         for n in range(first, first + count)])
        now = time.monotonic_ns()
        record["times"].extend([now] * count)
        connection.sendall(data)

    for connection in state:
        send(connection, inFlight)
    waiting = sum(1 for record in state.values() if record["sent"])
    sending = True
    while waiting:
        events = selector.select(timeout=60)
        if not events:
            raise BenchError("no acknowledgement for 60 s")
        for key, _ in events:
            connection = key.fileobj
            record = state[connection]
            data = connection.recv(RECV_BYTES)
            now = time.monotonic_ns()
            if not data:
                raise BenchError(f"server closed writer {record['writer']}'s connection")
            acks = data.count(b"\n")
            record["errors"] += data.count(b'"error"')
            record["acked"] += acks
            times, latencies = record["times"], record["latencies"]
            for _ in range(acks):
                latencies.append(now - times.popleft())
            record["last"] = now / 1e9
            record["chunks"] = (record["chunks"][1], data)
            if sending and deadline is not None and now / 1e9 >= deadline:
                sending = False
            if sending:
                send(connection, acks)
            if record["acked"] == record["sent"] and not record.get("done"):
                if not sending or (limit is not None and record["sent"] >= limit):
                    record["done"] = True
                    waiting -= 1
    for connection in state:
        connection.close()
    return [(r["acked"], r["errors"], r["last"], r["latencies"], _lastIndex(r["chunks"]))
            for r in state.values()]


def _lastIndex(chunks: tuple) -> int:
    """The index in the last ack, the connection's highest: acks come in commit order."""
    last = b"".join(chunks).rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return int(json.loads(last).get("index", 0)) if last else 0


def writeAll(port: int, writers: int, inFlight: int, size: int, timeout: float,
             duration: float | None = None, limit: int | None = None,
             firstWriter: int = 0) -> dict:
    """
    Run C{writers} writers (numbered from C{firstWriter}: numbers make their entries
    and ids unique) in generator processes; throughput and ack latency.
    """
    work = functools.partial(write, port, inFlight, size, duration, limit)
    numbers = list(range(firstWriter, firstWriter + writers))
    with Generators(work, numbers, perProcess=4) as generators:
        generators.ready(timeout=30)
        started = generators.go()
        results, generatorCPU = generators.results(timeout)
    acked = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    if errors:
        raise BenchError(f"{errors} writes answered with an error")
    seconds = max(r[2] for r in results) - started
    latencies = [sample for r in results for sample in r[3]]
    return {"acked": acked, "max_index": max(r[4] for r in results),
            "seconds": round(seconds, 3),
            "writes_per_s": round(acked / seconds),
            **{f"ack_{k}": v for k, v in percentiles(latencies, 50, 99).items()},
            "generator_cpu_s": round(generatorCPU, 2)}


def populate(port: int, entries: int, size: int, timeout: float) -> int:
    """
    Write C{entries} entries with 8 writers x 100 in flight; return the head, which is
    the highest acknowledged index (fewer than C{entries} if the server gave one index
    to two writes).
    """
    writers = 8
    per, extra = divmod(entries, writers)
    head = writeAll(port, writers - 1, 100, size, timeout, limit=per)["max_index"]
    if per + extra:
        last = writeAll(port, 1, 100, size, timeout, limit=per + extra, firstWriter=writers - 1)
        head = max(head, last["max_index"])
    reported = readHead(port)
    if reported not in (None, head):
        raise BenchError(f"the server reports head {reported} after acknowledging up to {head}")
    return head


def readFrom(port: int, request: dict, readers: list, ready, go) -> list:
    """Send one read request at C{go} and collect everything until it ends."""
    connection = connect(port)
    ready.put(("ready", 1))
    go.wait()
    connection.sendall(message(request))
    chunks, tail = [], b""
    while True:
        data = connection.recv(RECV_BYTES)
        if not data:
            raise BenchError("the server closed the reading connection")
        chunks.append(data)
        tail = (tail + data)[-256:]
        if tail.endswith(b"\n"):
            last = tail[:-1].rsplit(b"\n", 1)[-1]
            if b'"current"' in last or b'"head"' in last or b'"error"' in last:
                if b'"index"' not in last:
                    break
    finished = time.monotonic()
    connection.close()
    return [(finished, b"".join(chunks))]


def checkCatchUp(data: bytes, head: int) -> dict:
    """Count entries, check their order, and note entries sent without their index."""
    entries, missingIndex, errors, expected = 0, 0, 0, 1
    for line in data.split(b"\n"):
        if not line:
            continue
        answer = json.loads(line)
        if "error" in answer:
            errors += 1
        if "entry" not in answer:
            continue
        entries += 1
        index = answer.get("index")
        if index is None:
            missingIndex += 1
        elif int(index) != expected:
            raise BenchError(f"catch-up sent index {index} where {expected} was due")
        expected += 1
    if entries != head:
        raise BenchError(f"catch-up delivered {entries} entries of {head}")
    return {"entries": entries, "index_missing": missingIndex, "errors": errors}


def pullRead(port: int, head: int, batch: int, readers: list, ready, go) -> list:
    """
    Successive C{{"from": i, "read": batch}} reads until C{head}, each sent once the
    previous one's C{head} arrived: (finish, entries, entries without index).  Entries
    are checked by prefix, parsed only when they differ from C{{"index":i,...}}.
    """
    connection = connect(port)
    connection.settimeout(10)
    ready.put(("ready", 1))
    go.wait()
    position, missingIndex = 1, 0
    while position <= head:
        end = min(position + batch, head + 1)
        connection.sendall(b'{"from":%d,"read":%d}\n' % (position, end - position))
        answer = _readUntilHead(connection, position)
        for line in answer.split(b"\n")[:-2]:
            if line.startswith(b'{"index":%d,' % position):
                position += 1
            elif line.replace(b" ", b"") == b'{"current":true}' and position == end:
                pass  # logsvc marks the head it just reached; tcp-log-server does not
            else:
                message = json.loads(line)
                if "entry" not in message or int(message.get("index", position)) != position:
                    raise BenchError(f"a pull read from {position} of entries that exist "
                                     f"answered {message}, not entries then head")
                missingIndex += "index" not in message
                position += 1
    finished = time.monotonic()
    connection.close()
    return [(finished, position - 1, missingIndex)]


def _readUntilHead(connection: socket.socket, position: int) -> bytes:
    """Everything a pull read answers, up to and including its C{head} line."""
    buffer = b""
    while True:
        try:
            data = connection.recv(RECV_BYTES)
        except TimeoutError:
            raise BenchError(f"a pull read from {position} got no head within 10 s; "
                             f"its answer ended {buffer[-80:]!r}")
        if not data:
            raise BenchError("the server closed the pull reader's connection")
        buffer += data
        if buffer.endswith(b"\n"):
            last = buffer[buffer.rfind(b"\n", 0, -1) + 1:]
            if b'"head"' in last:
                return buffer
            if b'"error"' in last and b'"index"' not in last:
                raise BenchError(f"a pull read from {position} answered {last!r}")


def liveRole(port: int, rate: float, count: int, size: int, pushReads: bool,
             roles: list, ready, go) -> list:
    """The C{"reader"} follows the log live; the C{"writer"} writes C{count} at C{rate}/s."""
    (role,) = roles
    return [_liveReader(port, count, pushReads, ready, go) if role == "reader"
            else _paceWriter(port, rate, count, size, ready, go)]


def _liveReader(port: int, count: int, pushReads: bool, ready, go) -> tuple:
    reader = Reader(port)
    reader.send({"from": 1} if pushReads else {"from": 1, "read": EVERYTHING})
    if reader.next() != {"current": True}:
        raise BenchError("the live reader expected an empty log")
    ready.put(("ready", 1))
    go.wait()
    latencies, rest = [], b""
    while len(latencies) < count:
        data = reader.socket.recv(RECV_BYTES)
        now = time.monotonic_ns()
        if not data:
            raise BenchError("the server closed the live reader's connection")
        messages, rest = parseMessages(rest + data)
        for answer in messages:
            if "entry" not in answer:
                raise BenchError(f"the live reader got {answer}")
            latencies.append(now - answer["entry"]["sent"])
    reader.close()
    return ("reader", latencies)


def _paceWriter(port: int, rate: float, count: int, size: int, ready, go) -> tuple:
    """Write C{count} entries on schedule, each carrying its send time; ack latencies."""
    connection = connect(port)
    ready.put(("ready", 1))
    go.wait()
    padding = "x" * max(0, size - 40)
    sendTimes: collections.deque = collections.deque()
    acks: list = []

    def received(data: bytes) -> None:
        if not data:
            raise BenchError("the server closed the paced writer's connection")
        if b'"error"' in data:
            raise BenchError(f"a paced write failed: {data[:300]!r}")
        now = time.monotonic_ns()
        for _ in range(data.count(b"\n")):
            acks.append(now - sendTimes.popleft())

    start = time.monotonic()
    for number in range(count):
        # Take acks while waiting for the next send time, so they are timed on arrival.
        while (pause := start + number / rate - time.monotonic()) > 0:
            if select.select([connection], [], [], pause)[0]:
                received(connection.recv(RECV_BYTES))
        sent = time.monotonic_ns()
        sendTimes.append(sent)
        connection.sendall(message({"id": str(number), "entry": {
            "n": number, "sent": sent, "text": padding}}))
    connection.settimeout(30)
    while len(acks) < count:
        received(connection.recv(RECV_BYTES))
    connection.close()
    return ("writer", acks)


@dataclasses.dataclass(frozen=True)
class Setup:
    """Which server every journal scenario starts, and how."""

    target: str = "logsvc"
    tcpLogServer: str | None = None  # where the npm package is installed
    store: str = "sqlite"  # logsvc only: "sqlite" (a fresh file) or a --store value
    serverArgs: tuple = ()  # logsvc only: extra twistd logatron options
    timeout: float = 600.0

    def start(self):
        if self.target == "logsvc":
            return Logsvc("--no-journal-lines", *self.serverArgs, store=self.store).start()
        if self.target == "tcp-log-server":
            if not self.tcpLogServer:
                raise BenchError("--target tcp-log-server needs --tcp-log-server DIR")
            return TcpLogServer(self.tcpLogServer).start()
        raise BenchError(f"unknown target {self.target!r}")

    def report(self, scenario: str, server, parameters: dict, figures: dict) -> dict:
        if server.name == "logsvc":
            parameters.update(store=server.store.split(":")[0],
                              server_args=list(self.serverArgs))
        else:
            parameters.update(store="leveldb")
        return report(scenario, server.name, parameters, figures)


def runWrites(setup: Setup, writers: int = 8, inFlight: int = 100, duration: float = 5.0,
              size: int = 100) -> dict:
    with setup.start() as server:
        before = server.cpu()
        figures = writeAll(server.journalPort, writers, inFlight, size, setup.timeout,
                           duration=duration)
        figures["head"] = readHead(server.journalPort)
        figures.update(server.figures(since=before))
        return setup.report("writes", server, {"writers": writers, "in_flight": inFlight,
                                               "duration": duration, "size": size}, figures)


def runReads(setup: Setup, entries: int = 100_000, catchUp: bool = True,
             batch: int | None = None, size: int = 100) -> list:
    """Populate one store, then time a catch-up in one read and/or successive pull reads."""
    results = []
    with setup.start() as server:
        head = populate(server.journalPort, entries, size, setup.timeout)
        if catchUp:
            results.append(_catchUp(setup, server, head, size))
        if batch:
            results.append(_pull(setup, server, head, batch, size))
    return results


def _catchUp(setup: Setup, server, head: int, size: int) -> dict:
    # tcp-log-server 10.0.0 knows only pull reads: one read of everything stands in.
    request = {"from": 1} if server.name == "logsvc" else {"from": 1, "read": head}
    before = server.cpu()
    with Generators(functools.partial(readFrom, server.journalPort, request),
                    ["reader"], 1) as generators:
        generators.ready(timeout=30)
        started = generators.go()
        [(finished, data)], generatorCPU = generators.results(setup.timeout)
    figures = checkCatchUp(data, head)
    seconds = finished - started
    figures.update(seconds=round(seconds, 3), entries_per_s=round(head / seconds),
                   generator_cpu_s=round(generatorCPU, 2), **server.figures(since=before))
    return setup.report("catchup", server, {"entries": head, "size": size,
                                            "request": request}, figures)


def _pull(setup: Setup, server, head: int, batch: int, size: int) -> dict:
    before = server.cpu()
    with Generators(functools.partial(pullRead, server.journalPort, head, batch),
                    ["reader"], 1) as generators:
        generators.ready(timeout=30)
        started = generators.go()
        [(finished, received, missing)], generatorCPU = generators.results(setup.timeout)
    seconds = finished - started
    figures = {"entries": received, "index_missing": missing, "seconds": round(seconds, 3),
               "entries_per_s": round(received / seconds),
               "generator_cpu_s": round(generatorCPU, 2), **server.figures(since=before)}
    return setup.report("pull", server, {"entries": head, "size": size, "read": batch},
                        figures)


def runLatency(setup: Setup, rate: float = 1000.0, count: int = 5000, size: int = 100) -> dict:
    with setup.start() as server:
        before = server.cpu()
        work = functools.partial(liveRole, server.journalPort, rate, count, size,
                                 server.name == "logsvc")
        with Generators(work, ["reader", "writer"], 1) as generators:
            generators.ready(timeout=30)
            generators.go()
            results, generatorCPU = generators.results(setup.timeout)
        roles = dict(results)
        figures = {"delivered": len(roles["reader"]),
                   **percentiles(roles["reader"], 50, 90, 99, 100),
                   **{f"ack_{k}": v for k, v in percentiles(roles["writer"], 50, 99).items()},
                   "generator_cpu_s": round(generatorCPU, 2), **server.figures(since=before)}
        return setup.report("latency", server, {"rate": rate, "count": count, "size": size},
                            figures)
