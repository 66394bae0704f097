"""
Getting logs in, each side by side with what users would otherwise run:

* ``handler``: records/s that one Python thread logs through L{LogsvcHandler} to a
  running logsvc, against stdlib C{logging.handlers.SocketHandler} to a listener
  process on the same machine that reads and discards.  Two figures each: the
  caller's own pace (C{emit}) and until every record reached the other side.
* ``syslog``: messages/s over TCP (octet-counted RFC 5424, S senders) into logsvc's
  C{--syslog} (journaled to SQLite), against C{rsyslogd} with C{imtcp} writing them
  to a file; done when logsvc's journal, or rsyslog's file, holds every message.
"""

import logging
import logging.handlers
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

from .common import BenchError, Generators, Logsvc, cpuSeconds, report
from .wire import accepts, status
from tests.server import freePort

_DISCARD = textwrap.dedent("""
    import socket, struct, sys
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    print(server.getsockname()[1], flush=True)
    connection, _ = server.accept()
    records, buffer = 0, b""
    while True:
        data = connection.recv(1 << 20)
        if not data:
            break
        buffer += data
        while len(buffer) >= 4:
            size = struct.unpack(">L", buffer[:4])[0]
            if len(buffer) < 4 + size:
                break
            buffer = buffer[4 + size:]
            records += 1
    print(records, flush=True)
""")


def _waitUntil(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _logThrough(handler: logging.Handler, records: int) -> float:
    log = logging.Logger("bench")
    log.addHandler(handler)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    started = time.monotonic()
    for n in range(records):
        log.info("record %d of the benchmark, about one hundred bytes long with padding", n)
    return time.monotonic() - started


def runHandler(records: int = 100_000, serverArgs: tuple = (), timeout: float = 600.0) -> None:
    from logsvc.handler import LogsvcHandler

    server = Logsvc("--no-journal-lines", *serverArgs, store="memory:",
                    listeners=("port", "http"))
    with server:
        server.start()
        handler = LogsvcHandler("bench", port=server.ports["port"], queueSize=records + 1)
        started = time.monotonic()
        emitted = _logThrough(handler, records)
        _waitUntil(lambda: status(server.ports["http"])["lines"] >= records, timeout,
                   "logsvc to receive every record")
        delivered = time.monotonic() - started
        handler.close()
        report("handler", "logsvc", {"records": records}, {
            "emit_s": round(emitted, 3), "emit_records_per_s": round(records / emitted),
            "delivered_s": round(delivered, 3),
            "delivered_records_per_s": round(records / delivered),
            "dropped": handler.dropped})

    listener = subprocess.Popen([sys.executable, "-c", _DISCARD], stdout=subprocess.PIPE,
                                text=True)
    try:
        port = int(listener.stdout.readline())
        handler = logging.handlers.SocketHandler("127.0.0.1", port)
        started = time.monotonic()
        emitted = _logThrough(handler, records)
        handler.close()
        received = int(listener.stdout.readline())
        delivered = time.monotonic() - started
    finally:
        listener.kill()
        listener.wait()
    report("handler", "stdlib-SocketHandler", {"records": records}, {
        "emit_s": round(emitted, 3), "emit_records_per_s": round(records / emitted),
        "delivered_s": round(delivered, 3),
        "delivered_records_per_s": round(records / delivered), "dropped": records - received})


def _frames(sender: int, messages: int) -> bytes:
    lines = []
    for n in range(messages):
        body = (f"<14>1 2026-12-01T00:00:00.000Z host-{sender} bench - - - message {n} "
                f"of sender {sender}, padded to about a hundred bytes").encode()
        lines.append(b"%d %s" % (len(body), body))
    return b"".join(lines)


def _sendSyslog(port: int, messages: int, senders: list, ready, go) -> list:
    payloads = [_frames(sender, messages) for sender in senders]
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in senders]
    ready.put(("ready", len(sockets)))
    go.wait()
    for connection, payload in zip(sockets, payloads):
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
    for connection in sockets:
        while connection.recv(65536):
            pass
        connection.close()
    return [time.monotonic()]


