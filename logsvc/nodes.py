"""
Several nodes, one view of every client (C{--store postgresql://...}).

Each node keeps its own clients' records and saves the changed ones once per tick
(L{logsvc.persistence}); here the nodes share the rest through the database:

  - a name online on one node is refused on the others: a line client's name is a
    session-level advisory lock on this node's connection, which PostgreSQL releases
    when that connection dies, with the node;
  - every node reads the rows other nodes saved (a notification after each save, and
    a poll), so any node answers about any client, at most about a tick behind;
  - each node holds an advisory lock of its own and beats a heartbeat; a node whose
    lock is free or whose heartbeat is stale is dead, and the first node to see it
    marks its clients offline (rings kept);
  - line events of this node's clients are sent on a channel, batched per tick, to the
    PB and WebSocket subscribers of every other node, but only while some other node
    has such subscribers: a node says so in its row and with a notification when its
    first subscriber arrives (and when its last leaves), and every node reads the rows
    with each heartbeat.  Meanwhile a node holds its last L{HOLD} seconds of events;
    the node that learns of a new subscriber sends those since the subscriber's node
    had it (less one tick), so a subscriber misses nothing from its acknowledgement on
    as long as its announcement arrives within L{HOLD} seconds (the notification takes
    milliseconds; the heartbeat reads it within a second anyway).  The comparison uses
    each node's clock: keep the nodes' clocks in step (NTP).
"""

import json
import socket
import threading
import time
import uuid
from collections import deque

from twisted.internet.defer import succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from .errors import StoreError, oneLine
from .interfaces import IEventObserver
from .persistence import (CHANGES_CHANNEL, CLIENTS_LOCK, PostgreSQLClients,
                          RegistryPersistence, SQLiteClients, createClients)

HEARTBEAT = 1.0
"""Seconds between a node's heartbeats, each followed by a look for dead nodes."""

STALE = 5.0
"""A node whose heartbeat is older than this (seconds) is dead, even if its lock is held
(a lost network can leave its connection open on the server for minutes)."""

EVENTS_TICK = 0.1
"""Seconds between batches of this node's events sent to the other nodes."""

EVENTS_PENDING = 20_000
"""Events waiting for the next batch, at most; more are dropped (and counted)."""

EVENTS_CHANNEL = "logsvc_events"

HOLD = 2.0
"""Seconds of events a node holds while no other node has subscribers (see above)."""

PAYLOAD_BYTES = 7900
"""Largest notification payload sent (PostgreSQL's limit is 8000 bytes)."""

NODE_LOCKS = 0x6C6F6E64
"""The first key of every node's advisory lock (the second is its key)."""

POLL = 1.0
"""Seconds the listening thread waits for a notification before reading anyway."""

BACKOFF = (0.1, 2.0)


def nodeName(service) -> str:
    """C{--node-name}, or this host's name and the line service's port."""
    if getattr(service, "nodeName", None):
        return service.nodeName
    port = service.endpoints.get("port", "")
    if service.listening("port"):
        port = service.getServiceNamed("port")._waitingForPort.result.getHost().port
    return f"{socket.gethostname()}:{port}"


def persistenceFor(registry, description: str, clock):
    """What keeps the registry for a C{--store}: None for C{memory:}."""
    from .postgresql import isPostgreSQL
    if isPostgreSQL(description):
        node = uuid.uuid4().hex
        return SharedRegistry(registry, PostgreSQLClients(description, node),
                              PostgreSQLNodes(description, node), clock)
    if description.startswith("sqlite:"):
        return RegistryPersistence(registry, SQLiteClients(description[len("sqlite:"):]),
                                   clock)
    return None


def payloads(node: str, events: list, limit: int = PAYLOAD_BYTES, seq: int = 0) -> list:
    """
    C{events} as notification payloads of at most C{limit} UTF-8 bytes, in order:
    C{{"node": node, "seq": n, "events": [[kind, name, time, fields], ...]}}, C{n}
    counting up from C{seq} (PostgreSQL delivers identical payloads of one
    transaction once).  An event too large for one payload has its message (or
    value) cut to fit and is marked C{truncated}.
    """
    head = len(_payload(node, 2 ** 63, []).encode())
    found: list[str] = []
    batch: list[str] = []
    size = head
    for event in events:
        encoded = json.dumps(event, ensure_ascii=False)
        length = len(encoded.encode())
        if head + length > limit:
            encoded, length = _cut(event, limit - head)
        if batch and size + length + 1 > limit:
            found.append(_payload(node, seq + len(found), batch))
            batch, size = [], head
        batch.append(encoded)
        size += length + 1
    if batch:
        found.append(_payload(node, seq + len(found), batch))
    return found


