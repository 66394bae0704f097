"""
Sending a Python program's logs to logsvc's line service: a stdlib C{logging} handler
and a C{twisted.logger} observer built on it.

Importing this module needs only the standard library (Twisted is imported by
L{observer} alone), so any Python program can use the handler.

A program that logs is never slowed down or crashed by its log server: C{emit}
only formats the record and appends it to a bounded in-memory queue; a background
thread connects, sends C{IAM name}, then the queued lines, and reconnects with
backoff when the server is down or refuses the name.  While it cannot send, the queue
keeps the newest C{queueSize} lines and counts the older ones it drops; the next line
sent after a drop says how many were lost.

Each message is one C{LOG} line, escaped so that multi-line messages and tracebacks
stay one record and the line service's trimming loses nothing: a backslash becomes
C{\\\\}, LF C{\\n}, CR C{\\r}, tab C{\\t}, any other control character C{\\xHH},
and whitespace at either end C{\\xHH} or C{\\uHHHH}.  L{decode} reverses it.
"""

import logging
import re
import socket
import threading
import time
from collections import deque

DEFAULT_QUEUE_SIZE = 10000
"""Lines kept while the server cannot be reached."""

BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
"""Seconds before the first reconnection attempt, doubled after each failure up to the max."""

CONFIRM_SECONDS = 0.3
"""
How long after C{IAM} the sender waits for an C{ERR} before sending lines: the line
service answers only refusals, and lines sent to a refused name would be lost.
"""

CONNECT_TIMEOUT = 5.0
SEND_TIMEOUT = 30.0
"""A send blocked this long (a server that stopped reading) drops the connection."""

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}\Z")
_KEY = re.compile(r"[A-Za-z0-9_]+\Z")
_ESCAPED = re.compile(r"[\\\x00-\x1f\x7f]")
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|(.))", re.S)
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def _escapeOne(match) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"\\x{ord(char):02x}"


def _escapeSpace(char: str) -> str:
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def encode(message: str) -> str:
    """One line the line service stores unchanged (see the module docstring)."""
    text = _ESCAPED.sub(_escapeOne, message)
    if len(text.strip()) == len(text):
        return text
    start = len(text) - len(text.lstrip())
    end = max(start, len(text.rstrip()))
    return ("".join(map(_escapeSpace, text[:start])) + text[start:end]
            + "".join(map(_escapeSpace, text[end:])))


def _unescapeOne(match) -> str:
    hexCode = match.group(1) or match.group(2)
    if hexCode:
        return chr(int(hexCode, 16))
    return _UNESCAPES.get(match.group(3), match.group())


def decode(line: str) -> str:
    """The original message of a line that L{encode} made (as read back from logsvc)."""
    return _ESCAPE.sub(_unescapeOne, line)


def checkName(name: str) -> str:
    """The line service's name rule; ValueError naming it otherwise."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"invalid client name {name!r}: 1-128 of letters, digits, _ - .")
    return name


def checkKey(key: str) -> str:
    """The line service's rule for state keys; ValueError naming it otherwise."""
    if not isinstance(key, str) or not _KEY.match(key) or not key.isascii():
        raise ValueError(f"invalid state key {key!r}: letters, digits and _")
    return key


class _Refused(Exception):
    """The server answered ERR (or closed) instead of taking the connection."""


