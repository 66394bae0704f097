"""
WebSocket fan-out: S subscribers follow ``/stream?events=log`` while N line clients each
send M ``LOG`` lines; prints one JSON line with the events delivered per second.

Every subscriber must account for every line, as a delivered event or inside a
``dropped`` notice; the run is timed from the first line sent to the last subscriber
done.  ``python bench/run.py fanout [--subscribers 50 --clients 8 --lines 5000]``
"""

import asyncio
import functools
import time

import websockets

from bench.common import BenchError, Generators, Logsvc, processes, report
from bench.lines import sendLines

DROPPED_PREFIX = '{"type": "dropped"'


def subscribe(port: int, count: int, expected: int, timeout: float, ready, results) -> None:
    """One process of C{count} subscribers; puts C{(delivered, dropped, finishedAt)} each."""

    async def follow(ws) -> tuple:
        delivered = dropped = 0
        while delivered + dropped < expected:
            message = await ws.recv()
            if message.startswith(DROPPED_PREFIX):
                dropped += int(message.rsplit(":", 1)[1].rstrip("}"))
            else:
                delivered += 1
        return delivered, dropped, time.monotonic()

    async def main() -> list:
        url = f"ws://127.0.0.1:{port}/stream?events=log"
        sockets = [await websockets.connect(url, max_size=None) for _ in range(count)]
        ready.put(("ready", count))
        try:
            return await asyncio.wait_for(asyncio.gather(*map(follow, sockets)), timeout)
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))

    try:
        results.put(("ok", asyncio.run(main())))
    except Exception as e:
        ready.put(("error", f"subscriber: {e.__class__.__name__}: {e}"))
        results.put(("error", f"subscriber: {e.__class__.__name__}: {e}"))


def run(subscribers: int = 50, clients: int = 8, lines: int = 5000, size: int = 100,
        perProcess: int = 25, timeout: float = 300.0) -> dict:
    server = Logsvc("--no-journal-lines", store="memory:", listeners=("port", "http"))
    parameters = {"subscribers": subscribers, "clients": clients, "lines": lines, "size": size}
    expected = clients * lines
    with server:
        server.start()
        ready, results = processes.Queue(), processes.Queue()
        followers = [processes.Process(
            target=subscribe, daemon=True,
            args=(server.ports["http"], min(perProcess, subscribers - first), expected,
                  timeout, ready, results))
            for first in range(0, subscribers, perProcess)]
        for follower in followers:
            follower.start()
        try:
            for _ in followers:
                outcome = ready.get(timeout=30)
                if outcome[0] == "error":
                    raise BenchError(outcome[1])
            work = functools.partial(sendLines, server.ports["port"], lines, size)
            with Generators(work, list(range(clients)), clients) as generators:
                generators.ready(timeout=30)
                before = server.cpu()
                started = generators.go()
                generators.results(timeout)
                outcomes = [results.get(timeout=timeout) for _ in followers]
        finally:
            for follower in followers:
                follower.join(5)
                if follower.is_alive():
                    follower.terminate()
        failures = [o[1] for o in outcomes if o[0] == "error"]
        if failures:
            raise BenchError("; ".join(failures))
        done = [each for o in outcomes for each in o[1]]
        seconds = max(finished for _, _, finished in done) - started
        delivered = sum(d for d, _, _ in done)
        figures = {"seconds": round(seconds, 3),
                   "delivered_events_per_s": round(delivered / seconds),
                   "delivered": delivered,
                   "dropped": sum(d for _, d, _ in done),
                   **server.figures(since=before)}
    return report("fanout", "logsvc", parameters, figures)
