"""
Journal storage shared by every implementation: canonical JSON, content hashes, the
window of recent identified writes that makes retries safe, and the in-memory store.
"""

import json
import uuid
from hashlib import sha256
from itertools import repeat

from twisted.internet.defer import fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from .errors import EntryError, StoreError, Trimmed
from .interfaces import IJournalStore

RECENT_WRITES = 100_000

TIME_STEP = 1.0
"""Seconds between entries of the sparse record of (commit time, first index)."""

_log = Logger()


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False, allow_nan=False)


def canonical(entry) -> bytes:
    """Canonical JSON: sorted keys, no insignificant whitespace, UTF-8."""
    # One shared encoder: json.dumps builds a new one per call when given options.
    return _CANONICAL.encode(entry).encode("utf-8")


def entryHash(data: bytes) -> bytes:
    return sha256(data).digest()


class RecentWrites:
    """
    At least the last C{size} identified writes: (writeId, digest) -> index.  They are
    kept in three generations of C{size // 2}, newest first; when the newest fills up,
    the oldest is dropped whole, so forgetting costs nothing per write (at most 1.5 x
    C{size} are kept).
    """

    def __init__(self, size: int = RECENT_WRITES):
        self._generation = max(1, size // 2)
        self._writes: list = [{}, {}, {}]

    def get(self, writeId: str, digest: bytes) -> int | None:
        key = (writeId, digest)
        for writes in self._writes:
            index = writes.get(key)
            if index is not None:
                return index
        return None

    def add(self, writeId: str, digest: bytes, index: int) -> None:
        self._writes[0][writeId, digest] = index
        self._rotate()

    # A commit's writes at once: the store's writer thread then spends its GIL time in
    # C loops over them, not Python ones.

    def allNew(self, keys: list, pending: dict) -> bool:
        """Whether the (writeId, digest) C{keys} are distinct, and neither recorded here
        nor in C{pending}."""
        return (len(set(keys)) == len(keys) and pending.keys().isdisjoint(keys)
                and all(writes.keys().isdisjoint(keys) for writes in self._writes))

    def update(self, writes: dict) -> None:
        """Record C{writes}, (writeId, digest) -> index, none of them recorded yet."""
        self._writes[0].update(writes)
        self._rotate()

    def _rotate(self) -> None:
        if len(self._writes[0]) >= self._generation:
            self._writes = [{}, *self._writes[:2]]


class Followers:
    """Fan committed batches out to followers on the reactor thread."""

    def __init__(self):
        self._callbacks: tuple = ()

    def add(self, callback) -> "Following":
        self._callbacks = self._callbacks + (callback,)
        return Following(self, callback)

    def remove(self, callback) -> None:
        self._callbacks = tuple(c for c in self._callbacks if c is not callback)

    def deliver(self, first: int, entries: list) -> None:
        """
        Entries from index C{first} on, as C{(index, data)} rows, built only when someone
        follows.  A follower that raises is logged and skipped, never stopping the others.
        """
        if not self._callbacks:
            return
        batch = list(zip(range(first, first + len(entries)), entries))
        for callback in self._callbacks:
            try:
                callback(batch)
            except Exception:
                _log.failure("journal follower {callback!r} failed", callback=callback)


class Following:
    def __init__(self, followers: Followers, callback):
        self._followers = followers
        self._callback = callback

    def cancel(self) -> None:
        self._followers.remove(self._callback)


@implementer(IJournalStore)
class MemoryStore:
    """
    Everything in this process's memory: for tests and throwaway servers.  Identical
    entries share one blob, counted by references, so retention frees a blob with its
    last index.
    """

    def __init__(self, reactor):
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
            left, references = self._bytes, {}
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


def storeFromString(reactor, description: str, **options) -> IJournalStore:
    """
    C{memory:}, C{sqlite:PATH} or C{postgresql://...} (C{postgres://} too); raise
    L{StoreError} for anything else.
    """
    from .pgstore import PostgreSQLStore, isPostgreSQL
    if isPostgreSQL(description):
        return PostgreSQLStore(reactor, description)
    kind, _, rest = description.partition(":")
    if kind == "memory" and not rest:
        return MemoryStore(reactor)
    if kind == "sqlite" and rest:
        from .sqlitestore import SQLiteStore
        return SQLiteStore(reactor, rest, **options)
    raise StoreError(f"unknown store {description!r}: use sqlite:PATH, memory: or "
                     "postgresql://USER:PASSWORD@HOST:PORT/DB")
