"""In-memory journal connections for the journal tests: a connection, a transport that fills
like TCP's, and a TestCase serving a journal from a store whose reads it controls."""

import json

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from logsvc.journal.protocol import JournalFactory
from logsvc.store import canonical
from tests.stores import ControlledStore, appendOne


class FillingTransport(StringTransport):
    """Pauses its streaming producer once more than C{limit} bytes wait, as TCP's does."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def write(self, data):
        super().write(data)
        if len(self.value()) > self.limit and self.producerState == "producing":
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.clear()
        self.producer.resumeProducing()


class Connection:
    """One in-memory journal connection and what it received."""

    def __init__(self, factory, transport=None):
        self.transport = transport or StringTransport()
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)

    def send(self, *messages) -> None:
        self.protocol.dataReceived(b"".join(
            (m if isinstance(m, bytes) else json.dumps(m).encode()) + b"\n" for m in messages))

    def received(self) -> list:
        """Messages received since the last call."""
        data = self.transport.value()
        self.transport.clear()
        assert data == b"" or data.endswith(b"\n"), data
        return [json.loads(line) for line in data.splitlines()]

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


def entries(messages: list) -> list:
    return [m["index"] for m in messages if "entry" in m]


class JournalTestCase(TestCase):
    maxEntry = 1000

    def setUp(self):
        self.clock = Clock()
        self.store = ControlledStore(self.clock)
        self.factory = JournalFactory(self.store, self.maxEntry, Clock())

    def connect(self, transport=None) -> Connection:
        return Connection(self.factory, transport)

    def fill(self, count: int, start: int = 1) -> None:
        for n in range(start, start + count):
            appendOne(self.store, canonical({"n": n}))
        self.clock.advance(0)
