"""
``twistd logatron``: options, and the service they build.  The shared objects (client
registry, store, portal, metrics, web tree) are built here once and handed to each
listener's factory, as Twisted words' tap builds one realm and portal for every listener.
"""

import ipaddress
import sys

from twisted.cred import credentials, strcred
from twisted.internet.endpoints import UNIXServerEndpoint, serverFromString
from twisted.internet.interfaces import IPushProducer
from twisted.python import usage

from .auth import checkerFromString, makePortal
from .errors import StoreError
from .httptimeouts import httpSite
from .journal.lines import JournalLines
from .journal.protocol import JournalFactory
from .limits import DEFAULT_MAX_CONNECTIONS
from .lineservice import LineFactory
from .metrics import ServiceMetrics
from .nodes import persistenceFor
from .options import portEndpoint, positiveInteger
from .pb.avatar import LONGEST_LINE
from .pb.login import serverFactory as pbServerFactory
from .registry import ClientRegistry
from .retention import Retention, RetentionService, parseDuration, parseSize
from .service import LogService, exitWithError
from .stores import storeFromString
from .producers import ProducerGroup
from .sysloglistener import SyslogClients, datagramAddress, syslogListener
from .web import httpResource, rootResource


def endpointDescription(value: str) -> str | None:
    """A bare port number means C{tcp:N}; C{none} disables the listener."""
    if value.strip().lower() == "none":
        return None
    return portEndpoint(value)


def isLoopback(endpoint) -> bool:
    """True for unix sockets and TCP/SSL endpoints bound to a loopback address."""
    if isinstance(endpoint, UNIXServerEndpoint):
        return True
    interface = getattr(endpoint, "_interface", "")
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface or "0.0.0.0").is_loopback
    except ValueError:
        return False


