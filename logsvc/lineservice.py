"""
The line service (logatron protocol): ``IAM <name>``, then ``LOG`` and ``SET`` lines.
"""

import re

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from .errors import NameInUse
from .interfaces import IClientRegistry
from .producers import IPausableTransport, PausableFactory
from .registry import ClientRecord

IDENTIFY_TIMEOUT = 30.0

_NAME = re.compile(rb"[A-Za-z0-9_.\-]{1,128}\Z")
_SET = re.compile(r"SET[ \t]+([A-Za-z0-9_]+)(?:[ \t](.*))?\Z", re.S)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class LineProtocol(LineReceiver):
    """
    Per-connection state only: the partial line, the skip flag and the record.

    The IAM line is read in line mode, at most C{MAX_LENGTH} (C{--max-line}) bytes.
    Once identified the connection switches to raw mode, as twisted.web does for a
    body: C{rawDataReceived} splits each received chunk with one C{bytes.split} and
    hands runs of LOG lines to the registry at once, where line mode would make a
    Python call per line.
    """

    log = Logger()
    transport: IPausableTransport
    delimiter = b"\n"
    record: ClientRecord | None = None
    _refused = False
    _lost = False
    _timeout: IDelayedCall | None = None

    def __init__(self, registry: IClientRegistry, clock: IReactorTime, maxLine: int):
        self._registry = registry
        self._clock = clock
        self.MAX_LENGTH = maxLine
        self._pending = b""  # raw mode: the last, still open line
        self._skipping = False  # raw mode: the rest of a cut line is being discarded

    def connectionMade(self) -> None:
        self.factory.connected(self)
        self._timeout = self._clock.callLater(IDENTIFY_TIMEOUT, self._identifyTimedOut)

    def connectionLost(self, reason=None) -> None:
        self._lost = True
        self.factory.disconnected(self)
        self._cancelTimeout()
        if self.record is not None:
            self._registry.disconnect(self.record)
            self.log.info("{name} disconnected", name=self.record.name)

    def _cancelTimeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _identifyTimedOut(self) -> None:
        self._timeout = None
        self.log.info("{peer} sent no IAM within {s:.0f} s; closing",
                      peer=self.transport.getPeer(), s=IDENTIFY_TIMEOUT)
        self._refuse("identify within 30 seconds")

    def _refuse(self, reason: str) -> None:
        self.transport.write(b"ERR " + reason.encode() + b"\n")
        self.transport.loseConnection()
        self._refused = True

    def lineReceived(self, line: bytes) -> None:
        """The first line: IAM, then raw mode for the rest once the name is claimed."""
        if not self._refused:
            self._identify(line, len(line) + 1)

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A first line over C{MAX_LENGTH}: judged as IAM whole if it has ended, else by
        its head while the rest of it is skipped.  LineReceiver hands over everything
        it held, so what follows a complete first line is read in raw mode here.
        """
        if self._refused:
            return
        first, newline, rest = line.partition(b"\n")
        if newline:
            self._identify(first, len(first) + 1, rest)
        else:
            self._identify(line[: self.MAX_LENGTH], len(line), skipping=True)

    def rawDataReceived(self, data: bytes) -> None:
        """Every line after IAM, a received chunk at a time."""
        assert self.record is not None  # raw mode starts once IAM has connected a record
        self.record.bytes += len(data)
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            self._skipping = False
            data = data[end + 1:]
        if self._pending:
            data = self._pending + data
        lines = data.split(b"\n")
        rest = lines.pop()
        if len(rest) > self.MAX_LENGTH:
            # Over-long line still open: keep its head as a truncated line, skip the rest.
            self._pending = b""
            self._skipping = True
            self._handle(lines, rest[: self.MAX_LENGTH])
        else:
            self._pending = rest
            if lines:
                self._handle(lines, None)

    def _handle(self, lines: list, truncatedTail: bytes | None) -> None:
        now = self._clock.seconds()
        maxLine = self.MAX_LENGTH
        if lines and len(max(lines, key=len)) > maxLine:
            for line in lines:
                if len(line) > maxLine:
                    self._truncated(now, line[:maxLine])
                else:
                    self._commands(now, [line])
        elif lines:
            self._commands(now, lines)
        if truncatedTail is not None:
            self._truncated(now, truncatedTail)

    def _identify(self, line: bytes, received: int, rest: bytes = b"",
                  skipping: bool = False) -> None:
        """
        Claim the name C{line} gives, counting the C{received} bytes that sent it;
        C{rest} follows in raw mode, after the rest of an over-long IAM line if
        C{skipping}.  While another node is asked, the connection is paused and what
        arrives meanwhile waits in LineReceiver's buffer.
        """
        self._cancelTimeout()
        if line[-1:] == b"\r":
            line = line[:-1]
        if not line.startswith(b"IAM "):
            self.log.info("{peer} refused: first line is not IAM", peer=self.transport.getPeer())
            self._refuse("expected IAM <name>")
            return
        raw = line[4:].strip()
        if not _NAME.match(raw):
            self.log.info("{peer} refused: invalid name", peer=self.transport.getPeer())
            self._refuse("invalid name: 1-128 of letters, digits, _ - .")
            return
        name = raw.decode("ascii")
        claimed = self._registry.claim(name)
        claimed.addCallbacks(self._claimed, self._inUse, callbackArgs=(received, rest, skipping),
                             errbackArgs=(name,))
        if not claimed.called:
            self.pauseProducing()
            claimed.addBoth(self._answered)

    def _claimed(self, record: ClientRecord, received: int, rest: bytes, skipping: bool) -> None:
        self.record = record
        record.bytes += received
        self.log.info("{name} connected from {peer}", name=record.name,
                      peer=self.transport.getPeer())
        if self._lost:
            self._registry.disconnect(record)
            return
        self.setRawMode()
        self._skipping = skipping
        if rest:
            self.rawDataReceived(rest)

    def _inUse(self, failure: Failure, name: str) -> None:
        failure.trap(NameInUse)
        self.log.info("{peer} refused: {name} is already connected",
                      peer=self.transport.getPeer(), name=name)
        self._refuse(f"name in use: {name}")

    def _answered(self, result: object) -> object:
        """The claim has its answer: read again, held bytes first."""
        self.paused = False
        if not (self._refused or self._lost):
            if not self.factory.paused:
                self.transport.resumeProducing()
            self.dataReceived(b"")
        return result

    def _truncated(self, now: float, head: bytes) -> None:
        assert self.record is not None  # lines after IAM only
        self.log.info("{name}: line longer than {n} bytes truncated",
                      name=self.record.name, n=self.MAX_LENGTH)
        if head.startswith(b"LOG ") or head == b"LOG":
            self._registry.log(self.record, now, [_text(head[4:]).strip()], truncated=True)
        else:
            self.record.truncated += 1
            self._commands(now, [head])

    def _commands(self, now: float, lines: list) -> None:
        """Handle complete lines; runs of LOG lines go to the registry together."""
        registry = self._registry
        record = self.record
        assert record is not None  # lines after IAM only
        logs = [line for line in lines if line[:4] == b"LOG "]
        if len(logs) == len(lines):
            self._logs(now, logs)
            return
        run: list = []
        for line in lines:
            if line[:4] == b"LOG ":
                run.append(line)
                continue
            if run:
                self._logs(now, run)
                run = []
            if line[-1:] == b"\r":
                line = line[:-1]
            if line == b"LOG":
                registry.log(record, now, [""])
            elif line[:4] == b"SET " or line[:4] == b"SET\t":
                match = _SET.match(_text(line))
                if match is None:
                    record.ignored += 1
                else:
                    registry.set(record, now, match.group(1), (match.group(2) or "").strip())
            else:
                record.ignored += 1
        if run:
            self._logs(now, run)

    def _logs(self, now: float, lines: list) -> None:
        received = len(lines)
        if not self._registry.observed:
            lines = lines[-self._registry.bufferSize:]
        # Decoded inline, as _text() does: this runs once per line.
        self._registry.log(self.record, now,
                           [line[4:].decode("utf-8", "replace").strip() for line in lines],
                           received)


class LineFactory(PausableFactory):
    """
    Holds what every connection shares: the registry, the clock and C{--max-line}.

    It is also the push producer of all line traffic: the journal pauses it while its
    backlog is high, and every connection then stops reading from its socket, so TCP
    slows the clients down instead of the server buffering without bound.
    """

    refusal = b"ERR too many connections\n"
    """What a connection past C{--max-connections} receives before it is closed."""

    def __init__(self, registry: IClientRegistry, clock: IReactorTime, maxLine: int = 65536):
        super().__init__()
        self.registry = registry
        self.clock = clock
        self.maxLine = maxLine

    def buildProtocol(self, addr: IAddress | None) -> LineProtocol:
        protocol = LineProtocol(self.registry, self.clock, self.maxLine)
        protocol.factory = self
        return protocol
