"""
The observer that journals line-service events, and the NDJSON lines of stored entries.
"""

from json.encoder import encode_basestring, encode_basestring_ascii

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import EntryError
from ..interfaces import IEventObserver, IJournalStore
from ..store import canonical

BACKLOG_HIGH, BACKLOG_LOW = 50_000, 10_000
"""
Journal-line appends waiting for the store at which line traffic is paused, and
resumed: LOG lines are not acknowledged, so the journal slows the line clients
down (through TCP) rather than buffering their lines without bound.
"""


def entryLines(rows: list) -> list:
    """
    The NDJSON lines for C{(index, data)} rows (data is canonical JSON already, or an
    EntryError): the journal protocol's replies, and /journal's array items.
    """
    return [b'{"index":%d,"entry":%s}\n' % (index, data) if data.__class__ is bytes
            else b'{"index":%d,"error":%s}\n' % (index, quoted(_reason(data)))
            for index, data in rows]


def _reason(error: EntryError | Exception) -> str:
    return error.reason if isinstance(error, EntryError) else str(error)


def quoted(text: str) -> bytes:
    """C{text} as a JSON string, ASCII-only: what every reply quotes."""
    return encode_basestring_ascii(text).encode("ascii")


def eventEntry(kind: str, name: str, time: float, fields: dict) -> bytes:
    """
    Canonical JSON of C{{"client": name, "event": kind, "time": time, **fields}}, built
    directly for the shapes the registry emits (sorted keys, as canonical() would).
    """
    if time - time == 0.0 and time.__class__ is float:
        if not fields:
            return ('{"client":%s,"event":%s,"time":%r}'
                    % (encode_basestring(name), encode_basestring(kind), time)).encode()
        if kind == "set" and len(fields) == 2 and "key" in fields and "value" in fields:
            return ('{"client":%s,"event":"set","key":%s,"time":%r,"value":%s}'
                    % (encode_basestring(name), encode_basestring(fields["key"]), time,
                       encode_basestring(fields["value"]))).encode()
    return canonical({**fields, "client": name, "event": kind, "time": time})


def flatEntry(entry: dict) -> bytes:
    """
    canonical() of a flat object of strings, finite floats and C{True} (a syslog
    message's log event), built directly; anything else goes through canonical().
    """
    parts = []
    for key in sorted(entry):
        value = entry[key]
        if value.__class__ is str:
            parts.append(f"{encode_basestring(key)}:{encode_basestring(value)}")
        elif value.__class__ is float and value - value == 0.0:
            parts.append(f"{encode_basestring(key)}:{value!r}")
        elif value is True:
            parts.append(f"{encode_basestring(key)}:true")
        else:
            return canonical(entry)
    return ("{" + ",".join(parts) + "}").encode()


def logEntries(name: str, time: float, messages: list, truncated: bool) -> list:
    """The canonical JSON of each line's C{log} event, the part they share built once."""
    if not messages:
        return []
    if not (time - time == 0.0 and time.__class__ is float):
        extra = {"truncated": True} if truncated else {}
        return [eventEntry("log", name, time, {"message": m, **extra}) for m in messages]
    prefix = '{"client":%s,"event":"log","message":' % encode_basestring(name)
    suffix = ',"time":%r%s}' % (time, ',"truncated":true' if truncated else "")
    # Encoded and split as one text: JSON strings hold no raw newline.
    between = suffix + "\n" + prefix
    return (prefix + between.join(map(encode_basestring, messages)) + suffix
            ).encode().split(b"\n")


@implementer(IEventObserver)
class JournalLines:
    """
    Appends every line-service event to the journal, without an id: the lines a
    client sent together as one batch.

    Nobody waits for these appends, so a store failure is logged (the first, then every
    10,000th) and counted in C{failures}, never raised into the line service.
    """

    log = Logger()

    def __init__(self, store: IJournalStore, producer: IPushProducer | None = None):
        self._store = store
        self._producer = producer
        self._paused = False
        self.backlog = 0
        self.failures = 0

    def event(self, kind: str, name: str, time: float, fields: dict) -> None:
        self._append(lambda: [eventEntry(kind, name, time, fields)], name)

    def logged(self, name: str, time: float, messages: list, truncated: bool,
               fields: list | None = None) -> None:
        if fields is not None:
            self._append(lambda: [flatEntry({**f, "message": m, "client": name,
                                             "event": "log", "time": time})
                                  for m, f in zip(messages, fields)], name)
            return
        self._append(lambda: logEntries(name, time, messages, truncated), name)

    def _append(self, entries, name: str) -> None:
        try:
            appended = self._store.append(entries := entries())
        except Exception:
            self.log.failure("cannot journal events of {name}", name=name)
            return
        self.backlog += len(entries)
        if self.backlog >= BACKLOG_HIGH and not self._paused and self._producer is not None:
            self._paused = True
            self._producer.pauseProducing()
        appended.addCallbacks(self._landed, self._failed, errbackArgs=(len(entries),))

    def _landed(self, indices: list) -> None:
        self._drained(len(indices))

    def _drained(self, count: int) -> None:
        self.backlog -= count
        if self._paused and self.backlog <= BACKLOG_LOW and self._producer is not None:
            self._paused = False
            self._producer.resumeProducing()

    def _failed(self, failure, count: int) -> None:
        self._drained(count)
        before, self.failures = self.failures, self.failures + count
        if before == 0 or before // 10000 != self.failures // 10000:
            self.log.warn("journal lines: {n} appends failed so far; last: {error}",
                          n=self.failures, error=failure.getErrorMessage())
