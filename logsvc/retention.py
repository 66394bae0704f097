"""
Retention: what the journal keeps (C{--retain-entries}, C{--retain-age},
C{--retain-bytes}) and the service that has the store apply it.

The store does the deleting, in its own thread; this module only says what to keep
and asks at least once a minute.
"""

import re
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import usage

CHECK_INTERVAL = 10.0
"""Seconds between retention checks (a check that finds nothing to delete is cheap)."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class Retention:
    """
    Each limit, when set, is a promise of at least: the store keeps at least the last
    C{entries} entries, every entry committed less than C{seconds} ago, and at least
    C{bytes} bytes of stored entry data (an entry stored once for several indices
    counting once).  Entries are deleted oldest first once any limit is passed.
    """

    entries: int | None = None
    seconds: float | None = None
    bytes: int | None = None

    def __bool__(self) -> bool:
        return any(limit is not None for limit in (self.entries, self.seconds, self.bytes))


def parseDuration(value: str) -> int:
    """C{90s}, C{30m}, C{12h}, C{7d} as seconds; a usage error otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", value, re.IGNORECASE)
    if not match or int(match[1]) < 1:
        raise usage.UsageError(f"--retain-age must be a positive number of s, m, h or d "
                               f"(90s, 30m, 12h, 7d), not {value!r}")
    return int(match[1]) * _UNITS[match[2].lower()]


parseDuration.coerceDoc = "A duration: 90s, 30m, 12h, 7d."  # type: ignore[attr-defined]


def parseSize(value: str) -> int:
    """C{500M}, C{20G} (powers of 1024; K, M, G, T; a bare number is bytes)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", value, re.IGNORECASE)
    if not match or int(match[1]) < 1:
        raise usage.UsageError(f"--retain-bytes must be a positive size such as 500M or "
                               f"20G (K, M, G, T: powers of 1024), not {value!r}")
    return int(match[1]) * _SIZES[match[2].lower()]


parseSize.coerceDoc = "A size: 500M, 20G (powers of 1024)."  # type: ignore[attr-defined]


class RetentionService(Service):
    """
    Asks the store to apply C{retention} every L{CHECK_INTERVAL} seconds, from start-up
    on; a check still running when the next is due is not doubled.  The store deletes
    off the reactor thread, between its commits.
    """

    log = Logger()

    def __init__(self, store, retention: Retention, clock, interval: float = CHECK_INTERVAL):
        self.store = store
        self.retention = retention
        self.clock = clock
        self.interval = interval
        self.checks = 0
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self._running = None

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        """A trim in progress is not waited for: closing the store ends it."""
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def check(self):
        """One check now; returns the Deferred of the trim (None if one is running)."""
        if self._running is not None:
            return None
        self._running = self.store.trim(self.retention, self.clock.seconds())
        self._running.addCallbacks(self._trimmed, self._failed)
        self._running.addBoth(self._done)
        return self._running

    def _trimmed(self, result) -> None:
        self.checks += 1
        before, first = result
        if first > before:
            self.log.info("retention: deleted entries {before}..{last}; first is now "
                          "{first}", before=before, last=first - 1, first=first)

    def _failed(self, failure) -> None:
        self.log.warn("retention check failed: {error}", error=failure.getErrorMessage())

    def _done(self, _) -> None:
        self._running = None
