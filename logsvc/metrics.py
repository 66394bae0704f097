"""
Prometheus metrics for one service, read from its shared objects' counters at scrape time.

Nothing here runs per line: the collector reads the registry's totals and the listeners'
connection counts only when C{/metrics} is scraped.  Only store commits (a histogram)
and slow-subscriber drops are counted as they happen, and both are rare by comparison.
"""

from collections.abc import Callable, Collection

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily,
)

from . import __version__
from .interfaces import IClientRegistry, IJournalStore

COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    """
    The metrics of one service in a registry of their own, so two services in one
    process (as in tests) never share or clash.  It is given what it reads: the client
    registry and store, the start time, C{listenerStates} (L{LogService.listenerStates}),
    the syslog listener's clients if any, and the journal factory's C{readers} (the
    reads in progress on the journal port, for the reader-lag gauge).
    """

    def __init__(self, registry: IClientRegistry, store: IJournalStore, startTime: float,
                 listenerStates: Callable[[], dict], syslog=None,
                 journalReaders: Collection = ()):
        self.clients = registry
        self.store = store
        self.startTime = startTime
        self.listenerStates = listenerStates
        self.syslog = syslog
        self.journalReaders = journalReaders
        self.head = self.first = self.deduplicationLag = 0
        self.streams: set = set()
        self.registry = CollectorRegistry(auto_describe=True)
        self.commitSeconds = Histogram(
            "logsvc_store_commit_seconds", "Time each journal store commit took.",
            buckets=COMMIT_BUCKETS, registry=self.registry)
        self.appends = Counter(
            "logsvc_journal_appends", "Journal entries committed by this process.",
            registry=self.registry)
        self.dropped = Counter(
            "logsvc_stream_dropped_messages",
            "Messages not delivered to WebSocket subscribers that could not keep up.",
            registry=self.registry)
        self.registry.register(_ServiceCollector(self))
        store.addCommitObserver(self._committed)

    def _committed(self, seconds: float, count: int) -> None:
        self.commitSeconds.observe(seconds)
        self.appends.inc(count)

    async def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from C{accept}."""
        self.head = await self.store.head()
        self.first = await self.store.first()
        self.deduplicationLag = await self.store.deduplicationLag()
        encoder, contentType = choose_encoder(accept or "")
        return encoder(self.registry), contentType


class _ServiceCollector:
    """Reads the shared objects' counters when scraped."""

    def __init__(self, metrics: ServiceMetrics):
        self._metrics = metrics

    def describe(self) -> list:
        return []

    def collect(self):
        metrics = self._metrics
        registry = metrics.clients
        totals = registry.totals()

        yield InfoMetricFamily("logsvc_build", "logsvc version.", value={"version": __version__})
        yield GaugeMetricFamily("logsvc_start_time_seconds", "When the service started (epoch).",
                                value=metrics.startTime)

        up = GaugeMetricFamily("logsvc_listener_up", "1 when the listener's port is bound.",
                               labels=["listener"])
        connections = GaugeMetricFamily("logsvc_connections", "Open connections by listener.",
                                        labels=["listener"])
        refused = CounterMetricFamily("logsvc_refused_connections",
                                      "Connections refused at --max-connections, by listener.",
                                      labels=["listener"])
        for name, state in metrics.listenerStates().items():
            up.add_metric([name], 1 if state.up else 0)
            connections.add_metric([name], state.connections)
            refused.add_metric([name], state.refused)
        yield up
        yield connections
        yield refused

        clients = GaugeMetricFamily("logsvc_clients", "Known client names by state.",
                                    labels=["state"])
        for state, count in registry.counts().items():
            clients.add_metric([state], count)
        yield clients

        for name, key, text in (
                ("logsvc_lines", "lines", "LOG lines received."),
                ("logsvc_sets", "sets", "SET lines received."),
                ("logsvc_received_bytes", "bytes", "Bytes received on the line service."),
                ("logsvc_truncated_lines", "truncated", "Lines cut at --max-line."),
                ("logsvc_ignored_lines", "ignored", "Lines that were neither LOG nor SET.")):
            yield CounterMetricFamily(name, text, value=totals[key])

        if metrics.syslog is not None:
            syslog = metrics.syslog.counters
            for key, text in (
                    ("messages", "Syslog messages received and logged."),
                    ("malformed", "Syslog messages without a valid PRI, kept as raw text."),
                    ("truncated", "Syslog messages cut at --max-line."),
                    ("refused", "Syslog messages dropped: a line client held the name."),
                    ("bytes", "Bytes of syslog messages received.")):
                yield CounterMetricFamily(f"logsvc_syslog_{key}", text, value=syslog[key])

        yield GaugeMetricFamily("logsvc_journal_head", "Index of the journal's last entry.",
                                value=metrics.head)
        yield GaugeMetricFamily("logsvc_journal_first",
                                "Lowest journal index retention has kept.",
                                value=metrics.first)
        yield GaugeMetricFamily(
            "logsvc_store_deduplication_lag",
            "Committed entries the store has yet to check for an earlier identical copy.",
            value=metrics.deduplicationLag)
        yield GaugeMetricFamily("logsvc_stream_subscribers", "Open WebSocket subscribers.",
                                value=len(metrics.streams))
        positions = [s.position for s in metrics.streams if s.position is not None]
        positions += [read.next - 1 for read in metrics.journalReaders]
        yield GaugeMetricFamily(
            "logsvc_journal_reader_lag",
            "Entries the furthest-behind journal reader (journal port or WebSocket) has "
            "yet to get.",
            value=max([metrics.head - p for p in positions], default=0))
