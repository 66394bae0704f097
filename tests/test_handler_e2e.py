"""
logsvc.handler: the message encoding, and the handler and the twisted.logger observer
against a real ``twistd -n logatron`` that is stopped and restarted under them.
"""

import logging
import socket
import subprocess
import sys
import textwrap
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.handler import LogsvcHandler, decode, encode, observer
from tests.clients import clientInfo
from tests.polling import waitFor
from tests.server import Server, freePort

LISTENERS = ("port", "http")

ROUND_TRIP = settings(max_examples=500, deadline=None)


def messages(server: Server, name: str) -> list:
    info = clientInfo(server, name)
    return [] if info is None else [decode(m) for _, m in info["log"]]


def handlerFor(server: Server, name: str, **options) -> LogsvcHandler:
    handler = LogsvcHandler(name, port=server.ports["port"], **options)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    return handler


def loggerWith(handler: logging.Handler, name: str) -> logging.Logger:
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log


@ROUND_TRIP
@given(st.text())
def test_encodingSurvivesTheLineService(message):
    """What the server stores (one line, trimmed, UTF-8 with replacement) decodes back."""
    line = encode(message).encode("utf-8", "backslashreplace")
    assert b"\n" not in line
    stored = line.decode("utf-8", "replace").strip()
    assert decode(stored) == message


def test_encodingIsPlainForPlainText():
    assert encode("GET /index.html 200") == "GET /index.html 200"
    assert encode(" two\nlines\\ \t") == "\\x20two\\nlines\\\\ \\t"
    assert encode("end \u3000") == "end\\x20\\u3000"