def _payload(node: str, seq: int, encoded: list) -> str:
    return '{"node": %s, "seq": %d, "events": [%s]}' % (json.dumps(node), seq,
                                                        ",".join(encoded))


def _cut(event: list, budget: int) -> tuple:
    kind, name, time, fields = event
    key = "message" if "message" in fields else "value" if "value" in fields else None
    text = fields[key] if key else ""
    while True:
        cut = {**fields, key: text} if key else {}
        encoded = json.dumps([kind, name, time, {**cut, "truncated": True}],
                             ensure_ascii=False)
        length = len(encoded.encode())
        if length <= budget or not text:
            return encoded, length
        perByte = len(text) / len(text.encode())
        text = text[:max(0, len(text) - int((length - budget) * perByte) - 1)]


@implementer(IEventObserver)
class SharedRegistry(RegistryPersistence):
    """
    The registry's persistence on PostgreSQL and its part in the cluster: the name
    claims the registry asks for, heartbeats and the look for dead nodes, the records
    and events of other nodes' clients.  C{run(f, *args)} runs blocking work off the
    reactor (one thread, so claims, releases and heartbeats keep their order).
    """

    log = Logger()

    def __init__(self, registry, backend: PostgreSQLClients, nodes: "PostgreSQLNodes",
                 clock, run=None):
        super().__init__(registry, backend, clock, run)
        self._nodes = nodes
        self._nodePool = ThreadPool(minthreads=1, maxthreads=1, name="logsvc-nodes")
        self._runNodes = run or (lambda f, *args: deferToThreadPool(
            clock, self._nodePool, f, *args))
        self._heartbeat = LoopingCall(self.beat)
        self._heartbeat.clock = clock
        self._beating = None
        self._events: list = []
        self._held: deque = deque(maxlen=EVENTS_PENDING)  # calls, while nobody listens
        self._subscribed: dict[str, float] = {}     # other nodes with subscribers: since
        self._heard = 0         # announcements heard: a heartbeat read before is stale
        self._since: float | None = None    # since when this node has subscribers
        self.droppedEvents = 0
        self._sending = None
        self._sender = LoopingCall(self.sendEvents)
        self._sender.clock = clock
        self._listener: Listener | None = None
        self._unreachable = False
        self._leaving = None
        self._reportedDrops = 0

    def open(self) -> None:
        """Synchronously: join the cluster, sweep dead nodes, load every record."""
        self._nodes.open()
        super().open()
        for name, record, online in self._backend.others:
            self._registry.applyRemote(name, json.loads(record), online)
        self._subscribed = self._nodes.subscribed()
        self._registry.names = self
        self._registry.addObserver(self, localOnly=True)
        self._registry.subscribersChanged = self.subscribersChanged
        self._nodePool.start()
        self._heartbeat.start(HEARTBEAT, now=False)
        self._sender.start(EVENTS_TICK, now=False)
        self._listener = self._nodes.listen(self._clock, self._backend.version,
                                            self.remoteRows, self._registry.remoteEvents,
                                            self.othersSubscribed)

    # Names (the registry's claims)

    def claim(self, name: str):
        """Deferred firing with True once this node holds C{name}, False if another does."""
        return self._runNodes(self._nodes.lock, name)

    def release(self, name: str) -> None:
        self._runNodes(self._nodes.unlock, name).addErrback(lambda _: None)

    # Heartbeats and dead nodes

    def beat(self):
        """Beat, then mark dead nodes' clients offline; Deferred."""
        if self._beating is not None:
            return self._beating
        self._beating = beating = self._runNodes(self._nodes.beat,
                                                 self._registry.claimedNames(), STALE,
                                                 self._since)
        beating.addCallbacks(self._beaten, self._notBeaten, callbackArgs=(self._heard,))
        return beating

    def _beaten(self, result: tuple, heard: int) -> None:
        self._beating = None
        swept, dead, subscribed = result
        if heard == self._heard:
            for node in set(self._subscribed) - set(subscribed):
                self.othersSubscribed(node, None)
            for node, since in subscribed.items():
                self.othersSubscribed(node, since)
        if self._unreachable:
            self._unreachable = False
            self.log.info("the cluster's database is reachable again")
        if swept:
            # Other nodes took this one for dead: say again what is online here.
            self.log.warn("this node was taken for dead; its clients are saved again")
            self._registry.resave()
        if dead:
            self.log.info("marked offline the clients of {n} dead node(s)", n=dead)

    def _notBeaten(self, failure) -> None:
        self._beating = None
        if not self._unreachable:
            self._unreachable = True
            self.log.error("heartbeat failed: {error}", error=failure.getErrorMessage())

    def remoteRows(self, rows: list) -> None:
        """Records saved by other nodes: C{(name, saved form, online there)}."""
        for name, saved, online in rows:
            self._registry.applyRemote(name, saved, online)

    # Subscribers to other nodes' events, here and there

    def subscribersChanged(self, present: bool) -> None:
        """This node's first subscriber arrived, or its last left: tell the others."""
        self._since = self._clock.seconds() if present else None
        self._runNodes(self._nodes.announce, self._since).addErrback(
            lambda failure: self.log.warn("could not announce subscribers: {error}",
                                          error=failure.getErrorMessage()))

    def othersSubscribed(self, node: str, since: float | None) -> None:
        """C{node} has subscribers since C{since} (its clock), or none (None)."""
        self._heard += 1
        if since is None:
            self._subscribed.pop(node, None)
            return
        first = not self._subscribed
        self._subscribed[node] = since
        if first:
            held, self._held = self._held, deque(maxlen=EVENTS_PENDING)
            for call in held:
                if call[2] >= since - EVENTS_TICK:
                    call[0](*call[1:])

    # This node's events, for the other nodes

    def logged(self, name: str, time: float, messages: list, truncated: bool,
               fields: list | None = None) -> None:
        if not self._subscribed:
            self._held.append((self._logged, name, time, messages, truncated, fields))
            return
        self._logged(name, time, messages, truncated, fields)

    def _logged(self, name: str, time: float, messages: list, truncated: bool,
                fields: list | None) -> None:
        room = EVENTS_PENDING - len(self._events)
        if room < len(messages):
            self.droppedEvents += len(messages) - max(room, 0)
            messages = messages[:max(room, 0)]
        extra = {"truncated": True} if truncated else {}
        for n, message in enumerate(messages):
            self._events.append(["log", name, time, {
                "message": message, **(extra if fields is None else fields[n])}])

    def event(self, kind: str, name: str, time: float, fields: dict) -> None:
        if not self._subscribed:
            self._held.append((self._event, name, time, kind, fields))
            return
        self._event(name, time, kind, fields)

    def _event(self, name: str, time: float, kind: str, fields: dict) -> None:
        if len(self._events) >= EVENTS_PENDING:
            self.droppedEvents += 1
            return
        self._events.append([kind, name, time, fields])

    def sendEvents(self):
        """Send the events since the last batch; Deferred."""
        held = self._held
        old = self._clock.seconds() - HOLD
        while held and held[0][2] < old:
            held.popleft()
        if self._sending is not None or not self._events:
            return self._sending
        events, self._events = self._events, []
        self._sending = sending = self._runNodes(self._nodes.publish, events)
        sending.addBoth(self._sent)
        return sending

    def _sent(self, result) -> None:
        self._sending = None
        if isinstance(result, Failure):
            self.log.warn("events not sent to other nodes: {error}",
                          error=result.getErrorMessage())
        if self.droppedEvents > self._reportedDrops:
            self.log.warn("{n} events not sent to other nodes: more than {limit} waited",
                          n=self.droppedEvents - self._reportedDrops, limit=EVENTS_PENDING)
            self._reportedDrops = self.droppedEvents

    def close(self):
        """Send the last events, save everything, leave the cluster (once)."""
        if self._leaving is not None:
            return self._leaving
        for loop in (self._heartbeat, self._sender):
            if loop.running:
                loop.stop()
        self._registry.removeObserver(self)
        self._registry.subscribersChanged = None
        sent = self._sending or succeed(None)
        sent.addBoth(lambda _: self.sendEvents())
        sent.addBoth(lambda _: super(SharedRegistry, self).close())
        sent.addBoth(lambda _: self._leave())
        self._leaving = sent
        return sent

    def _leave(self):
        """In the nodes' thread, after what is queued there; then stop that thread."""
        listener, self._listener = self._listener, None
        left = self._runNodes(self._nodes.close, listener)
        left.addErrback(lambda failure: self.log.warn(
            "could not leave the cluster cleanly: {error}", error=failure.getErrorMessage()))
        if self._nodePool.started:
            left.addBoth(lambda _: self._nodePool.stop())
        return left


