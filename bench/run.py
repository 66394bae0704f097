"""
Benchmarks of logsvc: ``python bench/run.py SCENARIO [options]``, one JSON line per run.

Each run starts its own server (``twistd -n logatron`` or the npm tcp-log-server) in a
fresh temporary directory and drives it from separate load-generator processes.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import fanout, floor, ingest, journal, lines, load, postgresql, retention, watch  # noqa: E402  (needs the repository on the path)
from bench.common import BenchError, report  # noqa: E402


def linesScenario(args) -> None:
    lines.run(args.clients, args.lines, args.size, args.journal, args.clients_per_process,
              tuple(args.server_arg), args.timeout, args.store)


def clientsScenario(args) -> None:
    load.runClients(args.clients, args.lines, args.size, args.journal,
                    args.clients_per_process, tuple(args.server_arg), args.timeout)


def followersScenario(args) -> None:
    load.runFollowers(args.readers, args.writers, args.entries, args.in_flight, args.size,
                      args.readers_per_process, tuple(args.server_arg), args.timeout)


def watchScenario(args) -> None:
    watch.run(args.count, args.pause, tuple(args.server_arg), args.timeout)


def fanoutScenario(args) -> None:
    fanout.run(args.subscribers, args.clients, args.lines, args.size, timeout=args.timeout)


def floorScenario(args) -> None:
    for mode in args.mode or floor.MODES:
        attempt("floor", f"floor-{mode}", floor.run, mode, args.writers, args.in_flight,
                args.duration, args.size, args.timeout)


def handlerScenario(args) -> None:
    ingest.runHandler(args.records, tuple(args.server_arg), args.timeout)


def syslogScenario(args) -> None:
    ingest.runSyslog(args.senders, args.messages, tuple(args.server_arg), args.timeout)


def postgresqlScenario(args) -> None:
    postgresql.run(args.writers, args.in_flight, args.duration, args.rate, args.count,
                   args.clients, args.lines, args.timeout)


def retentionScenario(args) -> None:
    retention.run(args.retain_entries, args.rounds, args.segment, args.writers,
                  args.in_flight, args.size, tuple(args.server_arg), args.timeout)


def setup(args, target: str) -> journal.Setup:
    return journal.Setup(target, args.tcp_log_server, args.store, tuple(args.server_arg),
                         args.timeout)


def writesScenario(args, target: str) -> None:
    journal.runWrites(setup(args, target), args.writers, args.in_flight, args.duration,
                      args.size)


def catchupScenario(args, target: str) -> None:
    journal.runReads(setup(args, target), args.entries, True, None, args.size)


def pullScenario(args, target: str) -> None:
    journal.runReads(setup(args, target), args.entries, False, args.read, args.size)


def latencyScenario(args, target: str) -> None:
    journal.runLatency(setup(args, target), args.rate, args.count, args.size)


def suiteScenario(args, target: str) -> None:
    """Every scenario at the parameters the goals are stated for."""
    if target == "logsvc":
        serverArgs = tuple(args.server_arg)
        attempt("lines", target, lines.run, 8, args.lines, 100, False, 4, serverArgs,
                args.timeout)
        attempt("lines", target, lines.run, 8, args.lines, 100, True, 4, serverArgs,
                args.timeout, args.store)
    journalSetup = setup(args, target)
    for writers, inFlight in ((1, 1), (1, 100), (8, 1), (8, 100)):
        attempt("writes", target, journal.runWrites, journalSetup, writers, inFlight,
                args.duration)
        if target == "logsvc" and (writers, inFlight) == (1, 1):
            for mode in floor.MODES:
                attempt("floor", f"floor-{mode}", floor.run, mode, 1, 1, args.duration,
                        100, args.timeout)
    attempt("catchup+pull", target, journal.runReads, journalSetup, args.entries, True, 5)
    attempt("latency", target, journal.runLatency, journalSetup)


failed = False


def attempt(scenario: str, target: str, run, *args) -> None:
    """Run one measurement; a failure is reported as a JSON line and the others go on."""
    global failed
    try:
        run(*args)
    except (BenchError, OSError) as e:
        failed = True
        report(scenario, target, {}, {"error": str(e) or e.__class__.__name__})


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    scenarios = top.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")

    def scenario(name: str, run, summary: str, targets: bool = True):
        sub = scenarios.add_parser(name, help=summary, description=summary)
        sub.set_defaults(run=run)
        sub.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                         help="extra twistd logatron option, e.g. --server-arg=--sync=os "
                              "(repeatable)")
        sub.add_argument("--timeout", type=float, default=600.0,
                         help="give up after this many seconds (default %(default)s)")
        if targets:
            sub.add_argument("--target", action="append",
                             choices=["logsvc", "tcp-log-server"],
                             help="server to measure; repeat for side by side "
                                  "(default logsvc)")
            sub.add_argument("--tcp-log-server", metavar="DIR",
                             default=os.environ.get("TCP_LOG_SERVER"),
                             help="where tcp-log-server is installed: its package directory "
                                  "or a directory with node_modules/tcp-log-server "
                                  "(default $TCP_LOG_SERVER)")
            sub.add_argument("--store", default="sqlite",
                             help="logsvc's --store: 'sqlite' (a fresh file, the default) "
                                  "or any --store value such as memory:")
            sub.add_argument("--size", type=int, default=100,
                             help="bytes of each entry's JSON, about (default %(default)s)")
        return sub

    sub = scenario("lines", linesScenario, "N clients x M LOG lines of B bytes until "
                   "processed (and journaled, with --journal)", targets=False)
    sub.add_argument("--clients", type=int, default=8)
    sub.add_argument("--lines", type=int, default=1_000_000, help="lines per client")
    sub.add_argument("--size", type=int, default=100,
                     help="bytes per line, counting 'LOG ' and the newline")
    sub.add_argument("--journal", action="store_true",
                     help="journal every event to the default SQLite store "
                          "(default: --no-journal-lines --store memory:)")
    sub.add_argument("--clients-per-process", type=int, default=4)
    sub.add_argument("--store", help="logsvc's --store (default: memory:, or a fresh "
                                     "SQLite file with --journal)")

    sub = scenario("writes", writesScenario, "durable writes: W writers, K in flight each")
    sub.add_argument("--writers", type=int, default=8)
    sub.add_argument("--in-flight", type=int, default=100)
    sub.add_argument("--duration", type=float, default=5.0, help="seconds of writing")

    sub = scenario("floor", floorScenario, "durable writes to a minimal server (no "
                   "Twisted), committing on a second thread or inline: this machine's "
                   "floor", targets=False)
    sub.add_argument("--mode", action="append", choices=floor.MODES,
                     help="repeat for several (default: both)")
    sub.add_argument("--writers", type=int, default=1)
    sub.add_argument("--in-flight", type=int, default=1)
    sub.add_argument("--duration", type=float, default=5.0, help="seconds of writing")
    sub.add_argument("--size", type=int, default=100,
                     help="bytes of each entry's JSON, about (default %(default)s)")

    sub = scenario("catchup", catchupScenario, "read E existing entries from index 1 "
                   "until current")
    sub.add_argument("--entries", type=int, default=100_000)

    sub = scenario("pull", pullScenario, "read E existing entries in successive pull "
                   "reads of R")
    sub.add_argument("--entries", type=int, default=100_000)
    sub.add_argument("--read", type=int, default=5)

    sub = scenario("latency", latencyScenario, "write-to-reader latency: one live reader, "
                   "one writer at a steady rate")
    sub.add_argument("--rate", type=float, default=1000.0, help="writes per second")
    sub.add_argument("--count", type=int, default=5000, help="writes in all")

    sub = scenario("clients", clientsScenario, "N line clients connected at once, each "
                   "logging M lines (raises the file-descriptor limit)", targets=False)
    sub.add_argument("--clients", type=int, default=5000)
    sub.add_argument("--lines", type=int, default=100, help="lines per client")
    sub.add_argument("--size", type=int, default=100,
                     help="bytes per line, counting 'LOG ' and the newline")
    sub.add_argument("--journal", action="store_true",
                     help="journal every event to a fresh SQLite file "
                          "(default: --no-journal-lines --store memory:)")
    sub.add_argument("--clients-per-process", type=int, default=625)

    sub = scenario("followers", followersScenario, "R journal readers following live "
                   "while W writers append E entries", targets=False)
    sub.add_argument("--readers", type=int, default=200)
    sub.add_argument("--writers", type=int, default=8)
    sub.add_argument("--entries", type=int, default=50_000, help="entries in all")
    sub.add_argument("--in-flight", type=int, default=100)
    sub.add_argument("--size", type=int, default=100,
                     help="bytes of each entry's JSON, about (default %(default)s)")
    sub.add_argument("--readers-per-process", type=int, default=25)

    sub = scenario("watch", watchScenario, "how soon logsvc-query watch prints a new LOG "
                   "line: the goal is a median under 100 ms", targets=False)
    sub.add_argument("--count", type=int, default=50, help="lines, one at a time")
    sub.add_argument("--pause", type=float, default=0.05, help="seconds between lines")

    sub = scenario("fanout", fanoutScenario, "S WebSocket subscribers on /stream?events=log "
                   "while N line clients each send M LOG lines as fast as they can",
                   targets=False)
    sub.add_argument("--subscribers", type=int, default=50)
    sub.add_argument("--clients", type=int, default=8, help="line clients logging")
    sub.add_argument("--lines", type=int, default=5000, help="LOG lines per client")
    sub.add_argument("--size", type=int, default=100, help="bytes per line, newline included")

    sub = scenario("handler", handlerScenario, "records/s one Python thread logs through "
                   "logsvc.handler.LogsvcHandler, and through stdlib SocketHandler to a "
                   "discarding listener, side by side", targets=False)
    sub.add_argument("--records", type=int, default=100_000)

    sub = scenario("syslog", syslogScenario, "syslog messages/s over TCP (octet-counted RFC "
                   "5424) into --syslog journaled to SQLite (--sync os), and into rsyslogd "
                   "writing a file, side by side", targets=False)
    sub.add_argument("--senders", type=int, default=4)
    sub.add_argument("--messages", type=int, default=100_000, help="messages per sender")

    sub = scenario("postgresql", postgresqlScenario, "on a throwaway PostgreSQL cluster: "
                   "durable writes beside SQLite's, write on node A to reader on node B "
                   "latency, journaled line ingest on 1 and 2 nodes", targets=False)
    sub.add_argument("--writers", type=int, default=8)
    sub.add_argument("--in-flight", type=int, default=100)
    sub.add_argument("--duration", type=float, default=5.0, help="seconds of each writes run")
    sub.add_argument("--rate", type=float, default=1000.0, help="latency: writes per second")
    sub.add_argument("--count", type=int, default=5000, help="latency: writes in all")
    sub.add_argument("--clients", type=int, default=8, help="line clients")
    sub.add_argument("--lines", type=int, default=100_000, help="lines per client")

    sub = scenario("retention", retentionScenario, "soak: a server with --retain-entries "
                   "N and one without, written to in alternating segments; file size, "
                   "WAL and RSS over time, and writes/s side by side", targets=False)
    sub.add_argument("--retain-entries", type=int, default=1_000_000)
    sub.add_argument("--rounds", type=int, default=24,
                     help="segments each server is written to (default %(default)s)")
    sub.add_argument("--segment", type=float, default=5.0,
                     help="seconds of each segment (default %(default)s)")
    sub.add_argument("--writers", type=int, default=8)
    sub.add_argument("--in-flight", type=int, default=100)
    sub.add_argument("--size", type=int, default=100,
                     help="bytes of each entry's JSON, about (default %(default)s)")

    sub = scenario("suite", suiteScenario, "every scenario at the goals' parameters")
    sub.add_argument("--lines", type=int, default=1_000_000, help="lines per client")
    sub.add_argument("--duration", type=float, default=5.0, help="seconds of each writes run")
    sub.add_argument("--entries", type=int, default=100_000)
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "target", "none") is None:
        args.target = ["logsvc"]
    if args.scenario == "floor":
        args.run(args)
    elif args.scenario in ("lines", "clients", "followers", "watch", "fanout", "handler",
                           "syslog", "postgresql", "retention"):
        attempt(args.scenario, "logsvc", args.run, args)
    else:
        for target in args.target:
            attempt(args.scenario, target, args.run, args, target)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
