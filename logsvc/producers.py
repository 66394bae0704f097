"""
Ingest as push producers: the journal pauses them while its backlog is high, and their
connections then stop reading from their sockets, so TCP slows the senders down instead
of the server buffering without bound.
"""

from twisted.internet.interfaces import IProtocol, IPushProducer
from twisted.internet.protocol import ServerFactory
from zope.interface import implementer


@implementer(IPushProducer)
class PausableFactory(ServerFactory):
    """
    A factory that is the push producer of all its connections' reading.  Its
    protocols call L{connected} and L{disconnected}.
    """

    noisy = False
    paused = False

    def __init__(self):
        self._connected: set = set()

    def connected(self, protocol: IProtocol) -> None:
        self._connected.add(protocol)
        if self.paused:
            protocol.transport.pauseProducing()

    def disconnected(self, protocol: IProtocol) -> None:
        self._connected.discard(protocol)

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            for protocol in self._connected:
                protocol.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            for protocol in self._connected:
                protocol.transport.resumeProducing()

    def stopProducing(self) -> None:
        for protocol in list(self._connected):
            protocol.transport.loseConnection()


@implementer(IPushProducer)
class ProducerGroup:
    """Several producers paused and resumed as one (the journal pauses all ingest)."""

    def __init__(self, producers: list[IPushProducer]):
        self.producers = producers

    def pauseProducing(self) -> None:
        for producer in self.producers:
            producer.pauseProducing()

    def resumeProducing(self) -> None:
        for producer in self.producers:
            producer.resumeProducing()

    def stopProducing(self) -> None:
        for producer in self.producers:
            producer.stopProducing()
