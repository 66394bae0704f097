"""
The line service (logatron protocol): ``IAM <name>``, then ``LOG`` and ``SET`` lines.

The hot path splits whole received chunks with C{bytes.split} instead of
LineReceiver's per-line callbacks, and hands runs of LOG lines to the registry at once.
"""

import re

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from .errors import NameInUse
from .producers import PausableFactory

IDENTIFY_TIMEOUT = 30.0

_NAME = re.compile(rb"[A-Za-z0-9_.\-]{1,128}\Z")
_SET = re.compile(r"SET[ \t]+([A-Za-z0-9_]+)(?:[ \t](.*))?\Z", re.S)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class LineProtocol(Protocol):
    """Per-connection state only: the partial line, the skip flag and the record."""

    log = Logger()

    def __init__(self, registry, clock, maxLine: int):
        self._registry = registry
        self._clock = clock
        self._maxLine = maxLine
        self._pending = b""
        self._skipping = False
        self._timeout = None
        self.record = None

    def connectionMade(self) -> None:
        self.factory.connected(self)
        self._timeout = self._clock.callLater(IDENTIFY_TIMEOUT, self._identifyTimedOut)

    def connectionLost(self, reason=None) -> None:
        self._lost = True
        self.factory.disconnected(self)
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        if self.record is not None:
            self._registry.disconnect(self.record)
            self.log.info("{name} disconnected", name=self.record.name)

    def _identifyTimedOut(self) -> None:
        self._timeout = None
        self.log.info("{peer} sent no IAM within {s:.0f} s; closing",
                      peer=self.transport.getPeer(), s=IDENTIFY_TIMEOUT)
        self._refuse("identify within 30 seconds")

    def _refuse(self, reason: str) -> None:
        self.transport.write(b"ERR " + reason.encode() + b"\n")
        self.transport.loseConnection()
        self._dead = True

    _dead = False
    _unattributed = 0  # bytes received before IAM, counted once the name is known
    _held = None       # while the name's claim is on its way: what came meanwhile
    _lost = False

    def dataReceived(self, data: bytes) -> None:
        if self._dead:
            return
        if self._held is not None:
            self._held.append(lambda: self.dataReceived(data))
            return
        if self.record is not None:
            self.record.bytes += len(data)
        else:
            self._unattributed += len(data)
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
        if len(rest) > self._maxLine:
            # Over-long line still open: keep its head as a truncated line, skip the rest.
            self._pending = b""
            self._skipping = True
            self._handle(lines, rest[: self._maxLine])
        else:
            self._pending = rest
            if lines:
                self._handle(lines, None)

    def _handle(self, lines: list, truncatedTail: bytes | None) -> None:
        now = self._clock.seconds()
        maxLine = self._maxLine
        if self.record is None:
            if not lines:
                # A first line longer than any name can be: refuse it now.
                self._identify(truncatedTail)
                return
            if not self._identify(lines[0]):
                if self._held is not None:
                    self._held.append(lambda: self._handle(lines[1:], truncatedTail))
                return
            del lines[0]
        if lines and len(max(lines, key=len)) > maxLine:
            for line in lines:
                if len(line) > maxLine:
                    self._truncated(now, line[:maxLine])
                else:
                    self._commands(now, [line])
        elif lines:
            self._commands(now, lines)
        if truncatedTail is not None and self.record is not None:
            self._truncated(now, truncatedTail)

    def _identify(self, line: bytes) -> bool:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        if line[-1:] == b"\r":
            line = line[:-1]
        if not line.startswith(b"IAM "):
            self.log.info("{peer} refused: first line is not IAM", peer=self.transport.getPeer())
            self._refuse("expected IAM <name>")
            return False
        name = line[4:].strip()
        if not _NAME.match(name):
            self.log.info("{peer} refused: invalid name", peer=self.transport.getPeer())
            self._refuse("invalid name: 1-128 of letters, digits, _ - .")
            return False
        name = name.decode("ascii")
        claimed = self._registry.claim(name).addCallbacks(self._claimed, self._inUse,
                                                          errbackArgs=(name,))
        if self.record is None and not self._dead:
            # Another node is asked (off the reactor): hold what comes meanwhile.
            self._held = []
            self.transport.pauseProducing()
            claimed.addCallback(self._release)
        return self.record is not None

    def _claimed(self, record) -> None:
        self.record = record
        record.bytes += self._unattributed
        self.log.info("{name} connected from {peer}", name=record.name,
                      peer=self.transport.getPeer())
        if self._lost:
            self._registry.disconnect(record)

    def _inUse(self, failure, name: str) -> None:
        failure.trap(NameInUse)
        self.log.info("{peer} refused: {name} is already connected",
                      peer=self.transport.getPeer(), name=name)
        self._refuse(f"name in use: {name}")

    def _release(self, _) -> None:
        held, self._held = self._held, None
        if self._dead or self._lost:
            return
        if not self.factory.paused:
            self.transport.resumeProducing()
        for then in held:
            then()

    def _truncated(self, now: float, head: bytes) -> None:
        self.log.info("{name}: line longer than {n} bytes truncated",
                      name=self.record.name, n=self._maxLine)
        if head.startswith(b"LOG ") or head == b"LOG":
            self._registry.log(self.record, now, [_text(head[4:]).strip()], truncated=True)
        else:
            self.record.truncated += 1
            self._commands(now, [head])

    def _commands(self, now: float, lines: list) -> None:
        """Handle complete lines; runs of LOG lines go to the registry together."""
        registry = self._registry
        record = self.record
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
    Points every connection at the shared registry; holds no per-client state.

    It is also the push producer of all line traffic: the journal pauses it while its
    backlog is high, and every connection then stops reading from its socket, so TCP
    slows the clients down instead of the server buffering without bound.
    """

    def __init__(self, registry, clock, maxLine: int = 65536):
        super().__init__()
        self.registry = registry
        self.clock = clock
        self.maxLine = maxLine

    def buildProtocol(self, addr):
        protocol = LineProtocol(self.registry, self.clock, self.maxLine)
        protocol.factory = self
        return protocol

