"""
The HTTP interface's resources: the JSON endpoints, /health and /metrics, each a leaf
that answers from the object it is given.
"""

import json
from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from . import __version__
from .errors import NoSuchClient, Trimmed, oneLine
from .interfaces import IClientRegistry, IJournalStore
from .journal.lines import entryLines
from .metrics import ServiceMetrics
from .options import positiveText

JOURNAL_PAGE = 100
JOURNAL_PAGE_MAX = 1000

JSON_TYPE = b"application/json; charset=utf-8"

log = Logger()


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


_Default = TypeVar("_Default", int, None)


def _positiveArg(request, name: str, default: _Default) -> int | _Default:
    values = request.args.get(name.encode())
    if not values:
        return default
    number = positiveText(values[-1])
    if number is None:
        raise HTTPError(400, f"{name} must be a positive integer")
    return number


class StatusResource(AsyncResource):
    def __init__(self, service, node: Callable[[], str]):
        super().__init__()
        self.service = service
        self.node = node

    async def respond(self, request) -> dict:
        service = self.service
        syslog = {} if service.syslog is None else {"syslog": service.syslog.status()}
        return {**syslog, "version": __version__, "node": self.node(),
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

    def __init__(self, registry: IClientRegistry):
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
    def __init__(self, registry: IClientRegistry, name: str):
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

    def __init__(self, store: IJournalStore):
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

    def __init__(self, listenerStates, store: IJournalStore, node: Callable[[], str]):
        super().__init__()
        self.listenerStates = listenerStates
        self.store = store
        self.node = node

    async def respond(self, request) -> dict:
        store = self.store
        listeners = {name: "up" if state.up else "down"
                     for name, state in self.listenerStates().items()}
        try:
            await store.check()
            state = "ok"
        except CancelledError:
            raise
        except Exception as e:
            state = oneLine(e)
        problems = [f"listener {name} is not listening"
                    for name, up in listeners.items() if up != "up"]
        if state != "ok":
            problems.append(f"store: {state}")
        journal = {"first": await store.first(), "head": await store.head()}
        if problems:
            raise HTTPError(503, "; ".join(problems), listeners=listeners, store=state,
                            node=self.node(), **journal)
        return {"status": "ok", "node": self.node(), "listeners": listeners, "store": state,
                **journal}


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

    def getChild(self, path: bytes, request):
        return NotFoundResource()
