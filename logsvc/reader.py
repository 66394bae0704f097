"""
The one catch-up-then-follow read of the journal, for the journal port and for PB and
WebSocket subscriptions: pages from the store while behind, live batches once caught up.
"""

from typing import Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import Trimmed
from .interfaces import IFollowing, IJournalStore

FIRST_PAGE = 100
"""Entries in a read's first page, before the size of its entries is known."""

PAGE_ENTRIES = 1000
"""Most entries one store read returns."""

PAGE_BYTES = 1 << 20
"""Pages are sized to about this many bytes once a read has seen its entries' size."""

READ_AHEAD = 100
"""
Entries a read with a count asks the store for even when it wants fewer: the rest wait
on the connection for its next read, so pull reads of 5 do not cost a store query each.
"""


class ReadSink(Protocol):
    """Where a L{JournalReader} sends what it reads; each kind of reader formats it."""

    def entries(self, rows: list, currentAt: int | None, head: int | None) -> int:
        """
        Send C{(index, data)} rows, consecutive from the reader's C{next}.  C{currentAt}:
        the position in C{rows} at which the head as of the read was passed, if it was
        here; C{head}: the last index committed, when these rows end a read with a count.
        Return how many rows were sent: fewer when the sink paused the reader midway
        (the rest are read from the store again).
        """

    def caughtUp(self) -> None:
        """The head as of the read was reached between entries (once per read)."""

    def live(self) -> None:
        """The reader has sent everything committed; later entries come as they commit."""

    def notLive(self) -> None:
        """The entries sent next will not be live ones (paused, paging or stopped)."""

    def waiting(self) -> None:
        """Entries were committed that the reader will read from the store once it goes on."""

    def trimmed(self, trimmed: Trimmed) -> None:
        """The next entries were deleted by retention; the read goes on from C{first}."""

    def finished(self, reader: "JournalReader", ahead: list, failure: Failure | None) -> None:
        """
        The read ended by itself: its count was sent (C{ahead}: rows read beyond it) or
        the store failed (C{failure}).  Not called after L{JournalReader.stop}.
        """


