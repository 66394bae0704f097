"""
Retention soak: one SQLite server with C{--retain-entries N} and one without, written
to in alternating segments (8 writers x 100 in flight), so both see the same machine
at nearly the same moments.  After each segment the retaining server's file, WAL and
resident memory are sampled; once its head has passed N (retention applies), writes/s
of the two are compared over the same rounds.

The servers check retention every 10 s: a run of a few minutes holds as many checks
(and trims) as 20 minutes of once-a-minute checks, at about 80,000 writes/s instead of
a steady production rate.
"""

import os
import sys
import time

from .common import BenchError, Logsvc, procStatus, report
from .journal import writeAll
from .wire import status


def fileSize(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def sample(server: Logsvc, started: float) -> dict:
    path = server.store.partition(":")[2]
    journal = status(server.ports["http"])
    return {"t_s": round(time.monotonic() - started), "head": journal["head"],
            "first": journal["first"], "db_mb": round(fileSize(path) / 2**20, 1),
            "wal_mb": round(fileSize(path + "-wal") / 2**20, 1),
            "rss_mb": round(procStatus(server.pid, "VmRSS") / 2**20, 1)}


def run(retain: int, rounds: int, segment: float, writers: int, inFlight: int, size: int,
        serverArgs: tuple, timeout: float) -> dict:
    on = Logsvc("--retain-entries", str(retain), *serverArgs).start()
    with on, Logsvc(*serverArgs).start() as off:
        started = time.monotonic()
        table, rates = [], []
        for number in range(rounds):
            rate = {}
            for name, server in (("off", off), ("on", on)) if number % 2 else (
                    ("on", on), ("off", off)):
                figures = writeAll(server.journalPort, writers, inFlight, size, timeout,
                                   duration=segment, firstWriter=number * writers)
                rate[name] = figures["writes_per_s"]
                rate[name + "_p99"] = figures["ack_p99_ms"]
            row = sample(on, started)
            row["off_db_mb"] = sample(off, started)["db_mb"]
            row.update(on_writes_per_s=rate["on"], off_writes_per_s=rate["off"],
                       on_ack_p99_ms=rate["on_p99"], off_ack_p99_ms=rate["off_p99"])
            table.append(row)
            rates.append((row["first"] > 1, rate))
            print("  ".join(f"{k}={v}" for k, v in row.items()), file=sys.stderr, flush=True)
        applied = [rate for trimmed, rate in rates if trimmed]
        if not applied:
            raise BenchError(f"retention never applied: head {table[-1]['head']} of "
                             f"{retain} after {rounds} rounds")
        on_rate = sum(r["on"] for r in applied) / len(applied)
        off_rate = sum(r["off"] for r in applied) / len(applied)
        steady = [row for row in table if row["first"] > 1]
        figures = {"rounds_retained": len(applied),
                   "on_writes_per_s": round(on_rate), "off_writes_per_s": round(off_rate),
                   "on_over_off": round(on_rate / off_rate, 3),
                   "ack_p99_ms_mean_on_off": [
                       round(sum(r[k] for r in applied) / len(applied), 2)
                       for k in ("on_p99", "off_p99")],
                   "db_mb_retained_min_max": [min(r["db_mb"] for r in steady),
                                              max(r["db_mb"] for r in steady)],
                   "wal_mb_max": max(r["wal_mb"] for r in table),
                   "rss_mb_retained_min_max": [min(r["rss_mb"] for r in steady),
                                               max(r["rss_mb"] for r in steady)],
                   "samples": table}
    return report("retention", "logsvc",
                  {"retain_entries": retain, "rounds": rounds, "segment_s": segment,
                   "writers": writers, "in_flight": inFlight, "size": size,
                   "server_args": list(serverArgs)}, figures)
