"""
What one journal connection receives, in what order: each write's ack before its entry
reaches the same connection's read, and the acks of accepted writes before the error
that closes a connection.  Driven in memory; test_journal_order_e2e does it over TCP.
"""

from twisted.internet.defer import Deferred

from logsvc.errors import StoreError
from tests.journalclients import Connection, FillingTransport, JournalTestCase, entries


class AckBeforeEntryTests(JournalTestCase):
    def test_pushReadThenTwoWritesInOneCommit(self):
        """The memory store, like SQLite's group commit, acks both before either entry."""
        connection = self.connect()
        connection.send({"from": 1})
        connection.send({"id": "first", "entry": {"a": 1}}, {"id": "second", "entry": {"b": 2}})
        self.clock.advance(0)
        self.assertEqual(connection.received(), [
            {"current": True},
            {"id": "first", "index": 1}, {"index": 1, "entry": {"a": 1}},
            {"id": "second", "index": 2}, {"index": 2, "entry": {"b": 2}}])

    def test_tcpLogServersWritesBeforeAndAfterRead(self):
        """
        tcp-log-server's own scenario, in one chunk: first write, pull read, second.
        The memory store commits the first write before the read asks for the head.
        """
        connection = self.connect()
        connection.send({"entry": {"a": 1}, "id": "first"}, {"from": 1, "read": 2},
                        {"entry": {"b": 2}, "id": "second"})
        self.clock.advance(0)
        self.assertEqual(connection.received(), [
            {"id": "first", "index": 1}, {"index": 1, "entry": {"a": 1}}, {"current": True},
            {"id": "second", "index": 2}, {"index": 2, "entry": {"b": 2}}, {"head": 2}])

    def test_otherConnectionsSeeIndexOrderAndNoAcks(self):
        writer, other = self.connect(), self.connect()
        writer.send({"from": 1})
        other.send({"from": 1})
        writer.send({"id": "x", "entry": {"n": 1}}, {"id": "y", "entry": {"n": 2}},
                    {"id": "z", "entry": {"n": 3}})
        self.clock.advance(0)
        self.assertEqual(other.received(), [{"current": True}] + [
            {"index": n, "entry": {"n": n}} for n in (1, 2, 3)])
        self.assertEqual([m.get("id", m.get("index")) for m in writer.received()[1:]],
                         ["x", 1, "y", 2, "z", 3])

    def test_othersEntriesInBetween(self):
        """Another connection's entry in the same commit goes out in its index order."""
        reader, other = self.connect(), self.connect()
        reader.send({"from": 1})
        reader.send({"id": "mine", "entry": {"n": 1}})
        other.send({"id": "theirs", "entry": {"n": 2}})
        reader.send({"id": "mine too", "entry": {"n": 3}})
        self.clock.advance(0)
        self.assertEqual(reader.received()[1:], [
            {"id": "mine", "index": 1}, {"index": 1, "entry": {"n": 1}},
            {"index": 2, "entry": {"n": 2}},
            {"id": "mine too", "index": 3}, {"index": 3, "entry": {"n": 3}}])

    def test_retryOfAnEntryAlreadySentIsAckedAtOnce(self):
        connection = self.connect()
        connection.send({"from": 1})
        connection.send({"id": "a", "entry": {"n": 1}})
        self.clock.advance(0)
        connection.received()
        connection.send({"id": "a", "entry": {"n": 1}})
        self.assertEqual(connection.received(), [{"id": "a", "index": 1}])

    def test_readThatEndsFirstStillGetsEveryAck(self):
        """A pull read of one entry: the second write's ack follows its head."""
        connection = self.connect()
        connection.send({"from": 1, "read": 1})
        connection.send({"id": "a", "entry": {"n": 1}}, {"id": "b", "entry": {"n": 2}})
        self.clock.advance(0)
        self.assertEqual(connection.received(), [
            {"current": True}, {"id": "a", "index": 1}, {"index": 1, "entry": {"n": 1}},
            {"head": 2}, {"id": "b", "index": 2}])

    def test_pausedReadSendsHeldAcksFirst(self):
        """A full socket stops the live read: acks do not wait behind its entries."""
        transport = FillingTransport(limit=10 ** 6)
        connection = Connection(self.factory, transport)
        connection.send({"from": 1})
        connection.send({"id": "a", "entry": {"n": 1}}, {"id": "b", "entry": {"n": 2}})
        connection.protocol.pauseProducing()
        self.assertEqual(connection.received(), [
            {"current": True}, {"id": "a", "index": 1}, {"id": "b", "index": 2}])
        self.clock.advance(0)
        self.assertEqual(connection.received(), [])
        connection.protocol.resumeProducing()
        self.assertEqual(entries(connection.received()), [1, 2])

    def test_refusalAfterAWriteComesAfterItsAck(self):
        """A reply to a later message never overtakes a held ack."""
        connection = self.connect()
        connection.send({"from": 1})
        connection.send({"id": "a", "entry": {"n": 1}})
        connection.send({"from": 1}, {"nonsense": True})
        self.clock.advance(0)
        self.assertEqual(connection.received(), [
            {"current": True}, {"id": "a", "index": 1}, {"error": "already reading"},
            {"error": "invalid message"}, {"index": 1, "entry": {"n": 1}}])

    def test_connectionLostWithHeldAcks(self):
        connection = self.connect()
        connection.send({"from": 1})
        connection.send({"id": "a", "entry": {"n": 1}})
        connection.protocol.connectionLost(None)
        self.clock.advance(0)
        self.assertEqual(self.store._followers._callbacks, ())