class LogsvcHandler(logging.Handler):
    """
    A C{logging.Handler} that sends each record, formatted with the handler's
    formatter, as a C{LOG} line under C{IAM name}.

    C{emit} never blocks and never raises; C{flush()} and C{close()} (which
    C{logging.shutdown} calls at interpreter exit) wait at most C{timeout} seconds for
    the queue to be sent.  C{dropped} counts lines lost to a full queue since start.
    A line in flight when a connection breaks may be lost, or sent twice: the line
    service does not acknowledge lines.
    """

    flushOnClose = False  # logging.shutdown: close() alone sends what is queued

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 2212,
                 level: int = logging.NOTSET, queueSize: int = DEFAULT_QUEUE_SIZE,
                 timeout: float = 5.0):
        super().__init__(level)
        self.clientName = checkName(name)
        self.address = (host, port)
        self.timeout = timeout
        self.dropped = 0
        self.connected = False
        self._queue: deque = deque()
        self._queueSize = queueSize
        self._unreported = 0  # drops not yet announced to the server
        self._state: dict = {}
        self._closing = False
        self._wake = threading.Condition()
        self._sent = 0  # lines handed to the socket, for flush()
        self._added = 0
        self._thread = threading.Thread(target=self._run, name=f"logsvc-handler-{name}",
                                        daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.sendMessage(message)

    def sendMessage(self, message: str) -> None:
        """Queue one message as it is, without a record (how the observer sends events)."""
        self._put(b"LOG " + encode(message).encode("utf-8", "backslashreplace") + b"\n")

    def setState(self, key: str, value) -> None:
        """
        Send C{SET key value} (runs of whitespace in the value become one space); the
        latest value of every key is sent again after each reconnection, since the
        server starts a connection's state empty.  A bad key is a ValueError.
        """
        checkKey(key)
        value = " ".join(str(value).split())
        with self._wake:
            self._state[key] = value
        self._put(f"SET {key} {value}\n".encode("utf-8", "backslashreplace"))

    def _put(self, line: bytes) -> None:
        with self._wake:
            self._added += 1
            if self._closing and not self._thread.is_alive():
                self.dropped += 1
                return
            if len(self._queue) >= self._queueSize:
                self._queue.popleft()
                self.dropped += 1
                self._unreported += 1
            self._queue.append(line)
            self._wake.notify()

    def flush(self) -> None:
        """Wait, at most C{timeout} seconds, until what is queued now was sent (or dropped)."""
        deadline = time.monotonic() + self.timeout
        with self._wake:
            target = self._added
            while self._sent + self.dropped < target and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._wake.wait(min(left, 0.05))

    def close(self) -> None:
        """Send what is queued (within C{timeout} seconds), then disconnect cleanly."""
        with self._wake:
            if self._closing:
                return
            self._closing = True
            self._deadline = time.monotonic() + self.timeout
            self._wake.notify_all()
        self._thread.join(max(0.0, self._deadline - time.monotonic()) + 0.5)
        super().close()

    # The sender thread.

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            if self._closing and (not self._queue or time.monotonic() > self._deadline):
                return
            try:
                sock = self._connect()
            except (OSError, _Refused):
                if self._closing and time.monotonic() > self._deadline:
                    return
                self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            self.connected = True
            try:
                self._send(sock)
            except (OSError, _Refused):
                pass
            finally:
                self.connected = False
                sock.close()

    def _sleep(self, seconds: float) -> None:
        with self._wake:
            if self._closing:
                seconds = min(seconds, max(0.0, self._deadline - time.monotonic()))
            self._wake.wait(seconds)

    def _connect(self) -> socket.socket:
        timeout = CONNECT_TIMEOUT
        if self._closing:
            timeout = min(timeout, max(0.01, self._deadline - time.monotonic()))
        sock = socket.create_connection(self.address, timeout=timeout)
        try:
            sock.settimeout(SEND_TIMEOUT)
            with self._wake:
                state = b"".join(f"SET {k} {v}\n".encode("utf-8", "backslashreplace")
                                 for k, v in self._state.items())
            sock.sendall(f"IAM {self.clientName}\n".encode() + state)
            sock.settimeout(CONFIRM_SECONDS)
            try:
                answer = sock.recv(4096)
            except socket.timeout:
                answer = None
            if answer is not None:
                raise _Refused(answer.decode("utf-8", "replace").strip())
            sock.settimeout(SEND_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        return sock

    def _send(self, sock: socket.socket) -> None:
        """Send batches until the connection breaks or the handler is closed and drained."""
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait(1.0)
                    if not self._queue:
                        self._check(sock)
                if not self._queue:
                    self._finish(sock)
                    return
                batch = list(self._queue)
                self._queue.clear()
                unreported, self._unreported = self._unreported, 0
            payload = b"".join(batch)
            if unreported:
                payload = (b"LOG [logsvc.handler] %d earlier records dropped: the queue "
                           b"was full while the server could not be reached\n"
                           % unreported) + payload
            try:
                self._check(sock)
                sock.sendall(payload)
            except BaseException:
                self._putBack(batch, unreported)
                raise
            with self._wake:
                self._sent += len(batch)
                self._wake.notify_all()
            if self._closing and time.monotonic() > self._deadline:
                self._finish(sock)
                return

    def _putBack(self, batch: list, unreported: int) -> None:
        """A batch not sent goes back ahead of newer lines, the oldest dropped if full."""
        with self._wake:
            self._queue.extendleft(reversed(batch))
            excess = max(0, len(self._queue) - self._queueSize)
            for _ in range(excess):
                self._queue.popleft()
            self.dropped += excess
            self._unreported += unreported + excess

    @staticmethod
    def _check(sock: socket.socket) -> None:
        """Raise if the server has answered (ERR) or closed since we last looked."""
        sock.setblocking(False)
        try:
            answer = sock.recv(4096)
        except BlockingIOError:
            return
        finally:
            sock.settimeout(SEND_TIMEOUT)
        raise _Refused(answer.decode("utf-8", "replace").strip() or "server closed")

    def _finish(self, sock: socket.socket) -> None:
        """Half-close and wait for the server's close, so it has read every line."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(max(0.01, self._deadline - time.monotonic()))
            while sock.recv(4096):
                pass
        except OSError:
            pass


class _Observer:
    """A C{twisted.logger} observer that sends each event through a L{LogsvcHandler}."""

    def __init__(self, handler: LogsvcHandler, eventAsText):
        self.handler = handler
        self._eventAsText = eventAsText

    def __call__(self, event: dict) -> None:
        try:
            text = self._eventAsText(event, includeTimestamp=False)
        except Exception:
            return
        self.handler.sendMessage(text)


def observer(name: str, host: str = "127.0.0.1", port: int = 2212, **options) -> _Observer:
    """
    A C{twisted.logger} log observer (for C{globalLogBeginner.beginLoggingTo} or
    C{Logger(observer=...)}) that sends each event as C{[system#level] text}, a
    failure's traceback included, through a L{LogsvcHandler} built from the same
    arguments; its C{handler} attribute gives C{setState}, C{flush} and C{close}.
    """
    from twisted.logger import ILogObserver, eventAsText
    from zope.interface import directlyProvides

    watcher = _Observer(LogsvcHandler(name, host, port, **options), eventAsText)
    directlyProvides(watcher, ILogObserver)
    return watcher