@implementer(IPushProducer)
class JournalReader:
    """
    Reads the journal from C{start} (C{None}: from the first entry committed after
    the start) for a L{ReadSink}, C{count} entries or forever.

    It holds at most one page, and nothing while paused: live batches that arrive
    while it is paused or paging only raise C{seen}, and the entries are read from the
    store again.  C{pageSize} fixes the page size; by default pages are sized to about
    L{PAGE_BYTES}.  With C{toHead}, the head is read first, and the sink told when
    the read passes it; otherwise pages are read until one comes back short.
    """

    def __init__(self, store: IJournalStore, sink: ReadSink, start: int | None,
                 count: int | None = None, ahead: list | None = None, pageSize: int | None = None,
                 toHead: bool = True):
        self._store = store
        self._sink = sink
        self._ahead: list = ahead if ahead and ahead[0][0] == start else []
        self.next = start
        self._remaining = count
        self._toHead = toHead and start is not None
        self._target: int | None = None
        self._seen = 0
        self._current = False
        self._paused = False
        self._fetching = False
        self._advancing = False
        self._live = False
        self._done = False
        self._sized = pageSize is None
        self._pageSize = pageSize or FIRST_PAGE
        self._asked = 0
        self._following: IFollowing | None = None

    def start(self) -> None:
        self._following = self._store.follow(self._committed)
        if self._toHead:
            self._fetching = True
            self._store.head().addCallbacks(self._gotHead, self._failed)
            return
        self._target, self._current = 0, True
        if self.next is None:
            self._live = True
        else:
            self._seen = self.next    # unknown: read until a page comes back short
            self._advance()

    def _gotHead(self, head: int) -> None:
        self._fetching = False
        if self._done:
            return
        self._target = head
        self._seen = max(self._seen, head)
        self._advance()

    def _advance(self) -> None:
        """Read pages while entries we have not sent are committed; then go live."""
        if self._advancing:
            return
        self._advancing = True
        try:
            while not (self._done or self._paused or self._fetching):
                if self.next is None or self.next > self._seen:
                    self._live = True
                    if not self._current:
                        self._current = True
                        self._sink.caughtUp()
                    self._sink.live()
                    if self._live:
                        return
                    continue
                self._notLive()
                rows, self._ahead = self._ahead, []
                if rows and rows[0][0] == self.next:
                    self._deliverKeepingRest(rows)
                    continue
                self._fetching = True
                limit = self._pageSize
                if self._remaining is not None:
                    limit = min(limit, max(self._remaining, READ_AHEAD))
                self._asked = limit
                self._store.read(self.next, limit).addCallbacks(self._gotPage, self._failed)
        finally:
            self._advancing = False

    def _gotPage(self, rows: list) -> None:
        self._fetching = False
        if self._done:
            return
        if rows:
            if self._sized:
                size = sum(len(data) for _, data in rows if data.__class__ is bytes)
                self._pageSize = max(1, min(PAGE_ENTRIES, PAGE_BYTES * len(rows) // (size or 1)))
            # What was read is committed; without the head, a full page may have more.
            last = rows[-1][0] + (not self._toHead and len(rows) >= self._asked)
            if last > self._seen:
                self._seen = last
            self._deliverKeepingRest(rows)
        else:
            # Nothing committed at next after all: wait for the next commit.
            assert self.next is not None  # pages are read from a known index
            self._seen = self.next - 1
        self._advance()

    def _deliverKeepingRest(self, rows: list) -> None:
        """Deliver rows read from the store; what a read with a count does not take is kept."""
        if self._remaining is not None and len(rows) > self._remaining:
            self._ahead = rows[self._remaining:]
        self._deliver(rows)

    def _committed(self, batch: list) -> None:
        last = batch[-1][0]
        if self.next is None:
            self.next = batch[0][0]
        if last > self._seen:
            self._seen = last
        if self._done or last < self.next:
            return
        if not self._live or self._paused:
            self._sink.waiting()
        elif batch[0][0] > self.next:
            # Entries between what we sent and this batch were committed while we were
            # paused or paging: fetch them from the store.
            self._notLive()
            self._advance()
        else:
            self._deliver(batch)

    def _deliver(self, rows: list) -> None:
        """
        Send consecutive rows from C{next} on, at most the count left.  A live batch can
        be a whole group commit: it is sent a page at a time, and what is left when the
        sink pauses is read from the store again after resuming.
        """
        if rows[0][0] < self.next:
            rows = rows[self.next - rows[0][0]:]
        if self._remaining is not None and len(rows) > self._remaining:
            rows = rows[:self._remaining]
        size = self._pageSize
        for start in range(0, len(rows), size):
            self._send(rows[start:start + size] if len(rows) > size else rows)
            if self._paused or self._done:
                return

    def _send(self, rows: list) -> None:
        first = rows[0][0]
        self.next = first + len(rows)
        currentAt = None
        assert self._target is not None  # known before anything is sent
        if not self._current and self.next > self._target:
            # A read whose K-th entry is the head ends with head alone, as
            # tcp-log-server does: the head was not reached before the K entries.
            upToTarget = max(0, self._target - first + 1)
            if self._remaining is None or upToTarget < self._remaining:
                currentAt = upToTarget
            self._current = True
        remaining = self._remaining
        if remaining is not None:
            self._remaining = remaining = remaining - len(rows)
        sent = self._sink.entries(rows, currentAt,
                                  max(self._seen, self.next - 1) if remaining == 0 else None)
        if sent < len(rows):
            self.next = first + sent
            if remaining is not None:
                self._remaining = remaining + len(rows) - sent
        elif remaining == 0:
            self._finish(None)

    def _failed(self, failure: Failure) -> None:
        self._fetching = False
        if self._done:
            return
        if failure.check(Trimmed):
            trimmed = failure.value
            self._sink.trimmed(trimmed)
            self.next = max(self.next, trimmed.first)
            self._seen = max(self._seen, trimmed.head)
            self._advance()
            return
        self._finish(failure)

    def _finish(self, failure: Failure | None) -> None:
        ahead = self._ahead
        self.stop()
        self._sink.finished(self, ahead, failure)

    def following(self) -> bool:
        """Whether the next entries this read sends are live ones, as they commit."""
        return self._live and not (self._paused or self._done)

    def _notLive(self) -> None:
        self._live = False
        self._sink.notLive()

    def stop(self) -> None:
        """End the read: no more pages, no more live entries."""
        self._done = True
        self._sink.notLive()
        self._ahead = []
        if self._following is not None:
            self._following.cancel()
            self._following = None

    def pauseProducing(self) -> None:
        self._paused = True
        self._notLive()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._target is not None:
            self._advance()

    def stopProducing(self) -> None:
        self.stop()
