"""
The client registry: one record per client name, shared by every line connection,
and the hub that hands line-service events to observers (journal, PB, WebSocket).
"""

from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from .errors import NameInUse, NoSuchClient
from .interfaces import IClientRegistry, IEventObserver

_NO_FIELDS: dict = {}


class ClaimedNames(Protocol):
    """Who owns names across nodes (L{logsvc.nodes.SharedRegistry})."""

    def claim(self, name: str) -> Deferred:
        """Fires with True when this node may have C{name}, False when another has it."""

    def release(self, name: str) -> None:
        """This node no longer has C{name}."""


class ClientRecord:
    """What the server remembers about one client name."""

    __slots__ = (
        "name", "connectedAt", "disconnectedAt", "online", "ring", "state",
        "lines", "bytes", "ignored", "truncated",
    )

    def __init__(self, name: str, bufferSize: int):
        self.name = name
        self.connectedAt: float | None = None
        self.disconnectedAt: float | None = None
        self.online = False
        self.ring: deque = deque(maxlen=bufferSize)
        self.state: dict = {}
        self.lines = 0
        self.bytes = 0
        self.ignored = 0
        self.truncated = 0

    def log(self) -> list:
        """The ring as plain ``[time, message]`` lists, oldest first."""
        return [[t, m] for t, m in self.ring]

    def counters(self) -> dict:
        return {"lines": self.lines, "bytes": self.bytes,
                "ignored": self.ignored, "truncated": self.truncated}

    def summary(self) -> dict:
        """Plain-typed description, as PB and HTTP return it."""
        return {"connectedAt": self.connectedAt, "online": self.online,
                "log": self.log(), "state": dict(self.state),
                "counters": self.counters()}


