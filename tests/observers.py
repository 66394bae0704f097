"""A PB observer that records what it is told."""

from twisted.internet.defer import Deferred
from twisted.spread import pb


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
