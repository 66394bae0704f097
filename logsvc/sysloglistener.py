"""
The syslog listener: messages over UDP datagrams or a TCP stream become LOG lines of
clients in the shared registry, named from the sender's HOSTNAME and APP-NAME (or TAG).

The protocols only frame and hand raw messages to L{SyslogClients}, which parses them
and decides which client they belong to; it takes its clock as an argument, so the quiet
period after which a sender goes offline is tested without waiting.
"""

import re
from collections import OrderedDict
from functools import lru_cache

from twisted.application.service import Service
from twisted.internet.defer import fail, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IAddress, IPushProducer, IReactorTime, IReactorUDP, IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from .errors import NameInUse
from .interfaces import IClientRegistry
from .producers import PausableFactory
from .syslogformat import FACILITIES, SEVERITIES, Framing, parse

QUIET_PERIOD = 300.0
"""Seconds without a message after which a syslog client goes offline (its C{close})."""

SWEEP_INTERVAL = 10.0
"""How often quiet syslog clients are looked for."""

MAX_ONLINE = 10000
"""Syslog clients online at once; past it the one quiet longest goes offline first."""

MAX_DATAGRAM = 65535

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@lru_cache(maxsize=4096)
def clientName(hostname: str | None, appName: str | None, peer: str) -> str:
    """
    C{HOST.APP} (or C{HOST} alone), HOST being the message's HOSTNAME or else the
    sender's address; characters the line service's names cannot hold become C{_},
    and HOST is cut to 79 and APP to 48 (APP-NAME's own limit), so it fits in 128.
    """
    host = _UNSAFE.sub("_", hostname or peer or "local")[:79]
    if appName:
        return f"{host}.{_UNSAFE.sub('_', appName)[:48]}"
    return host