@implementer(IClientRegistry)
class ClientRegistry:
    """
    Records survive disconnects so the last lines of a crashed program stay readable;
    offline records beyond C{maxOffline} are evicted longest-offline first.

    With C{names} (an object whose C{claim(name)} fires with True when this node may
    have the name and whose C{release(name)} gives it back, see L{logsvc.nodes}), the
    names line clients take in L{claim} are owned across every node sharing the store,
    and records of clients online on other nodes (L{applyRemote}) are answered too.
    """

    log_ = Logger()

    def __init__(self, clock, bufferSize: int = 128, maxOffline: int = 10000):
        self._clock = clock
        self.bufferSize = bufferSize
        self.maxOffline = maxOffline
        self._online: dict[str, ClientRecord] = {}
        self._offline: OrderedDict[str, ClientRecord] = OrderedDict()
        self._remote: dict[str, ClientRecord] = {}   # online on other nodes
        self.names: ClaimedNames | None = None
        self._claiming: set = set()     # names whose claim is on its way
        self._claimed: set = set()      # online names claimed through names
        self._observers: tuple = ()
        self._everyNode: tuple = ()     # observers of other nodes' events too
        # Told True when the first of those arrives, False when the last leaves.
        self.subscribersChanged: Callable[[bool], None] | None = None
        self.totalLines = 0
        self.totalSets = 0
        self._evicted = {"bytes": 0, "ignored": 0, "truncated": 0}
        self._changed: set = set()      # names to save (see takeChanges)
        self._gone: set = set()         # evicted names to forget
        self._saved: dict = {}          # name -> counters as last saved

    @property
    def observed(self) -> bool:
        """True when someone listens to events, so every line must be decoded."""
        return bool(self._observers)

    def claim(self, name: str) -> Deferred:
        """
        L{connect} once C{names} agrees that no other node has C{name} online: a
        Deferred firing with the record or failing with L{NameInUse}.  Without
        C{names} it has fired already.  When C{names} cannot answer (the shared store
        is down), the name is taken locally: the line service keeps working.
        """
        if name in self._online or name in self._claiming:
            return fail(NameInUse(name))
        if self.names is None:
            return succeed(self.connect(name))
        self._claiming.add(name)
        claimed = self.names.claim(name)
        claimed.addErrback(self._claimFailed, name)
        return claimed.addCallback(self._claimAnswered, name)

    def _claimFailed(self, failure, name: str) -> None:
        self.log_.warn("{name} taken on this node only: {error}", name=name,
                       error=failure.getErrorMessage())

    def _claimAnswered(self, free: bool | None, name: str) -> ClientRecord:
        self._claiming.discard(name)
        if free is False:
            raise NameInUse(name)
        try:
            record = self.connect(name)
        except NameInUse:
            if free and self.names is not None:
                self.names.release(name)
            raise
        if free:
            self._claimed.add(name)
        return record

    def connect(self, name: str) -> ClientRecord:
        if name in self._online:
            raise NameInUse(name)
        record = (self._offline.pop(name, None) or self._remote.pop(name, None)
                  or ClientRecord(name, self.bufferSize))
        record.online = True
        record.connectedAt = self._clock.seconds()
        record.disconnectedAt = None
        record.state = {}
        self._online[name] = record
        self._changed.add(name)
        self._emit("ready", name, record.connectedAt, _NO_FIELDS)
        return record

    def disconnect(self, record: ClientRecord) -> None:
        if self._online.get(record.name) is not record:
            return
        del self._online[record.name]
        if record.name in self._claimed and self.names is not None:
            self._claimed.discard(record.name)
            self.names.release(record.name)
        record.online = False
        record.disconnectedAt = self._clock.seconds()
        self._offline[record.name] = record
        self._changed.add(record.name)
        while len(self._offline) > self.maxOffline:
            evicted, gone = self._offline.popitem(last=False)
            self._changed.discard(evicted)
            self._gone.add(evicted)
            for counter in self._evicted:
                self._evicted[counter] += getattr(gone, counter)
            self.log_.info("evicted offline client {name}", name=evicted)
        self._emit("close", record.name, record.disconnectedAt, _NO_FIELDS)

    def log(self, record: ClientRecord, time: float, messages: list,
            received: int | None = None, truncated: bool = False,
            fields: list | None = None) -> None:
        """
        C{received} counts lines that arrived together when the caller passes only
        the ones that can still be in the ring (nobody observes the rest).  C{fields},
        one dict per message (a syslog message's severity, facility, ...), go into
        each line's C{log} event.
        """
        count = len(messages) if received is None else received
        record.lines += count
        self.totalLines += count
        record.ring.extend([(time, m) for m in messages[-self.bufferSize:]])
        if truncated:
            record.truncated += 1
        if fields is not None:
            for observer in self._observers:
                observer.logged(record.name, time, messages, truncated, fields)
            return
        for observer in self._observers:
            observer.logged(record.name, time, messages, truncated)

    def set(self, record: ClientRecord, time: float, key: str, value: str) -> None:
        record.state[key] = value
        self.totalSets += 1
        self._changed.add(record.name)
        self._emit("set", record.name, time, {"key": key, "value": value})

    def lookup(self, name: str) -> ClientRecord:
        record = self._online.get(name) or self._remote.get(name) or self._offline.get(name)
        if record is None:
            raise NoSuchClient(name)
        return record

    def onlineNames(self) -> list:
        return sorted([*self._online, *self._remote])

    def records(self, after: str | None = None, limit: int | None = None) -> list:
        names = sorted([*self._online, *self._remote, *self._offline])
        if after is not None:
            names = names[bisect_right(names, after):]
        return [self.lookup(name) for name in names[:limit]]

    def counts(self) -> dict:
        return {"online": len(self._online) + len(self._remote),
                "offline": len(self._offline)}

    def totals(self) -> dict:
        """Counters over every client since start, evicted ones included (for metrics)."""
        totals = dict(self._evicted, lines=self.totalLines, sets=self.totalSets)
        for record in [*self._online.values(), *self._offline.values()]:
            totals["bytes"] += record.bytes
            totals["ignored"] += record.ignored
            totals["truncated"] += record.truncated
        return totals

    # Persistence (logsvc.persistence): what changed since the last save, in batches.

    def restore(self, name: str, saved: dict) -> None:
        """An offline record as saved before a restart (at start-up, before clients)."""
        self._offline[name] = record = self._fromSaved(name, saved)
        self._saved[name] = _signature(record)

    def applyRemote(self, name: str, saved: dict, online: bool) -> None:
        """
        A record as another node last saved it: C{online} there, or offline.  Names
        online here are this node's to say; an offline record beyond C{maxOffline}
        is dropped from memory here only (the node that evicts it deletes it).
        """
        if name in self._online:
            return
        record = self._fromSaved(name, saved)
        self._offline.pop(name, None)
        self._remote.pop(name, None)
        if online:
            record.online = True
            self._remote[name] = record
            return
        self._offline[name] = record
        while len(self._offline) > self.maxOffline:
            self._offline.popitem(last=False)

    def _fromSaved(self, name: str, saved: dict) -> ClientRecord:
        record = ClientRecord(name, self.bufferSize)
        record.connectedAt = saved["connectedAt"]
        record.disconnectedAt = saved["disconnectedAt"]
        record.ring.extend((t, m) for t, m in saved["log"])
        record.state = saved["state"]
        for counter, value in saved["counters"].items():
            setattr(record, counter, value)
        return record

    def claimedNames(self) -> list:
        """Names online here that were claimed through C{names} (and are held)."""
        return list(self._claimed)

    def resave(self) -> None:
        """Take every record online here again at the next L{takeChanges}."""
        self._changed.update(self._online)

    def takeChanges(self) -> tuple[list, list]:
        """
        C{([(name, saved form)], [evicted names])} since the last call: records that
        connected, disconnected or were set, and online ones whose counters moved
        (lines and bytes are counted without a call here, so they are compared).
        The saved form says whether the client is online; L{restore} ignores that.
        """
        changed = self._changed
        record: ClientRecord | None
        for name, record in self._online.items():
            if self._saved.get(name) != _signature(record):
                changed.add(name)
        self._changed = set()
        gone, self._gone = list(self._gone), set()
        rows = []
        for name in changed:
            record = self._online.get(name) or self._offline.get(name)
            if record is not None:
                self._saved[name] = _signature(record)
                rows.append((name, {**record.summary(),
                                    "disconnectedAt": record.disconnectedAt}))
        for name in gone:
            self._saved.pop(name, None)
        return rows, gone

    def unsaved(self, names: list, gone: list) -> None:
        """A save failed: take these again at the next L{takeChanges}."""
        self._changed.update(names)
        self._gone.update(gone)

    def addObserver(self, observer: IEventObserver, localOnly: bool = False) -> None:
        """
        Deliver every later event to C{observer}: those of clients on other nodes
        too (L{remoteEvents}), unless C{localOnly} (the journal's: each node
        journals its own clients).
        """
        self._observers = self._observers + (observer,)
        if not localOnly:
            self._everyNode = self._everyNode + (observer,)
            if len(self._everyNode) == 1 and self.subscribersChanged is not None:
                self.subscribersChanged(True)

    def removeObserver(self, observer: IEventObserver) -> None:
        had = bool(self._everyNode)
        self._observers = tuple(o for o in self._observers if o is not observer)
        self._everyNode = tuple(o for o in self._everyNode if o is not observer)
        if had and not self._everyNode and self.subscribersChanged is not None:
            self.subscribersChanged(False)

    def remoteEvents(self, events: list) -> None:
        """
        Events of clients on other nodes, in their order: C{(kind, name, time,
        fields)}, a C{log} event's fields holding its C{message}.
        """
        for kind, name, time, fields in events:
            if kind == "log":
                extra = {k: v for k, v in fields.items() if k != "message"}
                for observer in self._everyNode:
                    observer.logged(name, time, [fields["message"]], False,
                                    [extra])
            else:
                for observer in self._everyNode:
                    observer.event(kind, name, time, fields)

    def _emit(self, kind: str, name: str, time: float, fields: dict) -> None:
        for observer in self._observers:
            observer.event(kind, name, time, fields)


def _signature(record: ClientRecord) -> tuple:
    return (record.online, record.lines, record.bytes, record.ignored, record.truncated)