def test_importNeedsOnlyTheStandardLibrary():
    script = textwrap.dedent("""
        import sys
        sys.modules["twisted"] = None
        sys.modules["zope"] = None
        import logsvc.handler
        handler = logsvc.handler.LogsvcHandler("no-twisted", port=1)
        handler.timeout = 0.2
        handler.close()
        print(sorted(m for m in sys.modules if m.startswith(("twisted", "zope"))
                     and sys.modules[m] is not None))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_emitNeverRaisesAndOverflowIsCounted():
    """No server at all: a full queue drops the oldest and counts them; nothing raises."""
    handler = LogsvcHandler("nobody", port=freePort(), queueSize=10, timeout=0.5)
    handler.setFormatter(logging.Formatter("%(message)s %(missing)s"))  # format fails
    log = loggerWith(handler, "test.overflow")
    log.info("broken formatter")  # handleError prints to stderr; emit does not raise
    handler.setFormatter(logging.Formatter("%(message)s"))
    for n in range(25):
        log.info("record %d", n)
    assert handler.dropped == 15
    started = time.monotonic()
    handler.close()
    assert time.monotonic() - started < 5  # close is bounded by its timeout (0.5 s)


def test_recordsArriveInOrderFormattedWithState(twistd):
    server = twistd(listeners=LISTENERS)
    handler = handlerFor(server, "py-app")
    log = loggerWith(handler, "app.orders")
    handler.setState("phase", "warming up")
    for n in range(50):
        log.info("order %d", n)
    try:
        {}["missing"]
    except KeyError:
        log.exception("lookup failed")
    handler.setState("phase", "done")
    handler.close()
    got = waitFor(lambda: len(messages(server, "py-app")) == 51 and messages(server, "py-app"),
                  "51 records from py-app")
    assert got[:50] == [f"INFO app.orders: order {n}" for n in range(50)]
    traceback = got[50]
    assert traceback.startswith("ERROR app.orders: lookup failed\nTraceback (most recent")
    assert traceback.endswith("KeyError: 'missing'")
    assert traceback.count("\n") >= 3
    assert clientInfo(server, "py-app")["state"] == {"phase": "done"}
    # setState shows while connected, too
    again = handlerFor(server, "py-app")
    again.setState("mode", "live")
    waitFor(lambda: clientInfo(server, "py-app")["state"] == {"mode": "live"},
            "py-app's state from the second handler")
    again.close()


def test_serverStoppedAndRestartedUnderTheHandler(twistd):
    """
    The bound: while the server is down, no emit() takes 1 s (a blocking one would take
    the 5 s connect timeout) and a loop pacing 1,000 records at 2 ms finishes within
    2 s of its schedule; queued records arrive after the restart, after the ring's
    records from before it, and drops are reported.
    The line service keeps its port across the restart, as a deployed one does.
    """
    line = f"tcp:{freePort()}:interface=127.0.0.1"
    server = twistd("--buffer-size", "5000", listeners=LISTENERS, endpoints={"port": line})
    handler = handlerFor(server, "restarted", queueSize=300)
    log = loggerWith(handler, "svc")
    try:
        for n in range(10):
            log.warning("before %d", n)
        waitFor(lambda: len(messages(server, "restarted")) == 10, "10 records before the stop")
        before = messages(server, "restarted")
        assert server.stop() == 0

        slowest, started = 0.0, time.monotonic()
        for n in range(1000):
            began = time.monotonic()
            log.warning("during %d", n)
            slowest = max(slowest, time.monotonic() - began)
            time.sleep(max(0.0, started + (n + 1) * 0.002 - time.monotonic()))
        assert slowest < 1.0
        assert time.monotonic() - started < 2.0 + 2.0
        assert handler.dropped == 700

        server.start()
        # The client's ring survives the restart: the records before the stop come first.
        expected = (before + ["[logsvc.handler] 700 earlier records dropped: the queue was full "
                     "while the server could not be reached"]
                    + [f"WARNING svc: during {n}" for n in range(700, 1000)])
        waitFor(lambda: messages(server, "restarted") == expected, "the records after the restart")
        log.warning("after")
        waitFor(lambda: messages(server, "restarted") == expected + ["WARNING svc: after"],
                "the record logged after the restart")
    finally:
        handler.close()


def test_nameInUseIsRetriedUntilFree(twistd):
    server = twistd(listeners=LISTENERS)
    holder = socket.create_connection(("127.0.0.1", server.ports["port"]))
    holder.sendall(b"IAM shared\nLOG from the holder\n")
    waitFor(lambda: messages(server, "shared") == ["from the holder"], "the holder's line")
    handler = handlerFor(server, "shared")
    log = loggerWith(handler, "second")
    log.info("queued while refused")
    time.sleep(1.0)
    assert messages(server, "shared") == ["from the holder"]
    holder.close()
    waitFor(lambda: messages(server, "shared")
            == ["from the holder", "INFO second: queued while refused"],
            "the record queued while the name was in use")
    handler.close()


def test_processThatLogsThenExitsFlushes(twistd):
    server = twistd("--buffer-size", "2000", listeners=LISTENERS)
    script = textwrap.dedent(f"""
        import logging
        from logsvc.handler import LogsvcHandler
        logging.basicConfig(level=logging.INFO, handlers=[
            LogsvcHandler("short-lived", port={server.ports['port']})])
        for n in range(1000):
            logging.info("line %d", n)
    """)
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert time.monotonic() - started < 30
    assert messages(server, "short-lived") == [f"INFO:root:line {n}" for n in range(1000)]


def test_twistedObserverWithAFailure(twistd):
    server = twistd(listeners=LISTENERS)
    script = textwrap.dedent(f"""
        from twisted.logger import Logger, globalLogBeginner
        from logsvc.handler import observer
        watcher = observer("twisted-app", port={server.ports['port']})
        globalLogBeginner.beginLoggingTo([watcher])
        log = Logger(namespace="demo")
        log.info("hello {{who}}", who="world")
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("division went wrong")
        watcher.handler.close()
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    got = messages(server, "twisted-app")
    assert got[0] == "[demo#info] hello world"
    assert got[1].startswith("[demo#critical] division went wrong\nTraceback")
    assert "ZeroDivisionError: division by zero" in got[1]
    assert len(got) == 2


def test_observerInProcess(twistd):
    """The observer also works with one Logger, without touching the global publisher."""
    from twisted.logger import Logger
    server = twistd(listeners=LISTENERS)
    watcher = observer("in-process", port=server.ports["port"])
    log = Logger(namespace="inner", observer=watcher)
    log.warn("careful: {n}", n=3)
    watcher.handler.close()
    assert messages(server, "in-process") == ["[inner#warn] careful: 3"]