RSYSLOG_CONFIG = """
global(workDirectory="{work}")
module(load="imtcp")
template(name="line" type="string"
         string="%HOSTNAME% %APP-NAME% %syslogseverity-text% %msg%\\n")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="bench")
ruleset(name="bench") {{
    action(type="omfile" file="{output}" template="line")
}}
"""


def runSyslog(senders: int = 4, messages: int = 100_000, serverArgs: tuple = (),
              timeout: float = 600.0) -> None:
    total = senders * messages
    parameters = {"senders": senders, "messages": messages}
    server = Logsvc("--syslog", "tcp:{port}:interface=127.0.0.1".format(port=freePort()),
                    "--journal-lines", "--sync", "os", *serverArgs, store="sqlite",
                    listeners=("port", "journal", "http"))
    syslogPort = int(server._server.extra[1].split(":")[1])
    with server:
        server.start()
        _waitUntil(lambda: accepts(syslogPort), 30, "the syslog port")
        http = server.ports["http"]
        before = server.cpu()
        started, generatorCPU = _drive(syslogPort, senders, messages, timeout)
        if "--no-journal-lines" in serverArgs:
            _waitUntil(lambda: status(http)["syslog"]["messages"] >= total, timeout,
                       "logsvc to receive every message")
        else:
            # The journal holds each sender's ready event and every message.
            _waitUntil(lambda: status(http)["head"] >= total + senders, timeout,
                       "logsvc to journal every message")
        seconds = time.monotonic() - started
        figures = {"seconds": round(seconds, 3), "messages_per_s": round(total / seconds)}
        figures.update(server.figures(since=before))
        report("syslog", "logsvc", {**parameters, "server_args": list(serverArgs)}, figures)

    rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    if not os.access(rsyslogd, os.X_OK):
        raise BenchError("rsyslogd is not installed (apt-get install rsyslog)")
    with tempfile.TemporaryDirectory(prefix="bench-rsyslog-") as work:
        port, output = freePort(), os.path.join(work, "messages.log")
        config = os.path.join(work, "rsyslog.conf")
        with open(config, "w") as f:
            f.write(RSYSLOG_CONFIG.format(work=work, port=port, output=output))
        process = subprocess.Popen([rsyslogd, "-n", "-f", config, "-i",
                                    os.path.join(work, "pid")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _waitUntil(lambda: accepts(port), 30, "rsyslogd's imtcp port")
            before = cpuSeconds(process.pid)
            counter = _LineCounter(output)
            started, generatorCPU = _drive(port, senders, messages, timeout)
            _waitUntil(lambda: counter.count() >= total, timeout,
                       "rsyslogd to write every message")
            seconds = time.monotonic() - started
            report("syslog", "rsyslogd", parameters, {
                "seconds": round(seconds, 3), "messages_per_s": round(total / seconds),
                "server_cpu_s": round(cpuSeconds(process.pid) - before, 2)})
        finally:
            process.terminate()
            process.wait(30)


def _drive(port: int, senders: int, messages: int, timeout: float) -> tuple:
    work = lambda parts, ready, go: _sendSyslog(port, messages, parts, ready, go)  # noqa: E731
    with Generators(work, list(range(senders)), max(1, senders // 2)) as generators:
        generators.ready(timeout=60)
        started = generators.go()
        _, generatorCPU = generators.results(timeout)
    return started, generatorCPU


class _LineCounter:
    """Newlines in a growing file, reading only what was added since the last look."""

    def __init__(self, path: str):
        self._path = path
        self._offset = 0
        self._lines = 0

    def count(self) -> int:
        try:
            with open(self._path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        self._offset += len(data)
        self._lines += data.count(b"\n")
        return self._lines
