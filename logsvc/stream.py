"""
WebSocket C{/stream}: one L{Subscription} per connection, each message a JSON text frame.
"""

import json
from typing import Protocol, cast

from twisted.internet.interfaces import IConsumer, IDelayedCall, ITCPTransport
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.websocket import WebSocketResource, WebSocketTransport

from .metrics import ServiceMetrics
from .options import positiveText
from .service import LogService
from .subscription import LINE_EVENTS, Subscription, eventKinds

# Close code for a subscriber that fell too far behind (RFC 6455 "policy violation").
CLOSE_TOO_SLOW = 1008
# How long a closing subscriber may take to drain before its socket is aborted.
CLOSE_TIMEOUT = 10.0


class StreamOptions:
    """
    The filters of one C{/stream} request, validated before the upgrade.  Without
    C{events}, line events only: with journal lines on, each is also a journal entry,
    and a page that shows both would show every LOG line twice.  C{from} adds C{entry}.
    """

    def __init__(self, args: dict):
        self.clients = _lastArg(args, "client")
        events = _lastArg(args, "events")
        self.events = (list(LINE_EVENTS) if events is None
                       else [e.strip() for e in events.split(",")])
        eventKinds(self.events)
        start = _lastArg(args, "from")
        self.fromIndex = None
        if start is not None:
            self.fromIndex = positiveText(start)
            if self.fromIndex is None:
                raise ValueError("from must be a positive integer")
            if "entry" not in self.events:
                self.events.append("entry")


def _lastArg(args: dict, name: str) -> str | None:
    values = args.get(name.encode())
    return values[-1].decode("utf-8", "replace") if values else None


class StreamResource(Resource):
    """Answers bad filters with a 400 JSON error, then hands the request to the upgrade."""

    isLeaf = True

    def __init__(self, service: LogService, metrics: ServiceMetrics):
        super().__init__()
        self.service = service
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes | int:
        try:
            options = StreamOptions(request.args or {})  # Twisted types args as None
        except ValueError as e:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            return json.dumps({"error": str(e)}).encode()
        factory = _StreamFactory(self.service, self.metrics, options)
        return WebSocketResource(factory).render_GET(request)


class _StreamFactory:
    def __init__(self, service: LogService, metrics: ServiceMetrics, options: StreamOptions):
        self.service = service
        self.metrics = metrics
        self.options = options

    def buildProtocol(self, request: Request) -> "StreamProtocol":
        return StreamProtocol(self.service, self.metrics, self.options)


class _Socket(ITCPTransport, IConsumer):
    """What L{StreamProtocol} uses of the socket under its WebSocket, for the type checker."""


class _Transport(WebSocketTransport, Protocol):
    """
    Twisted's WebSocket transport as L{StreamProtocol} uses it: beyond the protocol
    Twisted declares, its socket and a close reason.
    """

    transport: _Socket

    def loseConnection(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame with C{code} and C{reason}, then close the socket."""


class StreamProtocol:
    """
    One WebSocket subscriber.  C{position} is the last journal index sent, for the
    reader-lag metric.
    """

    log = Logger()
    transport: _Transport  # set in negotiationStarted

    def __init__(self, service: LogService, metrics: ServiceMetrics, options: StreamOptions):
        self.service = service
        self.metrics = metrics
        self.options = options
        self.subscription: Subscription | None = None
        self.position: int | None = None
        self._abort: IDelayedCall | None = None

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = cast(_Transport, transport)

    def negotiationFinished(self) -> None:
        # The HTTP channel registered itself as the socket's producer; the socket is
        # ours now, so the subscription takes its place.
        self.transport.transport.unregisterProducer()
        self.metrics.streams.add(self)
        options = self.options
        self.subscription = Subscription(
            self.service, self._deliver, events=options.events, clients=options.clients,
            fromIndex=options.fromIndex, onEnd=self._tooSlow)
        if not self.subscription.ended:
            self.transport.attachProducer(self.subscription)

    def _deliver(self, message: dict) -> None:
        kind = message["type"]
        if kind == "entry":
            self.position = message["index"]
        elif kind == "dropped":
            self.metrics.dropped.inc(message["dropped"])
        self.transport.sendTextMessage(json.dumps(message, ensure_ascii=False))

    def _tooSlow(self, reason: str) -> None:
        self.transport.detachProducer()
        self.transport.loseConnection(CLOSE_TOO_SLOW, reason)
        self._abort = self.service.clock.callLater(
            CLOSE_TIMEOUT, self.transport.transport.abortConnection)

    def textMessageReceived(self, message: str) -> None:
        """Subscribers only listen; anything they send is ignored."""

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        """Subscribers only listen; anything they send is ignored."""

    def pongReceived(self, payload: bytes) -> None:
        """Pings are not sent; unsolicited pongs are ignored, as RFC 6455 says."""

    def connectionLost(self, reason) -> None:
        self.metrics.streams.discard(self)
        if self.subscription is not None:
            self.subscription.cancel()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
