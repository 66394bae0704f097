"""
How soon ``logsvc-query watch`` prints a LOG line: a line client sends one line at a
time and the time until watch prints it is taken, COUNT times, paced by PAUSE.
The goal is a median under 100 ms.
"""

import time

from bench.common import BenchError, Logsvc, percentiles, report
from bench.wire import Watch, lineClient


def run(count: int, pause: float, serverArgs: tuple, timeout: float) -> dict:
    server = Logsvc(*serverArgs, store="memory:", listeners=("port", "pb")).start()
    try:
        samples = []
        with Watch(server.ports["pb"], "--client", "watched", "--events", "log") as watch, \
                lineClient(server.ports["port"], "watched", timeout) as client:
            for n in range(count):
                sent = time.perf_counter_ns()
                client.sendall(b"LOG line %d\n" % n)
                message = watch.next(timeout)
                samples.append(time.perf_counter_ns() - sent)
                if message.get("message") != f"line {n}":
                    raise BenchError(f"watch printed {message!r}, not line {n}")
                time.sleep(pause)
    finally:
        server.stop()
    return report("watch", "logsvc", {"count": count, "pause_s": pause,
                                      "server_args": list(serverArgs)},
                  percentiles(samples, 50, 90, 99, 100))