class HeldAcksAfterReplayTests(JournalTestCase):
    def test_writeDuringReplayIsAckedBeforeItsEntry(self):
        """While a read pages through old entries, acks go out at once: entries later."""
        self.fill(250)
        self.store.holdReads = True
        connection = self.connect()
        connection.send({"from": 1})
        connection.send({"id": "new", "entry": {"n": "new"}})
        self.assertEqual(connection.received(), [{"id": "new", "index": 251}])
        while self.store.held:
            self.store.release()
            self.clock.advance(0)
        messages = connection.received()
        self.assertEqual(entries(messages), list(range(1, 252)))


class ErrorAfterWritesTests(JournalTestCase):
    maxEntry = 1000

    def heldStore(self) -> list:
        """Appends wait until the test answers them, as a commit on its way to disk."""
        waiting: list = []
        append = self.store.append

        def held(entries, writeIds=None):
            d = Deferred()
            waiting.append((d, append(entries, writeIds)))
            return d
        self.store.append = held
        return waiting

    def answer(self, waiting: list) -> None:
        for d, result in waiting:
            result.chainDeferred(d)
        waiting.clear()

    def test_writeThenInvalidJSONInOneChunk(self):
        waiting = self.heldStore()
        connection = self.connect()
        connection.send({"id": "a", "entry": {"n": 1}}, b"{not json",
                        {"id": "after", "entry": {"n": 2}})
        self.assertEqual(connection.received(), [])
        self.assertFalse(connection.closed)
        self.assertEqual(connection.transport.producerState, "paused")
        self.answer(waiting)
        self.assertEqual(connection.received(), [{"id": "a", "index": 1},
                                                 {"error": "invalid JSON"}])
        self.assertTrue(connection.closed)
        self.assertEqual(self.store.head().result, 1)

    def test_writesThenOverLongMessage(self):
        waiting = self.heldStore()
        connection = self.connect()
        connection.send({"id": "a", "entry": {"n": 1}}, {"id": "b", "entry": {"n": 2}},
                        b'{"id":"c","entry":{"x":"' + b"x" * 2000 + b'"}}')
        self.answer(waiting)
        self.assertEqual(connection.received(), [
            {"id": "a", "index": 1}, {"id": "b", "index": 2}, {"error": "message too long"}])
        self.assertTrue(connection.closed)

    def test_writesInEarlierChunksAreAnsweredToo(self):
        waiting = self.heldStore()
        connection = self.connect()
        connection.send({"id": "a", "entry": {"n": 1}})
        connection.send(b"[1,")   # a partial message of its own
        connection.send(b"nope\n")
        self.answer(waiting)
        self.assertEqual(connection.received(), [{"id": "a", "index": 1},
                                                 {"error": "invalid JSON"}])

    def test_failedWriteThenInvalidJSON(self):
        self.store.appendError = StoreError("disk full")
        connection = self.connect()
        connection.send({"id": "a", "entry": {"n": 1}}, b"}")
        self.assertEqual(connection.received(), [{"id": "a", "error": "disk full"},
                                                 {"error": "invalid JSON"}])
        self.assertTrue(connection.closed)

    def test_readInProgressEndsAtTheError(self):
        """The read stops sending at once; acks of the writes before, then the error."""
        waiting = self.heldStore()
        reader = self.connect()
        reader.send({"from": 1})
        reader.send({"id": "a", "entry": {"n": 1}}, b"oops")
        self.assertEqual(reader.received(), [{"current": True}])
        self.answer(waiting)
        self.clock.advance(0)
        self.assertEqual(reader.received(), [{"id": "a", "index": 1},
                                             {"error": "invalid JSON"}])
        self.assertEqual(self.factory.readers, set())
