"""
SIGTERM while 8 journal writers and several line clients are busy: the real ``twistd -n
logatron`` exits 0 within a bounded time, and after a restart the journal holds every
acknowledged write and every LOG line the server had received.

What the server had received is made exact: some line clients send their lines, shut
their sending side and wait until the server closes the connection, which it does only
after handling every byte before the EOF; those lines were received before SIGTERM.
Other line clients are still streaming when the signal arrives: what the journal holds
of each of them must be a gapless prefix of what it sent.
"""

import signal
import socket
import threading
import time

from tests.test_journal_e2e import head, readAll, streamWrites

SHUTDOWN_SECONDS = 10
FINISHED_CLIENTS = 4
LINES_EACH = 5_000
STREAMING_CLIENTS = 4


def sendAndWaitUntilHandled(port: int, name: str, count: int) -> None:
    """Send C{count} LOG lines, half-close, and wait for the server to close."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(f"IAM {name}\n".encode()
                       + "".join(f"LOG {n}\n" for n in range(count)).encode())
        client.shutdown(socket.SHUT_WR)
        assert client.recv(1) == b"", "the server answered a valid client"


def streamLines(port: int, name: str, sent: list, stop: threading.Event) -> None:
    """
    Send numbered LOG lines, paced so the journal writers get their share of the
    server, until the server goes away; C{sent} counts them.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(f"IAM {name}\n".encode())
            while not stop.is_set():
                client.sendall("".join(f"LOG {n}\n"
                                       for n in range(sent[0], sent[0] + 100)).encode())
                sent[0] += 100
                time.sleep(0.02)
    except OSError:
        return


def test_sigtermWhileBusyKeepsEverythingReceived(twistd):
    server = twistd(listeners=("port", "journal"))
    linePort, journalPort = server.ports["port"], server.ports["journal"]
    stop = threading.Event()
    acknowledged: dict = {}
    writers = [threading.Thread(target=streamWrites, args=(journalPort, w, acknowledged, stop))
               for w in range(8)]
    streamed = {f"streaming-{k}": [0] for k in range(STREAMING_CLIENTS)}
    streamers = [threading.Thread(target=streamLines, args=(linePort, name, sent, stop))
                 for name, sent in streamed.items()]
    try:
        for thread in writers + streamers:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 5000 or min(sent[0] for sent in streamed.values()) < 1000:
            assert time.monotonic() < deadline, "the load never got going"
            time.sleep(0.01)
        finishers = [threading.Thread(target=sendAndWaitUntilHandled,
                                      args=(linePort, f"finished-{k}", LINES_EACH))
                     for k in range(FINISHED_CLIENTS)]
        for thread in finishers:
            thread.start()
        for thread in finishers:
            thread.join(60)
            assert not thread.is_alive()
        # At once, so the last of their events may still wait to be committed.
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(SHUTDOWN_SECONDS + 20)
        took = time.monotonic() - signalled
    finally:
        stop.set()
        if server.process.poll() is None:
            server.kill()
        for thread in writers + streamers:
            thread.join(30)
    server.stop()
    print(f"exit {code} {took:.2f} s after SIGTERM; {len(acknowledged)} writes acknowledged, "
          f"{sum(sent[0] for sent in streamed.values())} lines sent by streaming clients")
    assert code == 0, server.output()[-2000:]
    assert took < SHUTDOWN_SECONDS

    server.start()
    total = head(server.ports["journal"])
    found = readAll(server.ports["journal"], total)
    assert [m["index"] for m in found] == list(range(1, total + 1))
    stored = {m["index"]: m["entry"] for m in found}
    assert all(stored.get(index) == entry for index, entry in acknowledged.items())

    events: dict = {}
    for entry in stored.values():
        if "client" in entry:
            events.setdefault(entry["client"], []).append(entry)
    for k in range(FINISHED_CLIENTS):
        kinds = [e["event"] for e in events[f"finished-{k}"]]
        assert kinds == ["ready"] + ["log"] * LINES_EACH + ["close"]
        assert [e["message"] for e in events[f"finished-{k}"][1:-1]] == [
            str(n) for n in range(LINES_EACH)]
    for name, sent in streamed.items():
        messages = [e["message"] for e in events[name] if e["event"] == "log"]
        assert messages == [str(n) for n in range(len(messages))], name
        assert 1000 <= len(messages) <= sent[0]
