"""
The HTTP interface as one resource tree: the status page, JSON endpoints, Prometheus
metrics and the WebSocket stream.  tap builds it once, for the site and the auth realm.
"""

from functools import partial
from importlib import resources

from twisted.cred.portal import Portal
from twisted.web.guard import BasicCredentialFactory, HTTPAuthSessionWrapper
from twisted.web.resource import IResource
from twisted.web.static import Data

from .metrics import ServiceMetrics
from .nodes import nodeName
from .resources import (ClientsResource, HealthResource, JournalResource, MetricsResource,
                        RootResource, StatusResource)
from .service import LogService
from .stream import StreamResource


def rootResource(service: LogService, metrics: ServiceMetrics) -> RootResource:
    """The tree over C{service}'s shared objects."""
    root = RootResource()
    node = partial(nodeName, service)
    page = resources.files("logsvc").joinpath("static/index.html").read_bytes()
    root.putChild(b"", Data(page, "text/html; charset=utf-8"))
    root.putChild(b"status", StatusResource(service, node))
    root.putChild(b"clients", ClientsResource(service.registry))
    root.putChild(b"journal", JournalResource(service.store))
    root.putChild(b"health", HealthResource(service.listenerStates, service.store, node))
    root.putChild(b"metrics", MetricsResource(metrics))
    root.putChild(b"stream", StreamResource(service, metrics))
    return root


def httpResource(root: IResource, portal: Portal | None = None) -> IResource:
    """C{root} itself, or, given C{portal}, behind HTTP basic authentication."""
    if portal is None:
        return root
    return HTTPAuthSessionWrapper(portal, [BasicCredentialFactory(b"logsvc")])