class PostgreSQLNodes:
    """
    This node's own connection (thread side): it holds the node's lock and the
    locks of the names online here, beats the heartbeat, sweeps dead nodes and
    sends events.  If it breaks, the locks went with it: a new connection takes
    them again.
    """

    log = Logger()

    def __init__(self, uri: str, node: str, name: str | None = None):
        self.uri = uri
        self.node = node
        self.name = name or socket.gethostname()
        self._connection = None
        self._fresh = False     # the connection is new: the names' locks are gone
        self._sent = 0          # event payloads sent
        self._retryAt = 0.0     # the server was unreachable: not again before this

    def _connect(self):
        from .postgresql.store import connect
        connection = self._connection
        if connection is not None and not connection.closed and not connection.broken:
            return connection
        if time.monotonic() < self._retryAt:
            # Claims wait in line behind this thread: fail them fast while it is down.
            raise StoreError("the cluster's database is unreachable")
        try:
            connection = connect(self.uri, autocommit=True)
        except StoreError:
            self._retryAt = time.monotonic() + BACKOFF[1]
            raise
        self._connection = connection
        self._fresh = True
        createClients(connection)
        with connection.transaction():
            connection.execute(
                "INSERT INTO logsvc_nodes (node, name, key, heartbeat) VALUES"
                " (%s, %s, hashtext(%s), now()) ON CONFLICT (node) DO NOTHING",
                (self.node, self.name, self.node))
        connection.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                           (NODE_LOCKS, self.node))
        return connection

    def open(self) -> None:
        """Join the cluster and sweep nodes that died (at start-up, before clients)."""
        import psycopg
        try:
            self.sweep(STALE)
        except (psycopg.Error, StoreError) as e:
            raise StoreError(f"cannot join the cluster in postgresql: "
                             f"{' '.join(str(e).split())}") from None
        self._fresh = False

    def lock(self, name: str) -> bool:
        return self._connect().execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
            ("logsvc-name:" + name,)).fetchone()[0]

    def unlock(self, name: str) -> None:
        self._connect().execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                                ("logsvc-name:" + name,))

    def beat(self, claimed: list, stale: float, since: float | None) -> tuple:
        """
        Beat, saying since when this node has subscribers (C{since}); C{(swept, dead,
        subscribed)}: whether another node had swept this one (its clients must be saved
        again), how many dead nodes this call swept, and L{subscribed}.
        """
        connection = self._connect()
        if self._fresh:
            # A new connection: take again the names claimed here.
            self._fresh = False
            connection.execute(
                "SELECT pg_try_advisory_lock(hashtextextended('logsvc-name:' || n, 0))"
                " FROM unnest(%s::text[]) AS n", (claimed,))
        with connection.transaction():
            row = connection.execute(
                "SELECT swept FROM logsvc_nodes WHERE node = %s FOR UPDATE",
                (self.node,)).fetchone()
            connection.execute(
                "INSERT INTO logsvc_nodes (node, name, key, heartbeat, subscribed) VALUES"
                " (%s, %s, hashtext(%s), now(), %s) ON CONFLICT (node) DO UPDATE"
                " SET heartbeat = now(), swept = false, subscribed = excluded.subscribed",
                (self.node, self.name, self.node, since))
        dead = self.sweep(stale)
        return (row is None or row[0]), dead, self.subscribed()

    def subscribed(self) -> dict:
        """The other live nodes with subscribers to events: since when, by node."""
        return dict(self._connect().execute(
            "SELECT node, subscribed FROM logsvc_nodes"
            " WHERE node <> %s AND NOT swept AND subscribed IS NOT NULL", (self.node,)))

    def announce(self, since: float | None) -> None:
        """This node has subscribers since C{since}, or none: in its row, and notified."""
        connection = self._connect()
        with connection.transaction():
            connection.execute("UPDATE logsvc_nodes SET subscribed = %s WHERE node = %s",
                               (since, self.node))
            connection.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, json.dumps(
                {"node": self.node, "subscribed": since})))

    def sweep(self, stale: float) -> int:
        """Mark offline the clients of every dead node not swept yet; how many nodes."""
        connection = self._connect()
        dead = [node for node, in connection.execute(DEAD, {
            "me": self.node, "stale": stale, "locks": NODE_LOCKS})]
        if not dead:
            return 0
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (CLIENTS_LOCK,))
            for statement in SWEEP:
                connection.execute(statement, {"dead": dead})
            connection.execute("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, self.node))
        self.log.info("nodes {nodes} are dead: their clients are offline", nodes=dead)
        return len(dead)

    def listen(self, reactor, version: int, onRows, onEvents, onSubscribed) -> "Listener":
        """Hear the other nodes from C{version} on, in a thread of its own."""
        listener = Listener(self.uri, version, reactor, self.node, onRows, onEvents,
                            onSubscribed)
        listener.start()
        return listener

    def publish(self, events: list) -> None:
        connection = self._connect()
        batches = payloads(self.node, events, seq=self._sent)
        self._sent += len(batches)
        with connection.transaction():
            for payload in batches:
                connection.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, payload))

    def close(self, listener: "Listener | None" = None) -> None:
        """
        Leave the cluster: stop C{listener}; this node's row goes, and with the
        connection its locks.
        """
        if listener is not None:
            listener.stop()
        connection = self._connection
        if connection is None or connection.closed:
            return
        try:
            if not connection.broken:
                connection.execute("DELETE FROM logsvc_nodes WHERE node = %s", (self.node,))
        finally:
            connection.close()


