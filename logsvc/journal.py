"""
The journal listener (tcp-log-server protocol) and the observer that journals line events.

NDJSON both ways.  Writes are acknowledged with their index once the store says they
are durable.  Reads replay from the store in pages, send C{{"current":true}} once caught
up with the head as of the read, then follow the log live; push reads (C{{"from": N}})
never end, pull reads (C{{"from": N, "read": K}}) end after K entries with
C{{"head": H}}.  A read that reaches entries retention has deleted is told so with
C{{"trimmed": {"first": F, "head": H}}} and goes on from C{first}.  Each connection is
a streaming producer on its own transport: while the socket's send buffer is full it
stops paging, drops live entries (they are read again from the store on resume) and
stops reading requests, so a peer that does not read costs a bounded amount of memory.
"""

import json
from bisect import insort
from json.encoder import encode_basestring, encode_basestring_ascii

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from .errors import EntryError, StoreError, Trimmed
from .interfaces import IEventObserver
from .store import canonical

FIRST_PAGE = 100
"""Entries in a read's first page, before the size of its entries is known."""

PAGE_ENTRIES = 1000
"""Most entries one store read returns."""

PAGE_BYTES = 1 << 20
"""Pages are sized to about this many bytes once a read has seen its entries' size."""

READ_AHEAD = 100
"""
Entries a pull read asks the store for even when it wants fewer: the rest wait on the
connection for its next pull read, so reads of 5 do not cost a store query each.
"""

CURRENT = b'{"current":true}\n'
INVALID_JSON = b'{"error":"invalid JSON"}\n'
INVALID_MESSAGE = b'{"error":"invalid message"}\n'
TOO_LONG = b'{"error":"message too long"}\n'
ALREADY_READING = b'{"error":"already reading"}\n'
MESSAGE_TIMED_OUT = b'{"error":"message timeout"}\n'

MESSAGE_TIMEOUT = 30.0
"""Seconds a message may stay incomplete, from its first byte to its newline."""

MAX_IN_FLIGHT = 1000
"""
Writes one connection may have waiting for the store; past it the connection stops
reading until acknowledgements catch up, so a peer that pipelines without limit
cannot make the store's queue grow without bound.
"""

BACKLOG_HIGH, BACKLOG_LOW = 50_000, 10_000
"""
Journal-line appends waiting for the store at which line traffic is paused, and
resumed: LOG lines are not acknowledged, so the journal slows the line clients
down (through TCP) rather than buffering their lines without bound.
"""


def _rejectConstant(name: str):
    raise ValueError(f"{name} is not JSON")


# One decoder for every message: json.loads would build a new one per call when given
# options, and NaN/Infinity are not JSON.
_decode = json.JSONDecoder(parse_constant=_rejectConstant).decode


def _errorText(failure) -> str:
    if failure.check(StoreError):
        return str(failure.value) or "store error"
    return "internal error"


def entryLines(rows: list) -> list:
    """
    The NDJSON lines for C{(index, data)} rows (data is canonical JSON already, or an
    EntryError): the journal protocol's replies, and /journal's array items.
    """
    return [b'{"index":%d,"entry":%s}\n' % (index, data) if data.__class__ is bytes
            else b'{"index":%d,"error":%s}\n' % (index, _json(_reason(data)))
            for index, data in rows]


def trimmedNotice(trimmed: Trimmed) -> bytes:
    """
    What a reader is told before the first entry after a gap retention made: no
    top-level C{head}, C{index} or C{current}, which tcp-log-client would take for the
    end of a pull read, an entry's error or being caught up.
    """
    return b'{"trimmed":{"first":%d,"head":%d}}\n' % (trimmed.first, trimmed.head)


def _reason(error) -> str:
    return error.reason if isinstance(error, EntryError) else str(error)


def _json(text: str) -> bytes:
    return encode_basestring_ascii(text).encode("ascii")


