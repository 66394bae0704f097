"""
The journal listener (tcp-log-server protocol): NDJSON writes acknowledged once durable,
reads that replay the store and then follow it live, with per-connection flow control.
"""

import json
from bisect import insort

from twisted.internet.interfaces import (
    IAddress, IConsumer, IDelayedCall, IPushProducer, IReactorTime, ITCPTransport, ITransport)
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import StoreError, Trimmed
from ..interfaces import IJournalStore
from ..options import positive
from ..reader import JournalReader
from ..store import canonical
from .lines import entryLines, quoted

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


def _rejectConstant(name: str):
    raise ValueError(f"{name} is not JSON")


# One decoder for every message: json.loads would build a new one per call when given
# options, and NaN/Infinity are not JSON.
_decode = json.JSONDecoder(parse_constant=_rejectConstant).decode


def _errorText(failure: Failure) -> str:
    if failure.check(StoreError):
        return str(failure.value) or "store error"
    return "internal error"


def trimmedNotice(trimmed: Trimmed) -> bytes:
    """
    What a reader is told before the first entry after a gap retention made: no
    top-level C{head}, C{index} or C{current}, which tcp-log-client would take for the
    end of a pull read, an entry's error or being caught up.
    """
    return b'{"trimmed":{"first":%d,"head":%d}}\n' % (trimmed.first, trimmed.head)


class HeldAcks:
    """
    Acknowledgements of one connection's writes whose entries its live read is about
    to send: each goes out just before its entry.  tcp-log-server handles one write at
    a time, so its clients see C{ack 1, entry 1, ack 2, entry 2}; a group commit
    acknowledges both writes before either entry reaches the read.
    """

    def __init__(self, transport: ITransport):
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


class ReadReplies:
    """
    What one read on a connection sends (a L{ReadSink}): NDJSON entry lines,
    C{current}, C{head}, trimmed notices and errors, with the connection's held acks
    each just before its entry.
    """

    log = Logger()

    def __init__(self, transport: ITransport, acks: HeldAcks, finished):
        self._transport = transport
        self._acks = acks
        self._finished = finished

    def entries(self, rows: list, currentAt: int | None, head: int | None) -> int:
        lines = entryLines(rows)
        if currentAt is not None:
            lines.insert(currentAt, CURRENT)
        if self._acks:
            lines = self._acks.interleave(lines, rows[0][0], currentAt)
        if head is not None:
            lines.append(b'{"head":%d}\n' % head)
        self._transport.write(b"".join(lines))
        return len(rows)

    def caughtUp(self) -> None:
        self._transport.write(CURRENT)

    def live(self) -> None:
        """Acks of entries the read is to send wait for them (L{JournalProtocol._acked})."""

    def notLive(self) -> None:
        self._acks.release()

    def waiting(self) -> None:
        """The entries are read from the store when the read goes on."""

    def trimmed(self, trimmed: Trimmed) -> None:
        self._transport.write(trimmedNotice(trimmed))

    def finished(self, reader: JournalReader, ahead: list, failure: Failure | None) -> None:
        if failure is not None:
            if not failure.check(StoreError):
                self.log.failure("journal read failed", failure)
            self._transport.write(b'{"error":%s}\n' % quoted(_errorText(failure)))
        self._finished(reader, ahead)


class _Transport(ITCPTransport, IConsumer, IPushProducer):
    """What L{JournalProtocol} uses of its transport (TCP or TLS), for the type checker."""


@implementer(IPushProducer)
class JournalProtocol(Protocol):
    """
    Per-connection state only: the partial message and the read in progress.

    The connection is its transport's streaming producer: a full send buffer pauses
    both the read and the reading of further requests.
    """

    log = Logger()
    transport: _Transport
    _acks: HeldAcks  # set in connectionMade

    def __init__(self, store: IJournalStore, maxEntry: int, clock: IReactorTime):
        self._store = store
        self._maxEntry = maxEntry
        self._clock = clock
        self._pending = b""
        self._partialSince: float | None = None
        self._deadline: IDelayedCall | None = None
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
        self.reader: JournalReader | None = None

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
        quotedId = quoted(writeId)
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
        error = quoted(_errorText(failure))
        self.transport.write(b"".join([b'{"id":%s,"error":%s}\n' % (quotedId, error)
                                       for quotedId in quotedIds]))
        self._closeIfAnswered()

    def _read(self, message: dict) -> None:
        start = message["from"]
        count = message.get("read")
        if positive(start) is None or ("read" in message and positive(count) is None):
            self._reply(INVALID_MESSAGE)
            return
        if self.reader is not None:
            self._reply(ALREADY_READING)
            return
        self._flushWrites()
        ahead, self._ahead = self._ahead, []
        replies = ReadReplies(self.transport, self._acks, self._readFinished)
        self.reader = JournalReader(self._store, replies, start, count, ahead)
        self.factory.readers.add(self.reader)
        if self._paused:
            self.reader.pauseProducing()
        self.reader.start()

    def _readFinished(self, reader: JournalReader, ahead: list) -> None:
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


class JournalFactory(ServerFactory):
    """
    The shared objects every connection uses: the store, the clock that keeps message
    deadlines (L{MESSAGE_TIMEOUT}) and the longest message; and the reads in progress.
    """

    noisy = False
    refusal = b'{"error":"too many connections"}\n'
    """What a connection past C{--max-connections} receives before it is closed."""

    def __init__(self, store: IJournalStore, maxEntry: int, clock: IReactorTime):
        self.store = store
        self.maxEntry = maxEntry
        self.clock = clock
        self.readers: set = set()  # reads in progress, for the reader-lag metric

    def buildProtocol(self, addr: IAddress | None) -> JournalProtocol:
        protocol = JournalProtocol(self.store, self.maxEntry, self.clock)
        protocol.factory = self
        return protocol