DEAD = """
SELECT node FROM logsvc_nodes n
WHERE NOT swept AND node <> %(me)s
AND (heartbeat < now() - %(stale)s * interval '1 second'
     OR NOT EXISTS (SELECT 1 FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                    AND l.database = (SELECT oid FROM pg_database
                                      WHERE datname = current_database())
                    AND l.classid = %(locks)s::bigint::oid
                    AND l.objid = (n.key::bigint & 4294967295)::oid))
"""
"""Nodes that are dead: their lock is free, or their heartbeat is stale."""

SWEEP = (
    "UPDATE logsvc_clients c SET node = NULL, writer = NULL,"
    " version = nextval('logsvc_clients_version'),"
    " record = (c.record::jsonb || jsonb_build_object('online', false,"
    " 'disconnectedAt', extract(epoch FROM n.heartbeat)::float8))::text"
    " FROM logsvc_nodes n WHERE c.node = n.node AND n.node = ANY(%(dead)s)",
    "UPDATE logsvc_nodes SET swept = true WHERE node = ANY(%(dead)s)",
    "DELETE FROM logsvc_nodes WHERE swept AND heartbeat < now() - interval '1 day'",
)


class Listener:
    """
    A thread that hears other nodes' saves and events: after a save notification (or
    a poll), it reads the rows changed since the last read and hands them to
    C{onRows} on the reactor; event batches of other nodes go to C{onEvents}, their
    announcements of subscribers to C{onSubscribed}.
    """

    log = Logger()

    def __init__(self, uri: str, version: int, reactor, node: str, onRows, onEvents,
                 onSubscribed):
        self._uri = uri
        self._version = version
        self._reactor = reactor
        self._node = node
        self._onRows = onRows
        self._onEvents = onEvents
        self._onSubscribed = onSubscribed
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="logsvc-cluster",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(POLL + 5)

    def _loop(self) -> None:
        import psycopg
        from .postgresql.store import connect
        wait = BACKOFF[0]
        while not self._stopping.is_set():
            try:
                connection = connect(self._uri, autocommit=True)
            except StoreError as e:
                self.log.warn("cannot hear other nodes: {error}", error=e)
                self._stopping.wait(wait)
                wait = min(wait * 2, BACKOFF[1])
                continue
            wait = BACKOFF[0]
            try:
                connection.execute(f"LISTEN {CHANGES_CHANNEL}")
                connection.execute(f"LISTEN {EVENTS_CHANNEL}")
                self._read(connection)
                while not self._stopping.is_set():
                    # The generator holds the connection: finish it before querying.
                    heard = list(connection.notifies(timeout=POLL, stop_after=1))
                    if heard:
                        heard += connection.notifies(timeout=0.001, stop_after=1000)
                    changed = not heard
                    for notification in heard:
                        if notification.channel == EVENTS_CHANNEL:
                            self._events(notification.payload)
                        else:
                            changed = True
                    if changed:
                        self._read(connection)
            except psycopg.Error as e:
                if not self._stopping.is_set():
                    self.log.warn("hearing other nodes interrupted: {error}",
                                  error=oneLine(e))
                    self._stopping.wait(BACKOFF[0])
            finally:
                connection.close()

    def _read(self, connection) -> None:
        rows = connection.execute(
            "SELECT name, record, node IS NOT NULL, version FROM logsvc_clients"
            " WHERE version > %(version)s AND writer IS DISTINCT FROM %(node)s"
            " ORDER BY version", {"node": self._node, "version": self._version}).fetchall()
        if rows:
            self._version = rows[-1][3]
            self._reactor.callFromThread(self._onRows, [
                (name, json.loads(record), online) for name, record, online, _ in rows])

    def _events(self, payload: str) -> None:
        batch = json.loads(payload)
        if batch["node"] == self._node:
            return
        if "subscribed" in batch:
            self._reactor.callFromThread(self._onSubscribed, batch["node"], batch["subscribed"])
        else:
            self._reactor.callFromThread(self._onEvents, batch["events"])
