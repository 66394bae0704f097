"""
The PB avatar: what a logged-in client may call (queries, the journal, live subscriptions).

Everything sent is a plain type, so any PB client can call it without sharing classes;
errors callers should handle are L{pb.Error} subclasses, sent by type without a traceback.
"""

import json

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.spread.banana import SIZE_LIMIT

from ..errors import StoreError, Trimmed
from ..options import positive
from ..service import LogService
from ..store import canonical
from ..subscription import MISSED_LIMIT, QUEUE_LIMIT, Subscription

READ_LIMIT = 1000                 # entries per read() answer
PAGE_BYTES = 256 * 1024           # canonical JSON per read() answer, well under Banana's 640 KiB
IN_FLIGHT = 16                    # event calls an observer may leave unanswered
SUBSCRIPTIONS = 64                # per login
PB_DEPTH = 100                    # nesting jelly and Banana carry: both recurse per level

LONGEST_LINE = SIZE_LIMIT // 3
"""
The largest C{--max-line} PB can serve: Banana refuses to send a string over 640 KiB
(the call then never gets an answer), and a line of invalid UTF-8 triples in size once
each byte is replaced with U+FFFD.
"""


class BadRequest(pb.Error):
    """The arguments of a call are not what it takes; the message says which."""


class JournalError(pb.Error):
    """The journal could not store or read an entry; the message says why in one line."""


class TrimmedError(pb.Error):
    """A read started below C{first}; the message names C{first} and C{head}."""


def _checkPositive(name: str, value) -> None:
    if positive(value) is None:
        raise BadRequest(f"{name} must be a positive integer, not {value!r}")


def _tooLarge(size: int) -> str:
    return f"entry too large for PB ({size} bytes): read it on the journal port"


_TOO_DEEP = f"entry nested deeper than {PB_DEPTH} levels for PB: read it on the journal port"


def _tooDeep(entry, data: bytes) -> bool:
    """More than L{PB_DEPTH} nested lists and dicts, counted without recursion."""
    if data.count(b"[") + data.count(b"{") <= PB_DEPTH:
        return False
    depth, level = 0, [entry]
    while level:
        level = [child for value in level if isinstance(value, (dict, list))
                 for child in (value.values() if isinstance(value, dict) else value)]
        depth += 1
    return depth > PB_DEPTH + 1


def entryMessage(index: int, data) -> dict:
    """One read() item: the entry, or an error when it cannot be read or sent in one page."""
    if not isinstance(data, bytes):
        return {"index": index, "error": data.reason}
    return _carried(index, data, _UNDECODED)


_UNDECODED = object()


def _carried(index: int, data: bytes, entry) -> dict:
    """
    C{{"index", "entry"}}, or an error item for an entry over L{PAGE_BYTES} or
    L{PB_DEPTH}, which PB cannot carry: the one check for read() and subscriptions.
    C{entry} is C{data} decoded, or L{_UNDECODED} to decode it only once its size passed.
    """
    if len(data) > PAGE_BYTES:
        return {"index": index, "error": _tooLarge(len(data))}
    if entry is _UNDECODED:
        try:
            entry = json.loads(data)
        except RecursionError:
            return {"index": index, "error": _TOO_DEEP}
    if _tooDeep(entry, data):
        return {"index": index, "error": _TOO_DEEP}
    return {"index": index, "entry": entry}


