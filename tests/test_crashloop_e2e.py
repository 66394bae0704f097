"""
Fifty kill -9 / restart cycles of a real ``twistd -n logatron`` under write load.

Each writer resends, after every restart, the writes it never saw acknowledged, with the
same ids, as a careful client would.  So besides "no acknowledged entry is lost and
indices stay dense", the end state is exact: every write ever sent is in the journal
exactly once, whether it was committed before the kill (the retry gets its original
index back) or not (the retry stores it).
"""

import random
import threading
import time

import pytest

from tests.clients import Client, acknowledgedOnce, denseEntries, head, readAll
from tests.polling import waitFor

CYCLES = 50
WRITERS = 4
LEAST_PER_CYCLE = 100  # acknowledgements each cycle waits for before its kill


class RetryingWriter:
    """One client's writes across restarts: what was acknowledged, and what is pending."""

    def __init__(self, number: int):
        self.number = number
        self.next = 0
        self.pending: dict = {}        # id -> entry, sent or about to be, not acknowledged
        self.acknowledged: dict = {}   # index -> entry
        self.ids: dict = {}            # id -> index, to see a retry change its answer

    def newBatch(self, size: int) -> None:
        for n in range(self.next, self.next + size):
            self.pending[f"{self.number}.{n}"] = {
                "w": self.number, "n": n, "pad": "x" * random.randrange(200)}
        self.next += size

    def run(self, port: int, stop: threading.Event) -> None:
        """
        Resend what is pending, then stream batches of 20 until the server dies.  A reply
        that is not the acknowledgement of a pending write fails the test.
        """
        try:
            client = Client(port)
            while True:
                if not self.pending:
                    if stop.is_set():
                        break
                    self.newBatch(20)
                batch = dict(self.pending)
                client.send(*[{"id": i, "entry": e} for i, e in batch.items()])
                for _ in batch:
                    self.acknowledge(client.receive())
            client.close()
        except OSError:
            return  # killed: whatever is pending is resent after the restart

    def acknowledge(self, reply: dict) -> None:
        assert set(reply) == {"id", "index"}, reply
        writeId, index = reply["id"], reply["index"]
        assert self.ids.setdefault(writeId, index) == index, "a retry got another index"
        self.acknowledged[index] = self.pending.pop(writeId)


def acknowledged(writers: list) -> int:
    return sum(len(writer.acknowledged) for writer in writers)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fiftyKillNineCycles(twistd, journalStore):
    server = twistd(store=journalStore, listeners=("port", "journal"), start=False)
    writers = [RetryingWriter(number) for number in range(WRITERS)]
    started = time.monotonic()
    for cycle in range(CYCLES):
        server.start()
        stop = threading.Event()
        threads = [threading.Thread(target=w.run, args=(server.ports["journal"], stop))
                   for w in writers]
        before = acknowledged(writers)
        for thread in threads:
            thread.start()
        waitFor(lambda: acknowledged(writers) >= before + LEAST_PER_CYCLE,
                f"{LEAST_PER_CYCLE} acknowledgements in cycle {cycle}")
        time.sleep(random.uniform(0, 0.3))
        server.kill()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()

    server.start()
    stop = threading.Event()
    stop.set()  # resend what is pending, then finish
    for writer in writers:
        writer.run(server.ports["journal"], stop)
        assert not writer.pending
    total = head(server.ports["journal"])
    found = readAll(server.ports["journal"], total)
    assert server.stop() == 0
    everything = acknowledgedOnce([writer.acknowledged for writer in writers])
    print(f"{CYCLES} kill -9 cycles in {time.monotonic() - started:.0f} s: "
          f"{len(everything)} writes, {total} entries")
    stored = denseEntries(found, total)
    assert stored == everything
    assert sorted((e["w"], e["n"]) for e in stored.values()) == [
        (w.number, n) for w in writers for n in range(w.next)]
