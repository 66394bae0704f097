"""
The HTTP interface: the status page, JSON endpoints, Prometheus metrics and the
WebSocket stream, as one twisted.web resource tree over the shared service.
"""

import json
from importlib import resources

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.web.guard import BasicCredentialFactory, HTTPAuthSessionWrapper
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.static import Data

from . import __version__
from .errors import NoSuchClient, Trimmed
from .journal import entryLines
from .metrics import ServiceMetrics
from .nodes import nodeName
from .stream import StreamResource

JOURNAL_PAGE = 100
JOURNAL_PAGE_MAX = 1000

JSON_TYPE = b"application/json; charset=utf-8"

log = Logger()


def rootResource(service) -> IResource:
    """
    The resource tree over C{service}, built once and then shared: the auth realm asks
    for it on every authenticated request, and the metrics it feeds are per service.
    """
    root = getattr(service, "_webRoot", None)
    if root is None:
        root = service._webRoot = RootResource(service)
    return root


class HTTPError(Exception):
    """Ends a request with C{code} and a JSON body C{{"error": message, **fields}}."""

    def __init__(self, code: int, message: str, **fields):
        super().__init__(message)
        self.code = code
        self.body = {"error": message, **fields}


def _encode(body) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()


def _respond(request, code: int, body, contentType: bytes = JSON_TYPE) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", contentType)
    request.setHeader(b"cache-control", b"no-store")
    return _encode(body)


class AsyncResource(Resource):
    """
    A leaf whose subclass defines C{async def respond(self, request)}, returning the
    JSON body (or bytes already encoded) or raising L{HTTPError}; the request is
    finished when it completes, and the work is cancelled if the client goes away first.
    """

    isLeaf = True

    def render_GET(self, request):
        work = Deferred.fromCoroutine(self.respond(request))
        gone = []

        def disconnected(reason):
            gone.append(reason)
            work.cancel()

        def failed(failure):
            if failure.check(HTTPError):
                return failure.value.code, failure.value.body, JSON_TYPE
            if not failure.check(CancelledError):
                log.failure("{uri} failed", failure, uri=request.uri)
            return 500, {"error": "internal error"}, JSON_TYPE

        def finish(result):
            if not gone:
                request.write(_respond(request, *result))
                request.finish()

        request.notifyFinish().addErrback(disconnected)
        work.addCallback(self._result)
        work.addErrback(failed)
        work.addCallback(finish)
        return NOT_DONE_YET

    @staticmethod
    def _result(body) -> tuple:
        return 200, body, JSON_TYPE


def _positiveArg(request, name: str, default: int | None) -> int | None:
    values = request.args.get(name.encode())
    if not values:
        return default
    try:
        number = int(values[-1])
    except ValueError:
        number = 0
    if number < 1:
        raise HTTPError(400, f"{name} must be a positive integer")
    return number


class StatusResource(AsyncResource):
    def __init__(self, service):
        super().__init__()
        self.service = service

    async def respond(self, request) -> dict:
        service = self.service
        syslog = {} if service.syslog is None else {"syslog": service.syslog.status()}
        return {**syslog, "version": __version__, "node": nodeName(service),
                "uptime": service.clock.seconds() - service.startTime,
                "clients": service.registry.counts(),
                "lines": service.registry.totalLines,
                "first": await service.store.first(),
                "head": await service.store.head(),
                "journal_id": service.store.journalId}


class ClientsResource(AsyncResource):
    """
    C{/clients}: every known client, or with C{limit=K} a page of K whose names sort
    after C{after=NAME}; C{/clients/NAME}: one.
    """

    isLeaf = False

    def __init__(self, registry):
        super().__init__()
        self.registry = registry

    def getChild(self, path: bytes, request):
        if not path:
            return self
        return ClientResource(self.registry, path.decode("utf-8", "replace"))

    async def respond(self, request) -> dict:
        after = request.args.get(b"after")
        limit = _positiveArg(request, "limit", None)
        records = self.registry.records(after and after[-1].decode("utf-8", "replace"), limit)
        return {record.name: record.summary() for record in records}