class HeldAcks:
    """
    Acknowledgements of one connection's writes whose entries its live read is about
    to send: each goes out just before its entry.  tcp-log-server handles one write at
    a time, so its clients see C{ack 1, entry 1, ack 2, entry 2}; a group commit
    acknowledges both writes before either entry reaches the read.
    """

    def __init__(self, transport):
        self._transport = transport
        self._held: list = []    # (index, ack line), in index order

    def __bool__(self) -> bool:
        return bool(self._held)

    def hold(self, index: int, line: bytes) -> None:
        insort(self._held, (index, line))

    def interleave(self, lines: list, first: int, notEntry: int | None) -> list:
        """
        C{lines} (entries from index C{first} on, but for the line at position
        C{notEntry}) with each held ack just before its entry; acks of later entries
        stay held.
        """
        held, taken, out, index = self._held, 0, [], first
        for position, line in enumerate(lines):
            if position != notEntry:
                while taken < len(held) and held[taken][0] <= index:
                    out.append(held[taken][1])
                    taken += 1
                index += 1
            out.append(line)
        del held[:taken]
        return out

    def release(self) -> None:
        """Send every held ack now: the read will not send their entries next."""
        if self._held:
            held, self._held = self._held, []
            self._transport.write(b"".join(line for _, line in held))


