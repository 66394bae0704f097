"""Observers that record what they are told: of the registry's events, and over PB."""

from twisted.internet.defer import Deferred
from twisted.spread import pb
from zope.interface import implementer

from logsvc.interfaces import IEventObserver


class Observer(pb.Referenceable):
    """Records events; answers at once unless told to stall."""

    def __init__(self):
        self.events: list = []
        self.stalled: list | None = None

    def remote_event(self, kind, payload):
        self.events.append((kind, payload))
        if self.stalled is not None:
            d = Deferred()
            self.stalled.append(d)
            return d


@implementer(IEventObserver)
class Recorder:
    """An event observer that keeps every event as one tuple
    (kind, name, time, fields), a C{log} event per LOG line."""

    def __init__(self):
        self.events = []

    def event(self, kind, name, time, fields):
        self.events.append((kind, name, time, dict(fields)))

    def logged(self, name, time, messages, truncated, fields=None):
        extra = {"truncated": True} if truncated else {}
        for n, message in enumerate(messages):
            self.event("log", name, time,
                       {"message": message, **(extra if fields is None else fields[n])})
