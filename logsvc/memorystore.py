"""The journal store that keeps everything in this process's memory."""

import uuid
from itertools import repeat

from twisted.internet.defer import fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from .errors import EntryError, Trimmed
from .interfaces import IJournalStore
from .store import TIME_STEP, Followers, RecentWrites, entryHash


@implementer(IJournalStore)
class MemoryStore:
    """
    Everything in this process's memory: for tests and throwaway servers.  Identical
    entries share one blob, counted by references, so retention frees a blob with its
    last index.
    """

    def __init__(self, reactor: IReactorTime):
        self._reactor = reactor
        self._blobs: dict[bytes, bytes] = {}
        self._references: dict[bytes, int] = {}
        self._hashes: list[bytes] = []      # from index self._first on
        self._first = 1
        self._bytes = 0                     # of the blobs
        self._times: list = []              # (commit time, first index), sparse
        self._recent = RecentWrites()
        self._followers = Followers()
        self._commitObservers: list = []
        self._unannounced: list = []
        self.journalId = str(uuid.uuid4())

    def open(self):
        return succeed(None)

    def close(self):
        self._announce()
        return succeed(None)

    def deduplicationLag(self):
        """Identical entries share one blob as they are appended."""
        return succeed(0)

    def _head(self) -> int:
        return self._first - 1 + len(self._hashes)

    def append(self, entries: list, writeIds: list | None = None):
        indices = []
        now = self._reactor.seconds()
        if not self._times or now - self._times[-1][0] >= TIME_STEP:
            self._times.append((now, self._head() + 1))
        for data, writeId in zip(entries, writeIds or repeat(None)):
            digest = entryHash(data)
            if writeId is not None:
                index = self._recent.get(writeId, digest)
                if index is not None:
                    indices.append(index)
                    continue
            if self._blobs.setdefault(digest, data) is data:
                self._bytes += len(data)
            self._references[digest] = self._references.get(digest, 0) + 1
            self._hashes.append(digest)
            index = self._head()
            if writeId is not None:
                self._recent.add(writeId, digest, index)
            if not self._unannounced:
                self._reactor.callLater(0, self._announce)
            self._unannounced.append(data)
            indices.append(index)
        return succeed(indices)

    def _announce(self) -> None:
        batch, self._unannounced = self._unannounced, []
        if batch:
            for observer in self._commitObservers:
                observer(0.0, len(batch))
            self._followers.deliver(self._head() - len(batch) + 1, batch)

    def head(self):
        return succeed(self._head())

    def first(self):
        return succeed(self._first)

    def read(self, start: int, limit: int):
        start = max(start, 1)
        if start < self._first:
            return fail(Trimmed(self._first, self._head()))
        at = start - self._first
        hashes = self._hashes[at:at + limit]
        return succeed([(start + i, self._blobs.get(h) or EntryError("entry missing"))
                        for i, h in enumerate(hashes)])

    def trim(self, retention, now: float):
        """Deletes exactly down to the lowest index every limit still needs."""
        before = self._first
        cut = self._cut(retention, now)
        for digest in self._hashes[:cut - before]:
            left = self._references[digest] - 1
            if left:
                self._references[digest] = left
            else:
                del self._references[digest]
                self._bytes -= len(self._blobs.pop(digest))
        del self._hashes[:cut - before]
        self._first = cut
        self._times = [t for t in self._times if t[1] >= cut]
        return succeed((before, self._first))

    def _cut(self, retention, now: float) -> int:
        """The lowest index to keep: the lowest any limit needs."""
        head = self._head()
        if not retention or head < self._first:
            return self._first
        cut = head + 1
        if retention.entries is not None:
            cut = min(cut, head - retention.entries + 1)
        if retention.seconds is not None:
            older = [index for time, index in self._times if time <= now - retention.seconds]
            cut = min(cut, older[-1] if older else self._first)
        if retention.bytes is not None:
            left, references = self._bytes, dict[bytes, int]()
            for at, digest in enumerate(self._hashes):
                if self._references[digest] - references.get(digest, 0) == 1:
                    size = len(self._blobs[digest])
                    if left - size < retention.bytes:
                        cut = min(cut, self._first + at)
                        break
                    left -= size
                references[digest] = references.get(digest, 0) + 1
        return max(cut, self._first)

    def follow(self, callback):
        return self._followers.add(callback)

    def check(self):
        return succeed(None)

    def addCommitObserver(self, observer) -> None:
        self._commitObservers.append(observer)
