"""The shared catch-up-then-follow reader, driven directly with a recording sink."""

import time

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from logsvc.errors import StoreError
from logsvc.reader import JournalReader
from logsvc.retention import Retention
from logsvc.memorystore import MemoryStore
from logsvc.store import canonical
from tests.stores import ControlledStore, appendOne


class RecordingSink:
    """Keeps what a reader sends; C{stopAfter} entries, it pauses the reader."""

    def __init__(self):
        self.reader: JournalReader | None = None
        self.calls: list = []
        self.stopAfter: int | None = None

    def sent(self) -> list:
        return [index for call in self.calls if call[0] == "entry" for index in call[1:2]]

    def entries(self, rows, currentAt, head) -> int:
        for count, (index, _) in enumerate(rows):
            if self.stopAfter is not None and len(self.sent()) >= self.stopAfter:
                self.reader.pauseProducing()
                return count
            if count == currentAt:
                self.calls.append(("current",))
            self.calls.append(("entry", index))
        if currentAt == len(rows):
            self.calls.append(("current",))
        if head is not None:
            self.calls.append(("head", head))
        return len(rows)

    def caughtUp(self):
        self.calls.append(("current",))

    def live(self):
        self.calls.append(("live",))

    def notLive(self):
        pass

    def waiting(self):
        self.calls.append(("waiting",))

    def trimmed(self, trimmed):
        self.calls.append(("trimmed", trimmed.first, trimmed.head))

    def finished(self, reader, ahead, failure):
        self.calls.append(("finished", [index for index, _ in ahead],
                           None if failure is None else failure.getErrorMessage()))


class JournalReaderTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = ControlledStore(self.clock)
        self.sink = RecordingSink()

    def fill(self, count: int) -> None:
        for n in range(count):
            appendOne(self.store, canonical({"n": n}))
        self.clock.advance(0)

    def reader(self, start, **keywords) -> JournalReader:
        reader = JournalReader(self.store, self.sink, start, **keywords)
        self.sink.reader = reader
        self.addCleanup(reader.stop)
        return reader

    def test_isAPushProducer(self):
        self.assertTrue(verifyObject(IPushProducer, self.reader(1)))

    def test_toHeadTellsCurrentAtTheHeadAsOfTheRead(self):
        self.fill(3)
        self.reader(2).start()
        self.fill(1)
        self.assertEqual(self.sink.calls, [("entry", 2), ("entry", 3), ("current",),
                                           ("live",), ("entry", 4)])

    def test_withoutHeadPagesUntilOneComesBackShort(self):
        """Subscriptions do not read the head: a full page means there may be more."""
        self.fill(5)
        self.reader(1, pageSize=2, toHead=False).start()
        self.assertEqual(self.sink.sent(), [1, 2, 3, 4, 5])
        self.assertEqual(self.store.reads, [(1, 2), (3, 2), (5, 2)])
        self.assertNotIn(("current",), self.sink.calls)

    def test_fromNoneFollowsLiveOnly(self):
        self.fill(2)
        self.reader(None, toHead=False).start()
        self.fill(2)
        self.assertEqual(self.sink.sent(), [3, 4])
        self.assertEqual(self.store.reads, [])

    def test_countEndsWithHeadAndKeepsWhatItReadAhead(self):
        self.fill(10)
        self.reader(1, count=3).start()
        self.assertEqual(self.sink.calls, [("entry", 1), ("entry", 2), ("entry", 3),
                                           ("head", 10), ("finished", list(range(4, 11)),
                                                          None)])

    def test_commitsWhilePausedAreReadBackOnResume(self):
        self.fill(1)
        reader = self.reader(1)
        reader.start()
        reader.pauseProducing()
        self.fill(2)
        self.assertIn(("waiting",), self.sink.calls)
        self.assertEqual(self.sink.sent(), [1])
        reader.resumeProducing()
        self.assertEqual(self.sink.sent(), [1, 2, 3])
        self.assertTrue(reader.following())

    def test_aSinkThatPausesMidwayGetsTheRestAfterResuming(self):
        self.fill(5)
        self.sink.stopAfter = 2
        reader = self.reader(1, toHead=False)
        reader.start()
        self.assertEqual((self.sink.sent(), reader.next), ([1, 2], 3))
        self.sink.stopAfter = None
        reader.resumeProducing()
        self.assertEqual(self.sink.sent(), [1, 2, 3, 4, 5])

    def test_trimmedGoesOnFromFirst(self):
        """Without the head known, the notice's head says what is left to read."""
        self.store = MemoryStore(self.clock)
        self.fill(20)
        self.successResultOf(self.store.trim(Retention(entries=5), time.time()))
        for toHead in (True, False):
            self.sink.calls = []
            self.reader(2, toHead=toHead).start()
            self.assertEqual(self.sink.calls[0], ("trimmed", 16, 20))
            self.assertEqual(self.sink.sent(), [16, 17, 18, 19, 20])

    def test_aStoreFailureFinishesTheRead(self):
        self.fill(2)
        self.store.readError = StoreError("disk on fire")
        reader = self.reader(1)
        reader.start()
        self.assertEqual(self.sink.calls, [("finished", [], "disk on fire")])
        self.fill(1)
        self.assertEqual(self.sink.sent(), [])
        self.assertFalse(reader.following())
