"""
The connection cap every listener shares.

A listener's factory is wrapped once, in L{LogService.addListener}: past
C{--max-connections} open connections, a new one gets the factory's C{refusal} (a
message in its protocol's language) and is closed, so a flood costs a file descriptor
for a moment rather than memory for as long as the peer likes.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IProtocolFactory, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

DEFAULT_MAX_CONNECTIONS = 10000
"""Open connections per listener (Redis's C{maxclients} default)."""


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

    A refused connection receives the wrapped factory's C{refusal} bytes; a factory
    without one (PB's: Banana has no message a client would show before login) is
    closed silently.  Refusals are logged once per burst: when the first is refused,
    and with their number when a connection is accepted again.
    """

    log = Logger()
    noisy = False
    protocol = _CountedConnection
    connections = 0

    def __init__(self, wrappedFactory: IProtocolFactory, name: str,
                 maxConnections: int = DEFAULT_MAX_CONNECTIONS):
        super().__init__(wrappedFactory)
        self.name = name
        self.maxConnections = maxConnections
        self.refusal: bytes = getattr(wrappedFactory, "refusal", b"")
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

    def closeAll(self, clock: IReactorTime, grace: float = 2.0) -> Deferred:
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
