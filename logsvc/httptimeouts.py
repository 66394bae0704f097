"""
logsvc's HTTP site: a deadline for each request head, because twisted.web's idle
timeout restarts with every byte received, and a 503 for connections over the cap.
"""

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Site

HEAD_TIMEOUT = 30.0
"""Seconds an HTTP client has from the first byte of a request to its blank line."""

_HEAD_TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\n"
                   b"Content-Type: text/plain; charset=utf-8\r\n"
                   b"Content-Length: 16\r\n"
                   b"Connection: close\r\n\r\n"
                   b"request timeout\n")

_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 21\r\n"
            b"Connection: close\r\n\r\n"
            b"too many connections\n")


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


def httpSite(resource: IResource, reactor: IReactorTime | None = None) -> Site:
    """
    A twisted.web site whose connections have a request-head deadline, and whose
    C{refusal} the connection cap sends past C{--max-connections}.
    """
    site = Site(resource, reactor=reactor)
    site.protocol = HeadTimeoutChannel
    site.refusal = _REFUSAL
    return site
