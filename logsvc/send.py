"""
C{logsvc-send NAME}: standard input's lines as C{LOG} lines under C{IAM NAME}, as
C{logger(1)} sends them to syslog (C{make 2>&1 | logsvc-send build-42}).

Exit 0 once every line was sent and the server closed the connection after reading
them all; otherwise one line on stderr and exit 1 (server down, name refused,
connection lost); bad arguments exit 2.  Standard input is read in a thread, a chunk
at a time, and not faster than the connection takes it, so any input costs bounded
memory.
"""

import argparse
import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import react
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from zope.interface import implementer

from . import __version__
from .errors import oneLine
from .handler import checkKey, checkName
from .options import localEndpoint

CHUNK = 1 << 16


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line and exit 2, not the whole usage text."""
        self.exit(2, f"logsvc-send: {message} (see logsvc-send --help)\n")


def _name(value: str) -> str:
    try:
        return checkName(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def _assignment(value: str) -> tuple:
    key, equals, rest = value.partition("=")
    try:
        if not equals:
            raise ValueError(f"not KEY=VALUE: {value!r}")
        checkKey(key)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    return key, " ".join(rest.split())


def parseArguments(argv: list | None = None) -> dict:
    parser = _Parser(prog="logsvc-send", description=(
        "Send standard input's lines to logsvc's line service as LOG lines of client "
        "NAME, after any --set KEY=VALUE state."))
    parser.add_argument("name", metavar="NAME", type=_name, help="client name")
    parser.add_argument("--connect", "-c", default="tcp:127.0.0.1:2212", type=localEndpoint,
                        metavar="ENDPOINT",
                        help="line service endpoint (a Twisted client endpoint string; "
                             "a bare number means tcp:127.0.0.1:N); default %(default)s")
    parser.add_argument("--set", action="append", default=[], type=_assignment,
                        metavar="KEY=VALUE", help="state to send first (repeatable)")
    parser.add_argument("--version", action="version", version=f"logsvc-send {__version__}")
    return vars(parser.parse_args(argv))


class SendFailed(Exception):
    """Ends the run with this one line and exit 1."""


class _Transport(ITCPTransport, IConsumer):
    """What L{SendProtocol} uses of its transport (TCP or TLS), for the type checker."""


@implementer(IPushProducer)
class SendProtocol(Protocol):
    """
    Sends IAM and state at once, then what L{run} reads from standard input; the
    transport pauses it when its buffer is full.  C{done} fires when the connection is
    closed, C{reason} saying how.
    """

    transport: _Transport

    def __init__(self, name: str, state: list):
        self._name = name
        self._state = state
        self._resumed: Deferred | None = None
        self.paused = False
        self.refusal = b""
        self.finished = False
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.transport.write(f"IAM {self._name}\n".encode() + b"".join(
            f"SET {key} {value}\n".encode() for key, value in self._state))

    def dataReceived(self, data: bytes) -> None:
        # The line service only ever answers "ERR reason", then closes.
        self.refusal += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._resumed is not None:
            resumed, self._resumed = self._resumed, None
            resumed.callback(None)
        self.reason = reason
        self.done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self._resumed is not None:
            resumed, self._resumed = self._resumed, None
            resumed.callback(None)

    def stopProducing(self) -> None:
        pass

    def writable(self) -> Deferred | None:
        """None when lines may be written now, else a Deferred for when they may."""
        if not self.paused:
            return None
        self._resumed = Deferred()
        return self._resumed

    def finish(self) -> None:
        """Everything is written: half-close, so the server closes after reading it all."""
        self.finished = True
        try:
            self.transport.loseWriteConnection()
        except (AttributeError, NotImplementedError):
            self.transport.loseConnection()


def logLines(data: bytes, pending: bytes) -> tuple[bytes, bytes]:
    """C{LOG} lines for C{data}'s complete lines, and the incomplete rest."""
    lines = (pending + data).split(b"\n")
    rest = lines.pop()
    if not lines:
        return b"", rest
    return b"LOG " + b"\nLOG ".join(lines) + b"\n", rest


async def run(reactor, options: dict, stdin) -> None:
    description = options["connect"]
    try:
        endpoint = clientFromString(reactor, description)
    except (ValueError, TypeError, KeyError) as e:
        raise SendFailed(f"malformed --connect {description!r}: {e}")
    protocol = SendProtocol(options["name"], options["set"])
    try:
        await connectProtocol(endpoint, protocol)
    except Exception as e:
        raise SendFailed(f"cannot connect to {description}: {oneLine(e)}")
    pending = b""
    while not protocol.done.called:
        data = await deferToThread(stdin.read1, CHUNK)
        if protocol.done.called:
            break
        if not data:
            if pending:
                protocol.transport.write(b"LOG " + pending + b"\n")
            protocol.finish()
            break
        lines, pending = logLines(data, pending)
        if lines:
            protocol.transport.write(lines)
        waiting = protocol.writable()
        if waiting is not None:
            await waiting
    await protocol.done
    reason = protocol.reason
    if protocol.refusal:
        text = protocol.refusal.decode("utf-8", "replace").strip()
        raise SendFailed(f"server refused: {text.removeprefix('ERR ')}")
    if not reason.check(ConnectionDone):
        raise SendFailed(f"connection lost: {reason.getErrorMessage()}")
    if not protocol.finished:
        raise SendFailed("the server closed the connection before every line was sent")


def main(argv: list | None = None) -> None:
    options = parseArguments(argv)

    async def start(reactor):
        try:
            await run(reactor, options, sys.stdin.buffer)
        except SendFailed as e:
            sys.stderr.write(f"logsvc-send: {e}\n")
            raise SystemExit(1)

    react(lambda reactor: Deferred.fromCoroutine(start(reactor)))


if __name__ == "__main__":
    main()