@implementer(IPushProducer)
class JournalRead:
    """
    One read on one connection: pages from the store until caught up, then live batches.

    Holds at most one page at a time, and nothing while paused: live batches that arrive
    while paused or paging only raise C{seen}, and the entries are read from the store
    again.
    """

    log = Logger()

    def __init__(self, store, transport, start: int, count: int | None, finished,
                 ahead: list = (), acks: HeldAcks | None = None):
        self._store = store
        self._transport = transport
        self._acks = acks if acks is not None else HeldAcks(transport)
        self._finished = finished
        self._ahead = ahead if ahead and ahead[0][0] == start else ()
        self.next = start
        self._remaining = count
        self._target: int | None = None
        self._seen = 0
        self._current = False
        self._paused = False
        self._fetching = False
        self._advancing = False
        self._live = False
        self._done = False
        self._pageSize = FIRST_PAGE
        self._following = None

    def start(self) -> None:
        self._following = self._store.follow(self._committed)
        self._fetching = True
        self._store.head().addCallbacks(self._gotHead, self._failed)

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
                if self.next > self._seen:
                    self._caughtUp()
                    self._live = True
                    return
                self._notLive()
                rows, self._ahead = self._ahead, ()
                if rows and rows[0][0] == self.next:
                    self._deliverKeepingRest(rows)
                    continue
                self._fetching = True
                limit = self._pageSize
                if self._remaining is not None:
                    limit = min(limit, max(self._remaining, READ_AHEAD))
                self._store.read(self.next, limit).addCallbacks(self._gotPage, self._failed)
        finally:
            self._advancing = False

    def _gotPage(self, rows: list) -> None:
        self._fetching = False
        if self._done:
            return
        if rows:
            size = sum(len(data) for _, data in rows if data.__class__ is bytes)
            self._pageSize = max(1, min(PAGE_ENTRIES, PAGE_BYTES * len(rows) // (size or 1)))
            self._deliverKeepingRest(rows)
        else:
            # Nothing committed at next after all: wait for the next commit.
            self._seen = self.next - 1
        self._advance()

    def _deliverKeepingRest(self, rows: list) -> None:
        """Deliver rows read from the store; what a pull read does not take is kept."""
        if self._remaining is not None and len(rows) > self._remaining:
            self._ahead = rows[self._remaining:]
        self._deliver(rows)

    def _committed(self, batch: list) -> None:
        last = batch[-1][0]
        if last > self._seen:
            self._seen = last
        if not self._live or self._paused or self._done or last < self.next:
            return
        if batch[0][0] > self.next:
            # Entries between what we sent and this batch were committed while we were
            # paused or paging: fetch them from the store.
            self._notLive()
            self._advance()
        else:
            self._deliver(batch)

    def _deliver(self, rows: list) -> None:
        """
        Send consecutive rows from C{next} on, C{current} in its place, C{head} after K.
        A live batch can be a whole group commit: it is sent a page at a time, and what
        is left when the socket fills up is read from the store again after resuming.
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
        lines = entryLines(rows)
        self.next = first + len(rows)
        currentAt = None
        if not self._current and self.next > self._target:
            # A pull read whose K-th entry is the head ends with head alone, as
            # tcp-log-server does: the head was not reached before the K entries.
            upToTarget = max(0, self._target - first + 1)
            if self._remaining is None or upToTarget < self._remaining:
                lines.insert(upToTarget, CURRENT)
                currentAt = upToTarget
            self._current = True
        if self._acks:
            lines = self._acks.interleave(lines, first, currentAt)
        remaining = self._remaining
        if remaining is not None:
            self._remaining = remaining = remaining - len(rows)
            if remaining == 0:
                lines.append(b'{"head":%d}\n' % max(self._seen, self.next - 1))
        self._transport.write(b"".join(lines))
        if remaining == 0:
            self._finish()

    def _caughtUp(self) -> None:
        if not self._current:
            self._current = True
            self._transport.write(CURRENT)

    def _failed(self, failure) -> None:
        self._fetching = False
        if self._done:
            return
        if failure.check(Trimmed):
            self._transport.write(trimmedNotice(failure.value))
            self.next = max(self.next, failure.value.first)
            self._advance()
            return
        if not failure.check(StoreError):
            self.log.failure("journal read failed", failure)
        self._transport.write(b'{"error":%s}\n' % _json(_errorText(failure)))
        self._finish()

    def _finish(self) -> None:
        ahead = self._ahead
        self.stop()
        self._finished(self, ahead)

    def following(self) -> bool:
        """Whether the next entries this read sends are live ones, as they commit."""
        return self._live and not (self._paused or self._done)

    def _notLive(self) -> None:
        self._live = False
        self._acks.release()

    def stop(self) -> None:
        """End the read: no more pages, no more live entries."""
        self._done = True
        self._acks.release()
        self._ahead = ()
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


@implementer(IPushProducer)
class JournalProtocol(Protocol):
    """
    Per-connection state only: the partial message and the read in progress.

    The connection is its transport's streaming producer: a full send buffer pauses
    both the read and the reading of further requests.
    """

    log = Logger()

    def __init__(self, store, maxEntry: int, clock=None):
        self._store = store
        self._maxEntry = maxEntry
        self._clock = clock
        self._pending = b""
        self._partialSince: float | None = None
        self._deadline = None
        self._closed = False
        self._paused = False
        self._inFlight = 0
        self._writes: list = []     # this chunk's writes, for the store in one batch
        self._writeIds: list = []
        self._quotedIds: list = []
        self._throttled = False   # too many writes wait for the store
        self._closingWith: bytes | None = None  # the error to close with once answered
        self._notReading = False  # the transport is paused, for either reason
        self._ahead: list = []
        self._acks: HeldAcks | None = None
        self.reader: JournalRead | None = None

    def connectionMade(self) -> None:
        self._acks = HeldAcks(self.transport)
        for option in ("setTcpNoDelay", "setTcpKeepAlive"):
            setter = getattr(self.transport, option, None)
            if setter is not None:
                setter(True)
        self.transport.registerProducer(self, True)

    def connectionLost(self, reason=None) -> None:
        self._closed = True
        self._stopReading()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        if self._pending:
            data = self._pending + data
        messages = data.split(b"\n")
        self._pending = messages.pop()
        if self._clock is not None:
            self._timePartial(bool(messages))
        maxEntry = self._maxEntry
        for message in messages:
            if len(message) > maxEntry:
                self._fatal(TOO_LONG)
                return
            self._message(message)
            if self._closed:
                return
        if len(self._pending) > maxEntry:
            self._fatal(TOO_LONG)
        else:
            self._flushWrites()

    def _timePartial(self, completed: bool) -> None:
        """Note when the message still incomplete at the end of this chunk began."""
        if not self._pending:
            self._partialSince = None
        elif completed or self._partialSince is None:
            self._partialSince = self._clock.seconds()
            self._armDeadline()

    def _armDeadline(self) -> None:
        if self._deadline is None:
            self._deadline = self._clock.callLater(MESSAGE_TIMEOUT, self._checkDeadline)

    def _checkDeadline(self) -> None:
        """Close a slow sender; while we do not read (paused), the peer is not late."""
        self._deadline = None
        if self._closed or self._notReading or self._partialSince is None:
            return
        left = self._partialSince + MESSAGE_TIMEOUT - self._clock.seconds()
        if left > 0:
            self._deadline = self._clock.callLater(left, self._checkDeadline)
            return
        self.log.info("{peer}: message incomplete for {s:.0f} s; closing",
                      peer=self.transport.getPeer(), s=MESSAGE_TIMEOUT)
        self._fatal(MESSAGE_TIMED_OUT)

    def _message(self, line: bytes) -> None:
        try:
            message = _decode(line.decode("utf-8"))
        except (ValueError, RecursionError):
            if line.strip():
                self._fatal(INVALID_JSON)
            return
        if message.__class__ is not dict:
            self._reply(INVALID_MESSAGE)
            return
        entry = message.get("entry")
        writeId = message.get("id")
        if entry.__class__ is dict and writeId.__class__ is str and writeId:
            self._write(writeId, entry)
        elif "from" in message:
            self._read(message)
        else:
            self._reply(INVALID_MESSAGE)

    def _write(self, writeId: str, entry: dict) -> None:
        """Queue the write; the writes of one chunk go to the store as one batch."""
        quotedId = _json(writeId)
        try:
            data = canonical(entry)
        except (ValueError, RecursionError):
            self._reply(b'{"id":%s,"error":"entry cannot be stored as UTF-8 JSON"}\n'
                        % quotedId)
            return
        try:
            writeId.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate: the store keeps ids as UTF-8, in a batch with other writes.
            self._reply(b'{"id":%s,"error":"id is not valid Unicode"}\n' % quotedId)
            return
        self._writes.append(data)
        self._writeIds.append(writeId)
        self._quotedIds.append(quotedId)

    def _reply(self, data: bytes) -> None:
        """
        A reply that is not an ack: after the acks of the writes before it, those held
        for the read's next entries too (the ack still precedes its entry).
        """
        self._flushWrites()
        self._acks.release()
        self.transport.write(data)

    def _flushWrites(self) -> None:
        """Hand the queued writes to the store, before anything that must follow them."""
        if not self._writes:
            return
        count = len(self._writes)
        appended = self._store.append(self._writes, self._writeIds)
        appended.addCallbacks(self._acked, self._writeFailed, (self._quotedIds,), None,
                              (self._quotedIds,))
        self._writes, self._writeIds, self._quotedIds = [], [], []
        self._inFlight += count
        if self._inFlight >= MAX_IN_FLIGHT and not self._throttled:
            self._throttled = True
            self._updateReading()

    def _acked(self, indices: list, quotedIds: list) -> None:
        self._landed(len(quotedIds))
        reader = self.reader
        if reader is not None and reader.following():
            # Entries this live read has yet to send: each ack waits for its entry.
            for quotedId, index in zip(quotedIds, indices):
                line = b'{"id":%s,"index":%d}\n' % (quotedId, index)
                if index >= reader.next:
                    self._acks.hold(index, line)
                else:
                    self.transport.write(line)
        else:
            self.transport.write(b"".join([b'{"id":%s,"index":%d}\n' % reply
                                           for reply in zip(quotedIds, indices)]))
        self._closeIfAnswered()

    def _landed(self, count: int) -> None:
        self._inFlight -= count
        if self._throttled and self._inFlight <= MAX_IN_FLIGHT // 2:
            self._throttled = False
            self._updateReading()

    def _updateReading(self) -> None:
        """Read from the socket unless its send buffer is full or too many writes wait."""
        stop = self._paused or self._throttled
        if stop != self._notReading and not self._closed:
            self._notReading = stop
            if stop:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    def _writeFailed(self, failure, quotedIds: list) -> None:
        self._landed(len(quotedIds))
        if failure.check(StoreError):
            self.log.warn("journal write failed: {error}", error=failure.value)
        else:
            self.log.failure("journal write failed", failure)
        error = _json(_errorText(failure))
        self.transport.write(b"".join([b'{"id":%s,"error":%s}\n' % (quotedId, error)
                                       for quotedId in quotedIds]))
        self._closeIfAnswered()

    def _read(self, message: dict) -> None:
        start = message["from"]
        count = message.get("read")
        if (start.__class__ is not int or start < 1
                or ("read" in message and (count.__class__ is not int or count < 1))):
            self._reply(INVALID_MESSAGE)
            return
        if self.reader is not None:
            self._reply(ALREADY_READING)
            return
        self._flushWrites()
        ahead, self._ahead = self._ahead, []
        self.reader = JournalRead(self._store, self.transport, start, count,
                                  self._readFinished, ahead, self._acks)
        self.factory.readers.add(self.reader)
        if self._paused:
            self.reader.pauseProducing()
        self.reader.start()

    def _readFinished(self, reader: JournalRead, ahead: list) -> None:
        """A pull read ended: keep the entries it read beyond K for the next one."""
        self.factory.readers.discard(reader)
        if self.reader is reader:
            self.reader = None
            self._ahead = ahead

    def _stopReading(self) -> None:
        if self.reader is not None:
            self.factory.readers.discard(self.reader)
            self.reader.stop()
            self.reader = None

    def _fatal(self, error: bytes) -> None:
        """
        Stop reading messages and end the read in progress; once every write accepted
        before is answered (ack or error), send C{error} and close.
        """
        self._flushWrites()
        self._closed = True
        self._stopReading()
        if not self._notReading:
            self._notReading = True
            self.transport.pauseProducing()
        self._closingWith = error
        self._closeIfAnswered()

    def _closeIfAnswered(self) -> None:
        if self._closingWith is not None and self._inFlight == 0:
            self.transport.write(self._closingWith)
            self._closingWith = None
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def pauseProducing(self) -> None:
        self._paused = True
        if self.reader is not None:
            self.reader.pauseProducing()
        self._updateReading()

    def resumeProducing(self) -> None:
        self._paused = False
        self._updateReading()
        if self._partialSince is not None and not self._closed and not self._notReading:
            # The peer could not send while we were not reading: its time starts again.
            self._partialSince = self._clock.seconds()
            self._armDeadline()
        if self.reader is not None:
            self.reader.resumeProducing()

    def stopProducing(self) -> None:
        self._closed = True
        self._stopReading()


class JournalFactory(Factory):
    """
    Points every connection at the shared store, and knows the reads in progress.
    Messages get a deadline (L{MESSAGE_TIMEOUT}) only when given a C{clock} to keep it.
    """

    noisy = False
    refusal = b'{"error":"too many connections"}\n'
    """What a connection past C{--max-connections} receives before it is closed."""

    def __init__(self, store, maxEntry: int = 1048576, clock=None):
        self.store = store
        self.maxEntry = maxEntry
        self.clock = clock
        self.readers: set = set()  # reads in progress, for the reader-lag metric

    def buildProtocol(self, addr):
        protocol = JournalProtocol(self.store, self.maxEntry, self.clock)
        protocol.factory = self
        return protocol


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

    def __init__(self, store, producer=None):
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
        if self._paused and self.backlog <= BACKLOG_LOW:
            self._paused = False
            self._producer.resumeProducing()

    def _failed(self, failure, count: int) -> None:
        self._drained(count)
        before, self.failures = self.failures, self.failures + count
        if before == 0 or before // 10000 != self.failures // 10000:
            self.log.warn("journal lines: {n} appends failed so far; last: {error}",
                          n=self.failures, error=failure.getErrorMessage())