class QueryPerspective(pb.Avatar):
    """What one logged-in PB client may do; C{logout} ends its subscriptions."""

    log = Logger()
    inFlightLimit = IN_FLIGHT
    queueLimit = QUEUE_LIMIT
    missedLimit = MISSED_LIMIT

    def __init__(self, service: LogService, avatarId: bytes | tuple):
        self.service = service
        self.avatarId = avatarId
        self._subscriptions: dict[int, "RemoteSubscription"] = {}
        self._lastId = 0

    # The line service

    def perspective_clientNames(self) -> list:
        return self.service.registry.onlineNames()

    def perspective_clients(self, after=None, limit=None) -> dict:
        """
        Every known client; with C{limit}, at most that many whose names sort after
        C{after}.  An answer is encoded on the reactor (thousands of full rings take
        seconds, during which the service waits), so callers that can page should.
        """
        if after is not None and not isinstance(after, str):
            raise BadRequest(f"after must be a client name, not {after!r}")
        if limit is not None:
            _checkPositive("limit", limit)
        records = self.service.registry.records(after, limit)
        return {r.name: r.summary() for r in records}

    def perspective_clientLog(self, name) -> list:
        return self._lookup(name).log()

    def perspective_clientState(self, name) -> dict:
        return dict(self._lookup(name).state)

    def _lookup(self, name):
        if not isinstance(name, str):
            raise BadRequest(f"client name must be a string, not {type(name).__name__}")
        return self.service.registry.lookup(name)

    # The journal

    def perspective_head(self):
        return self.service.store.head().addErrback(_journalError)

    def perspective_first(self):
        """The lowest index retention has kept (head + 1 once every entry is gone)."""
        return self.service.store.first().addErrback(_journalError)

    def perspective_read(self, start, limit=READ_LIMIT):
        """
        Up to C{limit} entries from C{start} as C{{"index", "entry"}} dicts, capped at
        L{READ_LIMIT} entries and about L{PAGE_BYTES}; an empty list means C{start} is
        past the head.  Callers page on from the last index + 1.  Below the first
        index kept, a remote L{TrimmedError} that names C{first} and C{head}.
        """
        _checkPositive("from", start)
        _checkPositive("limit", limit)
        d = self.service.store.read(start, min(limit, READ_LIMIT))
        return d.addCallbacks(_page, _journalError)

    def perspective_append(self, entry):
        """Store C{entry} (a dict) durably; fires with its index."""
        if not isinstance(entry, dict):
            raise BadRequest(f"an entry must be a dict, not {type(entry).__name__}")
        try:
            data = canonical(entry)
        except (TypeError, ValueError) as e:
            raise BadRequest(f"entry is not JSON: {e}")
        appended = self.service.store.append([data])
        return appended.addCallbacks(lambda indices: indices[0], _journalError)

    # Live subscriptions

    def perspective_subscribe(self, observer, events=None, clients=None, fromIndex=None) -> int:
        """
        Call C{observer.callRemote("event", kind, payload)} for every matching event
        (C{kind} being ready/log/set/close/entry, or C{dropped} and finally C{end} when
        the observer falls too far behind).  Returns the id C{unsubscribe} takes.
        """
        if not isinstance(observer, pb.RemoteReference):
            raise BadRequest("observer must be a pb.Referenceable")
        if clients is not None and not isinstance(clients, str):
            raise BadRequest("clients must be a glob pattern string")
        if events is not None and not (
                isinstance(events, list) and all(isinstance(e, str) for e in events)):
            raise BadRequest("events must be a list of strings")
        if len(self._subscriptions) >= SUBSCRIPTIONS:
            raise BadRequest(f"at most {SUBSCRIPTIONS} subscriptions per login")
        self._lastId += 1
        subscriptionId = self._lastId
        try:
            remote = RemoteSubscription(
                self.service, observer, events, clients, fromIndex,
                onEnd=lambda: self._subscriptions.pop(subscriptionId, None),
                inFlightLimit=self.inFlightLimit, queueLimit=self.queueLimit,
                missedLimit=self.missedLimit)
        except ValueError as e:
            raise BadRequest(str(e))
        if not remote.subscription.ended:
            self._subscriptions[subscriptionId] = remote
        return subscriptionId

    def perspective_unsubscribe(self, subscriptionId) -> bool:
        """True if the subscription was live; unsubscribing twice is harmless."""
        if isinstance(subscriptionId, bool) or not isinstance(subscriptionId, int):
            raise BadRequest(f"a subscription id is an int, not {type(subscriptionId).__name__}")
        remote = self._subscriptions.pop(subscriptionId, None)
        if remote is None:
            return False
        remote.subscription.cancel()
        return True

    def logout(self) -> None:
        """The client disconnected: nothing more is sent to its observers."""
        subscriptions, self._subscriptions = self._subscriptions, {}
        for remote in subscriptions.values():
            remote.subscription.cancel()


class RemoteSubscription:
    """
    A L{Subscription} delivering to a remote observer with at most L{IN_FLIGHT}
    unanswered calls: past that it pauses, so a stalled observer costs the server
    only the Subscription's bounded queue, then ends it.
    """

    log = Logger()

    def __init__(self, service: LogService, observer: pb.RemoteReference, events, clients,
                 fromIndex, onEnd,
                 inFlightLimit: int, queueLimit: int, missedLimit: int):
        self._observer = observer
        self._inFlight = 0
        self._inFlightLimit = inFlightLimit
        self._onEnd = onEnd
        self.subscription = Subscription(service, self._deliver, events=events,
                                         clients=clients, fromIndex=fromIndex,
                                         queueLimit=queueLimit, missedLimit=missedLimit,
                                         onEnd=self._ended)

    def _deliver(self, message: dict) -> None:
        kind = message["event"] if message["type"] == "event" else message["type"]
        if kind == "entry" and "entry" in message:
            item = _carried(message["index"], canonical(message["entry"]), message["entry"])
            if "error" in item:
                message = {"type": "entry", **item}
        self._call(kind, message)

    def _call(self, kind: str, payload: dict) -> None:
        self._inFlight += 1
        if self._inFlight >= self._inFlightLimit:
            self.subscription.pauseProducing()
        try:
            d = self._observer.callRemote("event", kind, payload)
        except pb.DeadReferenceError:
            self._gone(None)
            return
        d.addCallbacks(self._answered, self._failed)

    def _answered(self, _) -> None:
        self._inFlight -= 1
        if self._inFlight < self._inFlightLimit:
            self.subscription.resumeProducing()

    def _failed(self, failure) -> None:
        if failure.check(pb.PBConnectionLost, pb.DeadReferenceError):
            self._gone(failure)
            return
        self.log.info("observer's remote_event failed: {error}",
                      error=failure.getErrorMessage())
        self._answered(None)

    def _gone(self, _) -> None:
        self.subscription.cancel()
        self._onEnd()

    def _ended(self, reason: str) -> None:
        """The observer fell too far behind: tell it why, once, then forget it."""
        self._onEnd()
        try:
            self._observer.callRemote("event", "end", {"type": "end", "reason": reason}
                                      ).addErrback(lambda _: None)
        except pb.DeadReferenceError:
            pass


def _page(pairs: list) -> list:
    page: list = []
    size = 0
    for index, data in pairs:
        size += len(data) if isinstance(data, bytes) else 0
        if page and size > PAGE_BYTES:
            break
        page.append(entryMessage(index, data))
    return page


def _journalError(failure: Failure):
    if failure.check(Trimmed):
        raise TrimmedError(failure.getErrorMessage())
    failure.trap(StoreError)
    raise JournalError(failure.getErrorMessage())