class SyslogClients(Service):
    """
    Maps parsed messages to registry records: a name is connected (C{ready}) at its
    first message and disconnected after L{QUIET_PERIOD} without one, or when the
    service stops.  A name that a line-service client holds is not taken: its messages
    are counted in C{refused}.
    """

    log = Logger()

    def __init__(self, registry: IClientRegistry, clock: IReactorTime,
                 quiet: float = QUIET_PERIOD, maxOnline: int = MAX_ONLINE):
        self._registry = registry
        self._clock = clock
        self.quiet = quiet
        self.maxOnline = maxOnline
        self._online: OrderedDict = OrderedDict()  # name -> [record, last seen], quietest first
        self._sweeper = None
        self.counters = {"messages": 0, "malformed": 0, "truncated": 0, "refused": 0,
                         "bytes": 0}

    def startService(self) -> None:
        super().startService()
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = self._clock
        self._sweeper.start(SWEEP_INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        while self._online:
            self._goOffline()

    def receive(self, raw: bytes, peer: str, truncated: bool = False) -> None:
        """One framed message from C{peer} (an address); never raises."""
        self.receiveMany([(raw, truncated)], peer)

    def receiveMany(self, framed: list, peer: str) -> None:
        """
        C{(raw, truncated)} messages that arrived together from C{peer}: runs of one
        client's go to the registry (and so to the journal) as one batch.
        """
        if not self.running:
            return
        now = self._clock.seconds()
        run: list = []
        runName = None
        for raw, truncated in framed:
            name, text, fields = self._read(raw, peer, truncated, now)
            if name != runName or truncated:
                self._deliver(runName, run, now)
                run, runName = [], name
            run.append((text, fields))
            if truncated:
                self._deliver(runName, run, now, truncated=True)
                run, runName = [], None
        self._deliver(runName, run, now)

    def _deliver(self, name: str | None, run: list, now: float,
                 truncated: bool = False) -> None:
        if not run:
            return
        record = self._record(name, now)
        if record is None:
            self.counters["refused"] += len(run)
            return
        self.counters["messages"] += len(run)
        self._registry.log(record, max(now, record.connectedAt), [text for text, _ in run],
                           truncated=truncated, fields=[fields for _, fields in run])

    def _read(self, raw: bytes, peer: str, truncated: bool, now: float) -> tuple:
        """The client name, text and journal fields of one message."""
        counters = self.counters
        counters["bytes"] += len(raw)
        message = parse(raw, now)
        fields: dict = {}
        if message.malformed:
            counters["malformed"] += 1
            fields["malformed"] = True
        else:
            fields["facility"] = FACILITIES[message.facility]
            fields["severity"] = SEVERITIES[message.severity]
            if message.timestamp is not None:
                fields["timestamp"] = message.timestamp
            for key, value in (("procid", message.procId), ("msgid", message.msgId),
                               ("sd", message.structuredData)):
                if value is not None:
                    fields[key] = value
        if truncated:
            counters["truncated"] += 1
            fields["truncated"] = True
        return clientName(message.hostname, message.appName, peer), message.text, fields

    def _record(self, name: str, now: float):
        seen = self._online.get(name)
        if seen is not None:
            seen[1] = now
            self._online.move_to_end(name)
            return seen[0]
        try:
            record = self._registry.connect(name)
        except NameInUse:
            if self.counters["refused"] == 0:
                self.log.warn("syslog messages for {name} are dropped while a line-service "
                              "client holds that name", name=name)
            return None
        self._online[name] = [record, now]
        if len(self._online) > self.maxOnline:
            self._goOffline()
        return record

    def sweep(self) -> None:
        """Disconnect every client quiet for the quiet period."""
        horizon = self._clock.seconds() - self.quiet
        while self._online and next(iter(self._online.values()))[1] <= horizon:
            self._goOffline()

    def _goOffline(self) -> None:
        _, (record, _) = self._online.popitem(last=False)
        self._registry.disconnect(record)

    def status(self) -> dict:
        """Counters and the number of syslog clients online, for /status."""
        return dict(self.counters, online=len(self._online))


def _peerHost(address) -> str:
    return getattr(address, "host", None) or ""


class SyslogStreamProtocol(Protocol):
    """Per-connection state only: the framing of this sender's stream."""

    def __init__(self, clients: SyslogClients, maxMessage: int):
        self._clients = clients
        self._framing = Framing(maxMessage)
        self._peer = ""

    def connectionMade(self) -> None:
        self._peer = _peerHost(self.transport.getPeer())
        self.factory.connected(self)

    def connectionLost(self, reason=None) -> None:
        self.factory.disconnected(self)

    def dataReceived(self, data: bytes) -> None:
        framed = self._framing.feed(data)
        if framed:
            self._clients.receiveMany(framed, self._peer)


class SyslogStreamFactory(PausableFactory):
    """
    The TCP senders' factory, and their push producer, as the line service's factory
    is: the journal's backlog pauses every connection's reading.
    """

    def __init__(self, clients: SyslogClients, maxMessage: int):
        super().__init__()
        self.clients = clients
        self.maxMessage = maxMessage

    def buildProtocol(self, addr: IAddress) -> SyslogStreamProtocol:
        protocol = SyslogStreamProtocol(self.clients, self.maxMessage)
        protocol.factory = self
        return protocol


@implementer(IPushProducer)
class SyslogDatagramProtocol(DatagramProtocol):
    """
    One message per datagram.  Paused, it stops reading its socket: the kernel then
    drops datagrams, as it does for any UDP receiver that falls behind.
    """

    noisy = False
    paused = False

    def __init__(self, clients: SyslogClients, maxMessage: int):
        self._clients = clients
        self._maxMessage = maxMessage

    def datagramReceived(self, data: bytes, addr) -> None:
        truncated = len(data) > self._maxMessage
        self._clients.receive(data[:self._maxMessage] if truncated else data,
                              addr[0] if addr else "", truncated)

    def pauseProducing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.stopReading()

    def resumeProducing(self) -> None:
        self.paused = False
        if self.transport is not None:
            self.transport.startReading()

    def stopProducing(self) -> None:
        pass


@implementer(IStreamServerEndpoint)
class DatagramEndpoint:
    """
    C{udp:PORT[:interface=ADDR]} in a shape L{StreamServerEndpointService} can run:
    it listens with its own datagram protocol and never calls the factory, since
    datagrams have no connections (the listener shows 0 open).
    """

    def __init__(self, reactor: IReactorUDP, port: int, interface: str,
                 protocol: DatagramProtocol):
        self._reactor = reactor
        self.port = port
        self._interface = interface
        self._protocol = protocol

    def listen(self, protocolFactory):
        try:
            return succeed(self._reactor.listenUDP(self.port, self._protocol,
                                                   self._interface, MAX_DATAGRAM))
        except Exception:
            return fail()


def datagramAddress(description: str) -> tuple[int, str] | None:
    """
    C{(port, interface)} for C{udp:PORT[:interface=ADDR]}, None for any other (stream)
    endpoint string; ValueError when a C{udp:} string is malformed.  As in Twisted's
    endpoint strings, C{\\:} is a literal colon (for IPv6 addresses).
    """
    if not description.lower().startswith("udp:"):
        return None
    parts = re.split(r"(?<!\\):", description[4:])
    port, options = parts[0], parts[1:]
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"udp port must be a number from 0 to 65535, not {port!r}")
    interface = ""
    for option in options:
        key, equals, value = option.partition("=")
        if key != "interface" or not equals:
            raise ValueError(f"unknown udp option {option!r}: only interface=ADDR")
        interface = value.replace("\\:", ":")
    return int(port), interface


def syslogListener(reactor, description: str, clients: SyslogClients | None,
                   maxMessage: int) -> tuple:
    """
    C{(endpoint, factory, producer)} for C{--syslog}: UDP for C{udp:...}, otherwise a
    Twisted stream endpoint string.  ValueError (or Twisted's) when malformed.
    """
    factory = SyslogStreamFactory(clients, maxMessage)
    address = datagramAddress(description)
    if address is None:
        return serverFromString(reactor, description), factory, factory
    protocol = SyslogDatagramProtocol(clients, maxMessage)
    return DatagramEndpoint(reactor, *address, protocol), factory, protocol
