"""
/health on a disk that journal writes themselves filled, under a real ``twistd``: 503 on
every poll while writes are refused (its own probe may still commit there: it needs no
new page), 200 again once a write succeeds.
"""

import os

from tests.server import Server
from tests.test_faults_e2e import health, tinyDisk, waitFor  # noqa: F401  (a fixture)
from tests.test_journal_e2e import Client

ENTRY = {"pad": "y" * 3000}
POLLS = 20
BATCH = 1


def writeBatch(client: Client, name: str) -> list:
    """BATCH writes in one send: the replies."""
    ids = [f"{name}.{k}" for k in range(BATCH)]
    client.send(*[{"id": i, "entry": {**ENTRY, "id": i}} for i in ids])
    replies = client.receiveMany(BATCH)
    for reply in replies:
        assert reply.get("id") in ids and set(reply) in ({"id", "index"}, {"id", "error"}), reply
    return replies


def test_healthStaysUnavailableWhileWritesFail(tmp_path, tinyDisk):  # noqa: F811
    spare = tinyDisk / "spare"
    # Freed later, so that writes can succeed again: enough for the deduplicating
    # indexer to catch up too, which takes space once writes pause.
    spare.write_bytes(b"\0" * (6 << 20))
    server = Server(tmp_path, store=f"sqlite:{tinyDisk / 'journal.db'}",
                    listeners=("port", "journal", "http")).start()
    try:
        http = server.ports["http"]
        assert health(http)[0] == 200
        client = Client(server.ports["journal"])
        for n in range(20_000):
            replies = writeBatch(client, f"fill-{n}")
            if any("error" in reply for reply in replies):
                break
        else:
            raise AssertionError("a 32 MiB disk took 60 MB of writes")
        assert all("database or disk is full" in reply["error"] for reply in replies
                   if "error" in reply), replies

        # What is left may still take the probe's transaction (one page), not a write.
        answers = []
        for poll in range(POLLS):
            answers.append(health(http))
            replies = writeBatch(client, f"during-{poll}")
            assert all("error" in reply for reply in replies), \
                f"a write succeeded on the full disk: {replies}"
        assert [status for status, _ in answers] == [503] * POLLS, answers
        assert all("database or disk is full" in body["store"] for _, body in answers), answers
        assert server.process.poll() is None

        os.unlink(spare)
        waitFor(lambda: any("index" in reply for reply in writeBatch(client, "after")),
                "a write after space was freed")
        assert health(http) == (200, {"status": "ok", "listeners": {
            "port": "up", "journal": "up", "http": "up"}, "store": "ok"})
        client.close()
    finally:
        server.stop()
    assert "Traceback" not in server.output()
