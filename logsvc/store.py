"""
Journal storage shared by every implementation: canonical JSON, content hashes, the
window of recent identified writes that makes retries safe, fan-out to followers, and
the layout constants the SQLite and PostgreSQL stores share.
"""

import json
from hashlib import sha256

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
