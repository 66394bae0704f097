"""
A disk that really fills up under a real ``twistd -n logatron``: writes are refused with
C{{"id","error"}}, C{/health} turns 503, the process stays up, and once space is freed
writes succeed again with every acknowledged entry readable at dense indices.

The store lives on a 32 MiB tmpfs the test mounts, then fills with a ballast file: the
fault is SQLite's own C{SQLITE_FULL} from C{ENOSPC}, the same as on a full production
disk, and it works as root, where a read-only file would not stop a write.
"""

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.test_journal_e2e import Client, head, readAll

PAD = "x" * 500


@pytest.fixture
def tinyDisk(tmp_path):
    """A 32 MiB tmpfs mounted for this test only."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot create a small filesystem to fill")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs",
                              str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): "
                    + " ".join(mounted.stderr.split()))
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


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


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def waitFor(condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def waitForHealth(port: int, status: int, timeout: float = 30) -> dict:
    """The body of the first C{/health} answer with C{status}."""
    deadline = time.monotonic() + timeout
    while (answer := health(port))[0] != status:
        assert time.monotonic() < deadline, f"/health still answers {answer}"
        time.sleep(0.05)
    return answer[1]


class Writer(threading.Thread):
    """
    Streams writes of C{{"w": number, "n": n, "pad": ...}}, ten in flight, until told to
    stop; records every acknowledgement and every refusal, and checks each reply's shape.
    Batches are paced so that the writers do not fill the freed space again themselves
    before the test has seen the recovery.
    """

    def __init__(self, port: int, number: int):
        super().__init__()
        self.port = port
        self.number = number
        self.acknowledged: dict = {}   # index -> entry
        self.refused: list = []        # (id, entry, error)
        self.stopping = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        client = Client(self.port)
        n = 0
        try:
            while not self.stopping.is_set():
                batch = {f"{self.number}.{k}": {"w": self.number, "n": k, "pad": PAD}
                         for k in range(n, n + 10)}
                client.send(*[{"id": i, "entry": e} for i, e in batch.items()])
                for _ in batch:
                    reply = client.receive()
                    entry = batch[reply["id"]]
                    if set(reply) == {"id", "index"}:
                        self.acknowledged[reply["index"]] = entry
                    else:
                        assert set(reply) == {"id", "error"}, reply
                        assert isinstance(reply["error"], str) and reply["error"], reply
                        self.refused.append((reply["id"], entry, reply["error"]))
                n += 10
                time.sleep(0.02)
        except BaseException as e:
            self.failure = e
        finally:
            client.close()


def acknowledgedSoFar(writers: list) -> int:
    return sum(len(w.acknowledged) for w in writers)


def refusedSoFar(writers: list) -> int:
    return sum(len(w.refused) for w in writers)


def test_diskFullRefusesWritesThenRecovers(tinyDisk, twistd):
    server = twistd(store=f"sqlite:{tinyDisk / 'journal.db'}",
                    listeners=("port", "journal", "http"))
    journal, http = server.ports["journal"], server.ports["http"]
    assert health(http)[0] == 200
    writers = [Writer(journal, number) for number in range(4)]
    for writer in writers:
        writer.start()
    waitFor(lambda: acknowledgedSoFar(writers) >= 200, "writes before the fault")

    ballast = fill(tinyDisk)
    waitFor(lambda: refusedSoFar(writers) >= 40, "writes refused on a full disk")
    body = waitForHealth(http, 503)
    assert "database or disk is full" in body["store"], body
    assert body["error"].startswith("store: "), body
    assert server.process.poll() is None

    # The line service is not held up by journal lines it cannot store.
    lines = Client(server.ports["port"])
    lines.send(b"IAM during-fault", b"LOG still here")
    lines.socket.shutdown(1)
    assert lines.closedByServer()

    ackedDuringFault = acknowledgedSoFar(writers)
    os.unlink(ballast)
    body = waitForHealth(http, 200)
    assert body["store"] == "ok"
    waitFor(lambda: acknowledgedSoFar(writers) >= ackedDuringFault + 200,
            "writes after space was freed")
    for writer in writers:
        writer.stopping.set()
    for writer in writers:
        writer.join(30)
        assert writer.failure is None, writer.failure

    # Refused writes are safe to retry with the same id, as the spec promises.
    retrier = Client(journal)
    retried = {retrier.write(i, entry): entry
               for writer in writers for i, entry, _ in writer.refused}
    retrier.close()
    assert server.stop() == 0

    server.start()
    total = head(server.ports["journal"])
    found = readAll(server.ports["journal"], total)
    acknowledged = dict(retried)
    for writer in writers:
        assert not acknowledged.keys() & writer.acknowledged.keys(), "an index given twice"
        acknowledged.update(writer.acknowledged)
    print(f"{len(acknowledged) - len(retried)} writes acknowledged, {len(retried)} refused "
          f"on the full disk then retried; {total} entries with journal lines")
    assert [m["index"] for m in found] == list(range(1, total + 1))
    stored = {m["index"]: m["entry"] for m in found}
    assert all(stored[index] == entry for index, entry in acknowledged.items())
    written = [(e["w"], e["n"]) for e in stored.values() if "w" in e]
    assert len(written) == len(set(written)) == len(acknowledged)
