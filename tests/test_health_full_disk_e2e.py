"""
/health on a disk that journal writes themselves filled, under a real ``twistd``: 503 on
every poll while writes are refused (its own probe may still commit there: it needs no
new page), 200 again once a write succeeds.
"""

import os

from tests.clients import Client, health
from tests.polling import waitFor

ENTRY = {"pad": "y" * 3000}
POLLS = 20


def write(client: Client, writeId: str) -> dict:
    """One write: its ack or its error."""
    client.send({"id": writeId, "entry": {**ENTRY, "id": writeId}})
    reply = client.receive()
    assert reply.get("id") == writeId and set(reply) in ({"id", "index"}, {"id", "error"}), reply
    return reply


def test_healthStaysUnavailableWhileWritesFail(twistd, tinyDisk):
    spare = tinyDisk / "spare"
    # Freed later, so that writes can succeed again: enough for the deduplicating
    # indexer to catch up too, which takes space once writes pause.
    spare.write_bytes(b"\0" * (6 << 20))
    server = twistd(store=f"sqlite:{tinyDisk / 'journal.db'}",
                    listeners=("port", "journal", "http"))
    http = server.ports["http"]
    assert health(http)[0] == 200
    client = Client(server.ports["journal"])
    for n in range(20_000):
        if "error" in (reply := write(client, f"fill-{n}")):
            break
    else:
        raise AssertionError("a 32 MiB disk took 60 MB of writes")
    assert "database or disk is full" in reply["error"], reply

    # What is left may still take the probe's transaction (one page), not a write.
    answers = []
    for poll in range(POLLS):
        answers.append(health(http))
        reply = write(client, f"during-{poll}")
        assert "error" in reply, f"a write succeeded on the full disk: {reply}"
    assert [status for status, _ in answers] == [503] * POLLS, answers
    assert all("database or disk is full" in body["store"] for _, body in answers), answers
    assert server.process.poll() is None

    os.unlink(spare)
    waitFor(lambda: "index" in write(client, "after"), "a write after space was freed")
    status, body = health(http)
    assert (status, {key: body[key] for key in ("status", "listeners", "store")}) == (
        200, {"status": "ok", "listeners": {"port": "up", "journal": "up", "http": "up"},
              "store": "ok"})
    assert body["first"] == 1 and body["head"] >= 1, body
    client.close()
