"""
One live feed of line-service events and journal entries, shared by PB and WebSocket.

Line events are not durable: while the consumer is paused they wait in a bounded queue,
and the overflow is counted and reported.  Journal entries are never queued or dropped:
a L{JournalReader} reads back from the store what the consumer was not ready for.
"""

import json
from collections import deque
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Protocol

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import EntryError, Trimmed
from .interfaces import IClientRegistry, IEventObserver, IJournalStore
from .options import positive
from .reader import JournalReader

LINE_EVENTS = ("ready", "log", "set", "close")
EVENT_KINDS = LINE_EVENTS + ("entry",)

QUEUE_LIMIT = 1000
MISSED_LIMIT = 10_000
PAGE_SIZE = 100

# Stands in the queue where the journal is to be read back from the store.
_CATCH_UP = object()


class Shared(Protocol):
    """What a subscription uses of the service: its registry, store and clock."""

    registry: IClientRegistry
    store: IJournalStore
    clock: IReactorTime


def eventKinds(events) -> frozenset:
    """Validate an event filter (None means every kind); raise ValueError naming the bad kind."""
    if events is None:
        return frozenset(EVENT_KINDS)
    if isinstance(events, str):
        events = [events]
    kinds = frozenset(events)
    unknown = sorted(k for k in kinds if k not in EVENT_KINDS)
    if unknown:
        raise ValueError(f"unknown event kind {unknown[0]!r}: use {', '.join(EVENT_KINDS)}")
    return kinds


