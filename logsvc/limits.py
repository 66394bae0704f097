"""
Connection limits and slow-peer deadlines that every listener shares.

A listener's factory is wrapped once, in L{LogService.addListener}: past
C{--max-connections} open connections, a new one gets a single refusal in its
protocol's language and is closed, so a flood costs a file descriptor for a moment
rather than memory for as long as the peer likes.  HTTP gets a deadline for each request
head, because twisted.web's idle timeout restarts with every byte received.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Site

DEFAULT_MAX_CONNECTIONS = 10000
"""Open connections per listener (Redis's C{maxclients} default)."""

HEAD_TIMEOUT = 30.0
"""Seconds an HTTP client has from the first byte of a request to its blank line."""

_HTTP_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\n"
                 b"Content-Type: text/plain; charset=utf-8\r\n"
                 b"Content-Length: 21\r\n"
                 b"Connection: close\r\n\r\n"
                 b"too many connections\n")

REFUSALS = {
    "port": b"ERR too many connections\n",
    "journal": b'{"error":"too many connections"}\n',
    "http": _HTTP_REFUSAL,
    "pb": b"",  # Banana has no message a client would show before login: just close.
}
"""What a connection over the limit receives, by listener name."""

_HEAD_TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\n"
                   b"Content-Type: text/plain; charset=utf-8\r\n"
                   b"Content-Length: 16\r\n"
                   b"Connection: close\r\n\r\n"
                   b"request timeout\n")


class _Refusal(Protocol):
    """Says why, then closes; never registered, so it does not count as open."""

    def __init__(self, message: bytes):
        self._message = message

    def connectionMade(self) -> None:
        if self._message:
            self.transport.write(self._message)
        self.transport.loseConnection()


class _CountedConnection(ProtocolWrapper):
    """
    Counts a connection as gone only after its protocol has handled the loss, so what
    that does (a line client's C{close} event, journaled) happens before
    L{ConnectionLimit.closeAll} lets shutdown close the store.
    """

    def connectionLost(self, reason) -> None:
        self.wrappedProtocol.connectionLost(reason)
        self.factory.unregisterProtocol(self)
        self.wrappedProtocol = None


class ConnectionLimit(WrappingFactory):
    """
    Caps one listener's open connections and counts them in C{connections}, which
    L{logsvc.metrics} reports for every listener.

    Refusals are logged once per burst: when the first is refused, and with their
    number when a connection is accepted again.
    """

    log = Logger()
    noisy = False
    protocol = _CountedConnection
    connections = 0

    def __init__(self, wrappedFactory: Factory, name: str,
                 maxConnections: int = DEFAULT_MAX_CONNECTIONS):
        super().__init__(wrappedFactory)
        self.name = name
        self.maxConnections = maxConnections
        self.refusal = REFUSALS.get(name, b"")
        self.refused = 0
        self._refusedInBurst = 0
        self._emptied: list = []  # closeAll() callers waiting for the last connection

    def buildProtocol(self, addr: IAddress) -> Protocol:
        if self.connections >= self.maxConnections:
            self.refused += 1
            self._refusedInBurst += 1
            if self._refusedInBurst == 1:
                self.log.warn("--{name}: {n} connections open (--max-connections); "
                              "refusing new connections", name=self.name, n=self.connections)
            return _Refusal(self.refusal)
        if self._refusedInBurst:
            self.log.info("--{name}: accepting connections again after refusing {n}",
                          name=self.name, n=self._refusedInBurst)
            self._refusedInBurst = 0
        return super().buildProtocol(addr)

    def registerProtocol(self, protocol: ProtocolWrapper) -> None:
        super().registerProtocol(protocol)
        self.connections += 1

    def unregisterProtocol(self, protocol: ProtocolWrapper) -> None:
        super().unregisterProtocol(protocol)
        self.connections -= 1
        if not self.connections:
            emptied, self._emptied = self._emptied, []
            for waiting in emptied:
                waiting.callback(None)

    def closeAll(self, clock, grace: float = 2.0) -> Deferred:
        """
        Close every open connection, aborting those whose peers have not taken what is
        queued for them after C{grace} seconds; fires once none is left.
        """
        if not self.connections:
            return succeed(None)
        emptied = Deferred()
        self._emptied.append(emptied)
        for protocol in list(self.protocols):
            protocol.transport.loseConnection()
        aborting = clock.callLater(grace, self._abortAll)

        def stopAborting(result):
            if aborting.active():
                aborting.cancel()
            return result
        return emptied.addBoth(stopAborting)

    def _abortAll(self) -> None:
        for protocol in list(self.protocols):
            protocol.transport.abortConnection()


class HeadTimeoutChannel(HTTPChannel):
    """
    An HTTP channel that answers 408 and closes when a request head (request line and
    headers) is not complete within C{headTimeout} seconds of its first byte, so a
    client trickling headers cannot hold a connection forever.  Idle keep-alive
    connections are still closed by the site's idle timeout.
    """

    log = Logger()
    headTimeout = HEAD_TIMEOUT
    _headDeadline = None
    _timedOut = False

    def dataReceived(self, data: bytes) -> None:
        if self._timedOut:
            return
        if self._headDeadline is None and self.line_mode:
            self._headDeadline = self.callLater(self.headTimeout, self._headTimedOut)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancelHeadDeadline()
        super().allHeadersReceived()

    def connectionLost(self, reason) -> None:
        self._cancelHeadDeadline()
        super().connectionLost(reason)

    def _cancelHeadDeadline(self) -> None:
        if self._headDeadline is not None:
            if self._headDeadline.active():
                self._headDeadline.cancel()
            self._headDeadline = None

    def _headTimedOut(self) -> None:
        self._headDeadline = None
        self._timedOut = True
        self.log.info("{peer} sent no complete request head within {s:.0f} s; closing",
                      peer=self.transport.getPeer(), s=self.headTimeout)
        self.transport.write(_HEAD_TIMED_OUT)
        self.setTimeout(None)  # as when the idle timer fires: one close, then abort
        self.timeoutConnection()


def httpSite(resource: IResource, reactor=None) -> Site:
    """A twisted.web site whose connections have a request-head deadline."""
    site = Site(resource, reactor=reactor)
    site.protocol = HeadTimeoutChannel
    return site
