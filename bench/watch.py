"""
How soon ``logsvc-query watch`` prints a LOG line: a line client sends one line at a
time and the time until watch prints it is taken, COUNT times, paced by PAUSE.
The goal is a median under 100 ms.
"""

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

from bench.common import BenchError, Logsvc, percentiles, report

QUERY = os.path.join(os.path.dirname(sys.executable), "logsvc-query")


def run(count: int, pause: float, serverArgs: tuple, timeout: float) -> dict:
    server = Logsvc(*serverArgs, store="memory:", listeners=("port", "pb")).start()
    watcher = subprocess.Popen(
        [QUERY, "--connect", f"tcp:127.0.0.1:{server.ports['pb']}", "watch", "--json",
         "--client", "watched", "--events", "log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if watcher.stderr.readline() != "watching; Ctrl-C to stop\n":
            raise BenchError("logsvc-query watch did not start")
        selector = selectors.DefaultSelector()
        selector.register(watcher.stdout, selectors.EVENT_READ)
        samples = []
        with socket.create_connection(("127.0.0.1", server.ports["port"]), timeout) as client:
            client.sendall(b"IAM watched\n")
            for n in range(count):
                sent = time.perf_counter_ns()
                client.sendall(b"LOG line %d\n" % n)
                if not selector.select(timeout):
                    raise BenchError(f"watch printed nothing for {timeout} s")
                message = json.loads(watcher.stdout.readline())
                samples.append(time.perf_counter_ns() - sent)
                if message.get("message") != f"line {n}":
                    raise BenchError(f"watch printed {message!r}, not line {n}")
                time.sleep(pause)
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout)
    finally:
        if watcher.poll() is None:
            watcher.kill()
        watcher.wait()
        watcher.stdout.close()
        watcher.stderr.close()
        server.stop()
    return report("watch", "logsvc", {"count": count, "pause_s": pause,
                                      "server_args": list(serverArgs)},
                  percentiles(samples, 50, 90, 99, 100))
