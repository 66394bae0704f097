"""
Journal storage shared by every implementation: canonical JSON, content hashes, the
window of recent identified writes that makes retries safe, fan-out to followers, and
the layout constants the SQLite and PostgreSQL stores share.
"""

import json
from bisect import bisect_left, bisect_right
from hashlib import sha256
from itertools import accumulate, repeat
from operator import add

from twisted.logger import Logger
from zope.interface import implementer

from .errors import EntryError
from .interfaces import IFollowing

RECENT_WRITES = 100_000

TIME_STEP = 1.0
"""Seconds between entries of the sparse record of (commit time, first index)."""

CHUNK_ENTRIES = 256
CHUNK_BYTES = 256 * 1024
"""A commit stores its entries in rows (chunks) of at most this many entries or bytes."""

DIGEST = 32
"""Bytes of an entry's hash (L{entryHash})."""

TRIM_STEP = 5_000
"""Entries one retention step deletes in one transaction, between commits."""

CORRUPT = EntryError("entry corrupt: content does not match its hash")

_log = Logger()


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False, allow_nan=False)


def canonical(entry) -> bytes:
    """Canonical JSON: sorted keys, no insignificant whitespace, UTF-8."""
    # One shared encoder: json.dumps builds a new one per call when given options.
    return _CANONICAL.encode(entry).encode("utf-8")


def entryHash(data: bytes) -> bytes:
    """The SHA-256 digest that addresses an entry's canonical JSON."""
    return sha256(data).digest()


def entryHashes(entries: list[bytes]) -> list[bytes]:
    """L{entryHash} of each entry, without a Python call per entry: for hot paths."""
    return [sha256(data).digest() for data in entries]


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


def chunkSpans(first: int, entries: list, identified: list) -> list:
    """
    How a commit's consecutive C{entries}, from index C{first}, fill chunk rows: at
    most L{CHUNK_ENTRIES} entries or L{CHUNK_BYTES} bytes each (a larger entry gets a
    row of its own).  Each row as (start, end, offset, length, ids): its entries, its
    part of their data joined by newlines, and its part of C{identified}, the
    (index, write id) of the commit in index order.
    """
    ends = list(accumulate(map(add, map(len, entries), repeat(1))))  # past each newline
    spans, start, ids = [], 0, 0
    while start < len(entries):
        offset = ends[start - 1] if start else 0
        end = max(start + 1, bisect_right(ends, offset + CHUNK_BYTES + 1, start,
                                          min(len(entries), start + CHUNK_ENTRIES)))
        idsEnd = bisect_left(identified, (first + end,), ids)
        spans.append((start, end, offset, ends[end - 1] - 1 - offset, identified[ids:idsEnd]))
        start, ids = end, idsEnd
    return spans


def assignIndices(batch: list, head: int, recent: RecentWrites) -> tuple:
    """
    Indices from C{head + 1} for a commit's C{batch} of (entries, digests, write ids,
    _): a write whose (id, digest) is in C{recent} or earlier in the batch is a retry
    and gets its original index, stored once.  Returns the indices of each write, the
    entries to store and their digests, their (index, write id) in index order, and
    the new (write id, digest) -> index for C{recent} once the commit is durable.
    """
    pending: dict = {}
    indices: list = []
    accepted: list[bytes] = []
    digests: list[bytes] = []
    identified: list = []
    nextIndex = head + 1
    for entries, hashes, writeIds, _ in batch:
        keys = list(zip(writeIds, hashes)) if writeIds is not None else None
        if keys is None or None not in writeIds and recent.allNew(keys, pending):
            given = range(nextIndex, nextIndex + len(entries))
            if keys is not None:
                pending.update(zip(keys, given))
                identified += zip(given, writeIds)
            accepted += entries
            digests += hashes
            nextIndex += len(entries)
            indices.append(given)
            continue
        oneByOne = []   # a retry or an unidentified write among them
        for data, key in zip(entries, keys):
            if key[0] is not None:
                index = pending.get(key) or recent.get(*key)
                if index is not None:
                    oneByOne.append(index)
                    continue
                pending[key] = nextIndex
                identified.append((nextIndex, key[0]))
            accepted.append(data)
            digests.append(key[1])
            oneByOne.append(nextIndex)
            nextIndex += 1
        indices.append(oneByOne)
    return indices, accepted, digests, identified, pending


class Followers:
    """Fan committed batches out to followers on the reactor thread."""

    def __init__(self) -> None:
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


@implementer(IFollowing)
class Following:
    def __init__(self, followers: Followers, callback):
        self._followers = followers
        self._callback = callback

    def cancel(self) -> None:
        self._followers.remove(self._callback)
