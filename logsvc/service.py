"""
The service tree twistd runs: the listeners, started after the store is open and
stopped before it is closed.
"""

import sys
from typing import NamedTuple

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IProtocolFactory, IReactorTime, IStreamServerEndpoint
from twisted.python.failure import Failure

from .errors import StoreError
from .interfaces import IClientRegistry, IJournalStore
from .limits import DEFAULT_MAX_CONNECTIONS, ConnectionLimit
from .persistence import RegistryPersistence


class ListenerState(NamedTuple):
    """One listener as /metrics shows it."""

    up: bool
    connections: int
    refused: int


class LogService(MultiService):
    """
    The listeners, and the shared objects that PB avatars and subscriptions read
    (client registry, journal store, clock).

    Listeners are named children, after their options (C{"port"}, C{"journal"},
    C{"pb"}, C{"http"}), so health checks and tests can find them; they start after the
    store is open and stop before it is closed, so a clean shutdown commits everything
    already received.
    """

    syslog: Service | None = None
    """The L{SyslogClients} when C{--syslog} is on, for /status and /metrics."""

    nodeName = None
    """C{--node-name}, if given (see L{logsvc.nodes.nodeName})."""

    def __init__(self, registry: IClientRegistry, store: IJournalStore, clock: IReactorTime,
                 startTime: float | None = None,
                 maxConnections: int = DEFAULT_MAX_CONNECTIONS):
        super().__init__()
        self.registry = registry
        self.store = store
        self.clock = clock
        self.maxConnections = maxConnections
        self.startTime = clock.seconds() if startTime is None else startTime
        self.endpoints: dict[str, str] = {}
        self.persistence: RegistryPersistence | None = None  # for stores that persist

    def addListener(self, name: str, description: str, endpoint: IStreamServerEndpoint,
                    factory: IProtocolFactory) -> None:
        """Listen with C{factory}, capped at C{maxConnections} open connections."""
        listener = StreamServerEndpointService(
            endpoint, ConnectionLimit(factory, name, self.maxConnections))
        listener._raiseSynchronously = True
        listener.setName(name)
        listener.setServiceParent(self)
        self.endpoints[name] = description

    def listeners(self) -> list:
        return [s for s in self if isinstance(s, StreamServerEndpointService)]

    def listening(self, name: str) -> bool:
        """True when the named listener's port is bound right now."""
        waiting = self.getServiceNamed(name)._waitingForPort
        return (bool(self.running) and waiting is not None and waiting.called
                and not isinstance(waiting.result, Failure))

    def listenerStates(self) -> dict[str, ListenerState]:
        """Each listener's state by name: bound or not, open and refused connections."""
        return {listener.name: ListenerState(self.listening(listener.name),
                                             listener.factory.connections,
                                             listener.factory.refused)
                for listener in self.listeners()}

    def privilegedStartService(self) -> None:
        """Open the store, then bind every port; any failure is one line and exit 1."""
        self._openStore()
        for listener in self.listeners():
            try:
                listener.privilegedStartService()
            except Exception as e:
                exitWithError(f"cannot listen on --{listener.name} "
                              f"{self.endpoints[listener.name]}: {_oneLine(e)}")

    def _openStore(self) -> None:
        failures: list = []
        self.store.open().addErrback(failures.append)
        if failures:
            exitWithError(_oneLine(failures[0]))
        if self.persistence is not None:
            try:
                self.persistence.open()
            except StoreError as e:
                exitWithError(_oneLine(e))

    def stopService(self) -> Deferred:
        """
        Stop listening, close every connection (so line clients' C{close} events are
        journaled too), then commit everything received and close the store.
        """
        # twistd re-raises a terminating signal once stopped (exit status -15); a clean
        # stop on SIGTERM is a success, so report it as exit 0.
        if getattr(self.clock, "_exitSignal", None) is not None:
            setattr(self.clock, "_exitSignal", None)  # a reactor's, not in IReactorTime
        stopped = super().stopService()
        stopped.addBoth(lambda _: DeferredList(
            [listener.factory.closeAll(self.clock) for listener in self.listeners()]))
        if self.persistence is not None:
            stopped.addBoth(lambda _: self.persistence.close())
        stopped.addBoth(lambda _: self.store.close())
        return stopped


def exitWithError(message: str):
    """
    Stop start-up with one line on the real stderr and exit status 1 (twistd has
    redirected sys.stderr into its log by the time ports are bound).
    """
    stream = sys.__stderr__ or sys.stderr
    stream.write(f"logatron: {message}\n")
    stream.flush()
    raise SystemExit(1)


def _oneLine(error: BaseException) -> str:
    if isinstance(error, Failure):
        error = error.value
    text = str(error) or error.__class__.__name__
    return " ".join(text.split())