class Options(usage.Options, strcred.AuthOptionMixin):
    synopsis = "[options]"
    longdesc = ("Live per-client logging (logatron protocol) and a durable append-only "
                "journal (tcp-log-server protocol), with PB and HTTP interfaces. Endpoints "
                "are Twisted endpoint strings; a bare number means tcp:N and 'none' "
                "disables a listener.")
    supportedInterfaces = [credentials.IUsernamePassword]

    optParameters = [
        ["port", None, "tcp:2212", "Line service endpoint."],
        ["journal", None, "tcp:8089:interface=127.0.0.1",
         "Journal (NDJSON) endpoint, or none."],
        ["pb", None, "tcp:8787:interface=127.0.0.1", "Perspective Broker endpoint, or none."],
        ["http", None, "tcp:8080:interface=127.0.0.1", "HTTP and WebSocket endpoint, or none."],
        ["syslog", None, "none",
         "Syslog listener: udp:PORT[:interface=ADDR], a stream endpoint (tcp:514), "
         "or none."],
        ["store", None, "sqlite:logsvc.db", "Journal storage: sqlite:PATH or memory:."],
        ["node-name", None, None,
         "This node's name in /status and /health (default: hostname:port)."],
        ["sync", None, "always",
         "When appends reach the disk: 'always' (fsync before every ack, grouped) or "
         "'os' (acks once written to the OS; a power loss may lose the last writes)."],
        ["buffer-size", None, 128, "Lines kept per client.",
         positiveInteger("--buffer-size")],
        ["max-line", None, 65536, "Longest line (bytes) on the line service.",
         positiveInteger("--max-line", LONGEST_LINE, "the longest line PB can carry")],
        ["max-entry", None, 1048576, "Longest NDJSON message (bytes) on the journal.",
         positiveInteger("--max-entry")],
        ["max-offline", None, 10000,
         "Offline client records kept; the longest-offline is evicted first.",
         positiveInteger("--max-offline")],
        ["max-connections", None, DEFAULT_MAX_CONNECTIONS,
         "Open connections per listener; more are refused with a message in the "
         "listener's protocol.", positiveInteger("--max-connections")],
        ["retain-entries", None, None, "Retention: keep at least the last N entries.",
         positiveInteger("--retain-entries")],
        ["retain-age", None, None, "Retention: keep entries younger than this (90s, 30m, "
         "12h, 7d).", parseDuration],
        ["retain-bytes", None, None, "Retention: keep about this much entry data (500M, "
         "20G; powers of 1024).", parseSize],
    ]
    optFlags = [
        ["no-journal-lines", None, "Do not append line-service events to the journal."],
    ]

    def opt_auth(self, description: str) -> None:
        # One line: twistd shows a docstring's line breaks and indentation in --help.
        """A twisted.cred checker for PB and HTTP logins (repeatable): file:PATH, memory:USER:PASSWORD or unix."""  # noqa: E501
        try:
            self.addChecker(checkerFromString(description))
        except (ValueError, strcred.UnsupportedInterfaces) as e:
            # The value itself only for a file: a memory: value holds passwords.
            kind = description.partition(":")[0]
            reason = (str(e) if isinstance(e, ValueError)
                      else "does not check user names and passwords")
            shown = description if kind == "file" and description[5:] else kind
            raise usage.UsageError(f"--auth {shown}: {reason}")

    def opt_journal_lines(self):
        """Also append line-service events to the journal (the default)."""
        self["no-journal-lines"] = False

    def parseOptions(self, options=None) -> None:
        """A bad option is one line on stderr and exit 1, not twistd's whole usage text."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            exitWithError(str(e))

    def postOptions(self) -> None:
        for name in ("port", "journal", "pb", "http"):
            description = endpointDescription(self[name])
            if description is None and name == "port":
                raise usage.UsageError("--port cannot be none: the line service is the core")
            if description is not None:
                try:
                    serverFromString(_reactor(), description)
                except (ValueError, TypeError, KeyError) as e:
                    raise usage.UsageError(f"--{name}: malformed endpoint {self[name]!r}: {e}")
            self[name] = description
        self["syslog"] = endpointDescription(self["syslog"])
        if self["syslog"] is not None:
            try:
                if datagramAddress(self["syslog"]) is None:  # a stream endpoint
                    serverFromString(_reactor(), self["syslog"])
            except (ValueError, TypeError, KeyError) as e:
                raise usage.UsageError(f"--syslog: malformed endpoint {self['syslog']!r}: {e}")
        if self["sync"] not in ("always", "os"):
            raise usage.UsageError("--sync must be 'always' or 'os'")
        self["journal-lines"] = not self.pop("no-journal-lines")
        self["retention"] = Retention(self.pop("retain-entries"), self.pop("retain-age"),
                                      self.pop("retain-bytes"))
        if not self.get("credCheckers"):
            for name in ("pb", "http"):
                if self[name] is None:
                    continue
                if not isLoopback(serverFromString(_reactor(), self[name])):
                    raise usage.UsageError(
                        f"--{name} {self[name]} is reachable from other hosts: "
                        f"give --auth, or bind it to 127.0.0.1")


SWITCH_INTERVAL = 0.0005
"""
Seconds a thread may hold the GIL while another waits for it (Python's default is
0.005).  The store's threads need it only briefly between disk calls; a shorter
interval keeps them from waiting behind the busy reactor, which gave journaled line
ingest about 10% more in C{bench/run.py lines --journal}.
"""


def _reactor():
    from twisted.internet import reactor
    return reactor


def makeService(config, reactor=None) -> LogService:
    sys.setswitchinterval(SWITCH_INTERVAL)
    if reactor is None:
        reactor = _reactor()
    registry = ClientRegistry(reactor, bufferSize=config["buffer-size"],
                              maxOffline=config["max-offline"])
    try:
        store = storeFromString(reactor, config["store"], **_storeOptions(config))
    except StoreError as e:
        exitWithError(str(e))
    service = LogService(registry, store, reactor, maxConnections=config["max-connections"])
    service.nodeName = config["node-name"]
    service.persistence = persistenceFor(registry, config["store"], reactor)
    lineFactory = LineFactory(registry, reactor, config["max-line"])
    service.addListener("port", config["port"], serverFromString(reactor, config["port"]),
                        lineFactory)
    journalReaders: set = set()
    if config["journal"] is not None:
        journal = JournalFactory(store, config["max-entry"], reactor)
        journalReaders = journal.readers
        service.addListener("journal", config["journal"],
                            serverFromString(reactor, config["journal"]), journal)
    producer: IPushProducer = lineFactory
    if config["syslog"] is not None:
        producer = _addSyslog(service, config, reactor, producer)
    if config["journal-lines"]:
        registry.addObserver(JournalLines(store, producer=producer), localOnly=True)
    if config["retention"]:
        RetentionService(store, config["retention"], reactor).setServiceParent(service)
    metrics = ServiceMetrics(registry, store, service.startTime, service.listenerStates,
                             service.syslog, journalReaders)
    webRoot = rootResource(service, metrics)
    checkers = config.get("credCheckers") or []
    portal = makePortal(service, checkers, webRoot)
    if config["pb"] is not None:
        service.addListener("pb", config["pb"], serverFromString(reactor, config["pb"]),
                            pbServerFactory(portal))
    if config["http"] is not None:
        service.addListener("http", config["http"], serverFromString(reactor, config["http"]),
                            httpSite(httpResource(webRoot, portal if checkers else None),
                                     reactor))
    return service


def _addSyslog(service: LogService, config, reactor, lineProducer) -> ProducerGroup:
    """The syslog listener; returns what the journal pauses: line and syslog ingest."""
    clients = service.syslog = SyslogClients(service.registry, reactor)
    clients.setServiceParent(service)
    endpoint, factory, producer = syslogListener(reactor, config["syslog"], clients,
                                                 config["max-line"])
    service.addListener("syslog", config["syslog"], endpoint, factory)
    return ProducerGroup([lineProducer, producer])


def _storeOptions(config) -> dict:
    return {"sync": config["sync"]} if config["store"].startswith("sqlite:") else {}