@implementer(IEventObserver, IPushProducer)
class Subscription:
    """
    Calls C{deliver(message)} with plain dicts, in order, while not paused:

      - C{{"type": "event", "event": kind, "client": name, "time": t, ...fields}}
      - C{{"type": "entry", "index": i, "entry": {...}}} (or C{"error"} instead of
        C{"entry"} for an entry that cannot be read back)
      - C{{"type": "dropped", "dropped": n}} where C{n} line events were lost
      - C{{"type": "trimmed", "first": F, "head": H}} before the entries from C{F} on,
        when retention deleted the ones this subscription was to replay next

    With C{fromIndex}, the journal is replayed from that index (in pages) before any
    live message.  C{clients} is a glob on the client name; journal entries pass it
    only when their C{"client"} field matches.  After C{missedLimit} line events are
    dropped with no delivery in between, the subscription ends itself and calls
    C{onEnd(reason)}; C{cancel()} ends it without calling C{onEnd}.  Nothing is
    delivered from within the constructor: a replay starts on the next reactor turn.
    """

    log = Logger()

    def __init__(self, service: Shared, deliver: Callable[[dict], None], events=None,
                 clients: str | None = None, fromIndex: int | None = None,
                 queueLimit: int = QUEUE_LIMIT, missedLimit: int = MISSED_LIMIT,
                 pageSize: int = PAGE_SIZE, onEnd: Callable[[str], None] | None = None):
        self._kinds = eventKinds(events)
        if fromIndex is not None and positive(fromIndex) is None:
            raise ValueError(f"from must be a positive integer, not {fromIndex!r}")
        self._service = service
        self._deliver = deliver
        self._clients = clients
        self._queueLimit = queueLimit
        self._missedLimit = missedLimit
        self._onEnd = onEnd
        self._queue: deque = deque()
        self._dropped = 0        # dropped since the last notice was queued
        self._missed = 0         # dropped since the last delivery
        self._paused = False
        self._pumping = False
        self._catchingUp = False  # the reader goes on; the queue waits until it is live
        self._behind = False      # a _CATCH_UP is queued, or the reader catching up
        self.ended = False
        self._reader: JournalReader | None = None
        self._observing = bool(self._kinds & set(LINE_EVENTS))
        if "entry" in self._kinds:
            self._reader = JournalReader(service.store, self, fromIndex, pageSize=pageSize,
                                         toHead=False)
            if fromIndex is not None:
                self._reader.pauseProducing()
                self.waiting()
            self._reader.start()
        if self._observing:
            service.registry.addObserver(self)
        if self._behind:
            # Not from here: the consumer gets to attach this producer first.
            service.clock.callLater(0, self._pump)

    # IEventObserver

    def logged(self, name: str, time: float, messages: list, truncated: bool,
               fields: list | None = None) -> None:
        extra = {"truncated": True} if truncated else {}
        for n, message in enumerate(messages):
            self.event("log", name, time,
                       {"message": message, **(extra if fields is None else fields[n])})

    def event(self, kind: str, name: str, time: float, fields: dict) -> None:
        if self.ended or kind not in self._kinds:
            return
        if self._clients is not None and not fnmatchcase(name, self._clients):
            return
        self._enqueue({"type": "event", "event": kind, "client": name, "time": time, **fields})

    # IPushProducer

    def pauseProducing(self) -> None:
        self._paused = True
        if self._reader is not None:
            self._reader.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Stop observing and following; nothing is delivered afterwards."""
        if self.ended:
            return
        self.ended = True
        self._queue.clear()
        if self._observing:
            self._service.registry.removeObserver(self)
        if self._reader is not None:
            self._reader.stop()

    def _end(self, reason: str) -> None:
        self.cancel()
        self.log.info("subscription ended: {reason}", reason=reason)
        if self._onEnd is not None:
            self._onEnd(reason)

    # Line events: a bounded queue.

    def _enqueue(self, message: dict) -> None:
        if len(self._queue) >= self._queueLimit:
            self._dropped += 1
            self._missed += 1
            if self._missed > self._missedLimit:
                self._end(f"subscriber too slow: {self._missed} messages dropped")
            return
        if self._dropped:
            self._queue.append(self._droppedNotice())
        self._queue.append(message)
        self._pump()

    def _droppedNotice(self) -> dict:
        notice = {"type": "dropped", "dropped": self._dropped}
        self._dropped = 0
        return notice

    # Journal entries: the reader's sink (a ReadSink).

    def entries(self, rows: list, currentAt: int | None, head: int | None) -> int:
        for sent, (index, data) in enumerate(rows):
            if self._paused or self.ended:
                return sent
            self._sendEntry(index, data)
        return len(rows)

    def caughtUp(self) -> None:
        """Nothing to tell: subscriptions have no C{current}."""

    def live(self) -> None:
        """Caught up: the line events queued meanwhile may go."""
        self._catchingUp = self._behind = False
        self._pump()

    def notLive(self) -> None:
        """The reader reads back what it does not send live."""

    def waiting(self) -> None:
        """Entries the consumer was not ready for: they come where the queue is now."""
        if not self._behind:
            self._behind = True
            self._queue.append(_CATCH_UP)

    def trimmed(self, trimmed: Trimmed) -> None:
        self._send({"type": "trimmed", "first": trimmed.first, "head": trimmed.head})

    def finished(self, reader: JournalReader, ahead: list, failure: Failure | None) -> None:
        """A read without a count ends only when the store fails."""
        error = failure.getErrorMessage() if failure is not None else "read ended"
        self._end(f"cannot read the journal: {error}")

    def _sendEntry(self, index: int, data) -> None:
        if isinstance(data, EntryError):
            message = {"type": "entry", "index": index, "error": data.reason}
        else:
            try:
                entry = json.loads(data)
            except RecursionError:
                self._send({"type": "entry", "index": index,
                            "error": "entry nested too deeply to decode here"})
                return
            if self._clients is not None and not (
                    isinstance(entry, dict) and isinstance(entry.get("client"), str)
                    and fnmatchcase(entry["client"], self._clients)):
                return
            message = {"type": "entry", "index": index, "entry": entry}
        self._send(message)

    # Delivery, in order, as long as the consumer takes it.

    def _pump(self) -> None:
        """Deliver what waits; re-entrant calls (from deliver or a synchronous read) return."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while not (self._paused or self.ended):
                if self._catchingUp:
                    assert self._reader is not None  # only the reader's sink queues a catch-up
                    self._reader.resumeProducing()
                    if self._catchingUp:
                        break     # reading the store: live() pumps again
                elif self._queue:
                    message = self._queue.popleft()
                    if message is _CATCH_UP:
                        self._catchingUp = True
                    else:
                        self._send(message)
                elif self._dropped:
                    self._send(self._droppedNotice())
                elif self._reader is not None and not self._reader.following():
                    self._catchingUp = self._behind = True
                else:
                    break
        finally:
            self._pumping = False

    def _send(self, message: dict) -> None:
        self._missed = 0
        self._deliver(message)
