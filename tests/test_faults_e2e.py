"""
A disk that really fills up under a real ``twistd -n logatron``: writes are refused with
C{{"id","error"}}, C{/health} turns 503, the process stays up, and once space is freed
writes succeed again with every acknowledged entry readable at dense indices.

The store lives on a 32 MiB tmpfs the test mounts, then fills with a ballast file: the
fault is SQLite's own C{SQLITE_FULL} from C{ENOSPC}, the same as on a full production
disk, and it works as root, where a read-only file would not stop a write.
"""

import os
import re


from tests.clients import (Client, acknowledgedOnce, acknowledgedSoFar, denseEntries, getJSON,
                           head, health, readAll, refusedSoFar, retryRefused, startWriters,
                           stopWriters, waitForHealth)
from tests.polling import waitFor



def fill(disk) -> str:
    """Write a ballast file until the filesystem refuses; returns its path."""
    ballast = os.path.join(disk, "ballast")
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as e:
            assert e.errno == 28, e  # ENOSPC
    return ballast


def test_diskFullRefusesWritesThenRecovers(tinyDisk, twistd):
    server = twistd(store=f"sqlite:{tinyDisk / 'journal.db'}",
                    listeners=("port", "journal", "http"))
    journal, http = server.ports["journal"], server.ports["http"]
    assert health(http)[0] == 200
    writers = startWriters(journal)

    ballast = fill(tinyDisk)
    waitFor(lambda: refusedSoFar(writers) >= 40, "writes refused on a full disk")
    body = waitForHealth(http, 503)
    assert "database or disk is full" in body["store"], body
    assert body["error"].startswith("store: "), body
    assert server.process.poll() is None

    refusals = {error for writer in writers for _, _, error in writer.refused}
    assert all("database or disk is full" in error for error in refusals), refusals

    # The line service is not held up by journal lines it cannot store: the line is
    # counted and kept in the client's record, and the failed journal append is logged.
    lines = Client(server.ports["port"])
    # A line long enough that its journal entry needs new pages: a small commit may
    # still fit in a page SQLite has free on the full disk.
    message = "still here " + "x" * 60_000
    lines.send(b"IAM during-fault", b"LOG " + message.encode())
    lines.socket.shutdown(1)
    assert lines.closedByServer()
    assert getJSON(http, "/status")["lines"] == 1
    record = getJSON(http, "/clients/during-fault")
    assert ([m for _, m in record["log"]], record["online"]) == ([message], False)
    waitFor(lambda: re.search(r"journal lines: \d+ appends failed so far; last: .*"
                              r"database or disk is full", server.output()),
            "the failed journal lines in the log")

    ackedDuringFault = acknowledgedSoFar(writers)
    os.unlink(ballast)
    body = waitForHealth(http, 200)
    assert body["store"] == "ok"
    waitFor(lambda: acknowledgedSoFar(writers) >= ackedDuringFault + 200,
            "writes after space was freed")
    stopWriters(writers)

    # Refused writes are safe to retry with the same id, as the spec promises.
    retrier = Client(journal)
    retried = retryRefused(retrier, writers)
    retrier.close()
    assert server.stop() == 0

    server.start()
    total = head(server.ports["journal"])
    found = readAll(server.ports["journal"], total)
    acknowledged = acknowledgedOnce([retried, *(writer.acknowledged for writer in writers)])
    print(f"{len(acknowledged) - len(retried)} writes acknowledged, {len(retried)} refused "
          f"on the full disk then retried; {total} entries with journal lines")
    stored = denseEntries(found, total)
    assert all(stored[index] == entry for index, entry in acknowledged.items())
    written = [(e["w"], e["n"]) for e in stored.values() if "w" in e]
    assert len(written) == len(set(written)) == len(acknowledged)