class ClientResource(AsyncResource):
    def __init__(self, registry, name: str):
        super().__init__()
        self.registry = registry
        self.name = name

    async def respond(self, request) -> dict:
        try:
            record = self.registry.lookup(self.name)
        except NoSuchClient:
            raise HTTPError(404, f"no such client: {self.name}")
        return {"name": record.name, **record.summary()}


class JournalResource(AsyncResource):
    """
    C{/journal?from=N&limit=K}: up to K entries from N (K capped at L{JOURNAL_PAGE_MAX}).
    Entries are spliced in as stored, never decoded and re-encoded.  Below the first
    index kept: 410 Gone, naming C{first} and C{head}.
    """

    def __init__(self, store):
        super().__init__()
        self.store = store

    async def respond(self, request) -> bytes:
        start = _positiveArg(request, "from", 1)
        limit = min(_positiveArg(request, "limit", JOURNAL_PAGE), JOURNAL_PAGE_MAX)
        try:
            rows = await self.store.read(start, limit)
        except Trimmed as e:
            raise HTTPError(410, str(e), trimmed={"first": e.first, "head": e.head})
        head = await self.store.head()
        after = rows[-1][0] + 1 if rows else start
        return b'{"head":%d,"next":%d,"entries":[%s]}' % (head, after,
                                                          b",".join(entryLines(rows)))


class HealthResource(AsyncResource):
    """200 only when every listener is bound and the store can be written right now."""

    def __init__(self, service):
        super().__init__()
        self.service = service

    async def respond(self, request) -> dict:
        service = self.service
        listeners = {name: "up" if service.listening(name) else "down"
                     for name in service.endpoints}
        try:
            await service.store.check()
            store = "ok"
        except CancelledError:
            raise
        except Exception as e:
            store = " ".join(str(e).split()) or e.__class__.__name__
        problems = [f"listener {name} is not listening"
                    for name, state in listeners.items() if state != "up"]
        if store != "ok":
            problems.append(f"store: {store}")
        journal = {"first": await service.store.first(), "head": await service.store.head()}
        if problems:
            raise HTTPError(503, "; ".join(problems), listeners=listeners, store=store,
                            node=nodeName(service), **journal)
        return {"status": "ok", "node": nodeName(service), "listeners": listeners,
                "store": store, **journal}


class MetricsResource(AsyncResource):
    def __init__(self, metrics: ServiceMetrics):
        super().__init__()
        self.metrics = metrics

    async def respond(self, request) -> tuple:
        accept = request.getHeader(b"accept")
        return await self.metrics.render(accept.decode("latin-1") if accept else None)

    @staticmethod
    def _result(rendered) -> tuple:
        body, contentType = rendered
        return 200, body, contentType.encode()


class NotFoundResource(AsyncResource):
    async def respond(self, request):
        raise HTTPError(404, "not found")


class RootResource(Resource):
    """C{/} is the page; everything else is JSON (unknown paths too)."""

    def __init__(self, service):
        super().__init__()
        self.service = service
        self.metrics = ServiceMetrics(service)
        page = resources.files("logsvc").joinpath("static/index.html").read_bytes()
        self.putChild(b"", Data(page, "text/html; charset=utf-8"))
        self.putChild(b"status", StatusResource(service))
        self.putChild(b"clients", ClientsResource(service.registry))
        self.putChild(b"journal", JournalResource(service.store))
        self.putChild(b"health", HealthResource(service))
        self.putChild(b"metrics", MetricsResource(self.metrics))
        self.putChild(b"stream", StreamResource(service, self.metrics))

    def getChild(self, path: bytes, request):
        return NotFoundResource()


def httpResource(service, portal=None) -> IResource:
    """The tree itself, or, given C{portal}, the tree behind HTTP basic authentication."""
    if portal is None:
        return rootResource(service)
    return HTTPAuthSessionWrapper(portal, [BasicCredentialFactory(b"logsvc")])
