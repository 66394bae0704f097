"""
What every benchmark shares: the servers under test, their peak memory, load-generator
processes started together, percentiles and the one JSON line each run prints.
"""

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.server import Server, freePort  # noqa: E402  (needs ROOT on the path)

# Generators fork from a process that never started a reactor, so fork is safe and fast.
processes = multiprocessing.get_context("fork")


class BenchError(Exception):
    """The run could not be measured; the message says why in one line."""


def procStatus(pid: int, field: str) -> int:
    """A C{kB} field of C{/proc/PID/status} (C{VmHWM} is the peak resident set), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"{field} missing from /proc/{pid}/status")


def cpuSeconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# A server whose resident memory grows past this is killed, so that a run that buffers
# without bound ends as an error instead of exhausting a shared machine.
MAX_RSS = 4 * 2**30


class Target:
    """A server under test, started in a fresh temporary directory."""

    name = ""

    def __init__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-{self.name}-")
        self.directory = self._tmp.name
        self.pid = 0
        self.killedAt: int | None = None

    def watchMemory(self) -> None:
        """Kill the server (SIGKILL) if its resident memory ever exceeds L{MAX_RSS}."""
        limit = MAX_RSS

        def watch() -> None:
            while True:
                try:
                    rss = procStatus(self.pid, "VmRSS")
                except (OSError, BenchError):
                    return
                if rss > limit:
                    self.killedAt = rss
                    os.kill(self.pid, signal.SIGKILL)
                    return
                time.sleep(0.2)
        threading.Thread(target=watch, daemon=True).start()

    def peakRSS(self) -> int:
        return procStatus(self.pid, "VmHWM")

    def cpu(self) -> float:
        return cpuSeconds(self.pid)

    def figures(self, since: float = 0.0) -> dict:
        """
        What every run reports about the server itself, read before stopping it: its
        peak resident memory, and the CPU seconds it used after C{since} (a C{cpu()}).
        """
        return {"server_peak_rss_mb": round(self.peakRSS() / 2**20, 1),
                "server_cpu_s": round(self.cpu() - since, 2)}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        try:
            try:
                self.stop()
            except BenchError:
                if self.killedAt is None:
                    raise
        finally:
            self._tmp.cleanup()
            # Flush the run's dirty pages and the discards of its deleted files now, so
            # that the next measurement does not pay for this one's disk traffic.
            os.sync()
        if self.killedAt is not None:
            raise BenchError(f"{self.name} killed: resident memory reached "
                             f"{self.killedAt // 2**20} MB (limit {MAX_RSS // 2**20} MB)")


class Logsvc(Target):
    """C{twistd -n logatron} through the test suite's harness, on free loopback ports."""

    name = "logsvc"

    def __init__(self, *extra: str, store: str = "sqlite",
                 listeners=("port", "journal", "http")):
        super().__init__()
        if store == "sqlite":
            store = f"sqlite:{os.path.join(self.directory, 'journal.db')}"
        self.store = store
        self._server = Server(self.directory, *extra, store=store, listeners=listeners)
        self.ports = self._server.ports
        self._stopped = False

    def start(self) -> "Logsvc":
        try:
            self._server.start()
        except RuntimeError as e:
            raise BenchError(f"twistd logatron did not start: {' '.join(str(e).split())[:400]}")
        self.pid = self._server.process.pid
        self.watchMemory()
        return self

    @property
    def journalPort(self) -> int:
        return self.ports["journal"]

    def figures(self, since: float = 0.0) -> dict:
        """
        Also the store's commits, from C{/metrics}: how many, their mean duration, and
        how many took over 1 ms, which tells a disk's tail from the scheduler's.
        """
        figures = super().figures(since)
        if "http" not in self.ports:
            return figures
        url = f"http://127.0.0.1:{self.ports['http']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
        samples = {(sample.name, sample.labels.get("le")): sample.value
                   for family in text_string_to_metric_families(body)
                   for sample in family.samples
                   if sample.name.startswith("logsvc_store_commit_seconds")}
        count = samples[("logsvc_store_commit_seconds_count", None)]
        if count:
            total = samples[("logsvc_store_commit_seconds_sum", None)]
            figures.update(commits=int(count),
                           commit_mean_ms=round(total / count * 1000, 3),
                           commits_over_1ms=int(
                               count - samples[("logsvc_store_commit_seconds_bucket", "0.001")]))
        return figures

    def stop(self) -> None:
        if self._server.process is not None and not self._stopped:
            self._stopped = True
            code = self._server.stop()
            if code != 0:
                raise BenchError(f"twistd exited {code}: {self._server.output()[-400:]}")


class TcpLogServer(Target):
    """
    The npm C{tcp-log-server} (10.0.0 speaks the pull dialect only) run by C{node} on
    LevelDB and blob files in a temporary directory; its per-message pino log goes to
    /dev/null so logging costs it as little as possible.
    """

    name = "tcp-log-server"

    def __init__(self, installed: str):
        super().__init__()
        self.script = self.locate(installed)
        self.journalPort = freePort()
        self.process = None

    @staticmethod
    def locate(installed: str) -> str:
        """C{installed} is the package directory or a directory holding node_modules."""
        for candidate in (os.path.join(installed, "server.js"),
                          os.path.join(installed, "node_modules", "tcp-log-server", "server.js")):
            if os.path.isfile(candidate):
                return candidate
        raise BenchError(f"no tcp-log-server under {installed!r}: "
                         f"npm install --prefix {installed} tcp-log-server@10.0.0")

    def start(self, timeout: float = 20.0) -> "TcpLogServer":
        env = dict(os.environ, PORT=str(self.journalPort),
                   LEVELDOWN=os.path.join(self.directory, "leveldb"),
                   BLOBS=os.path.join(self.directory, "blobs"))
        self.process = subprocess.Popen(["node", self.script], cwd=self.directory, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.pid = self.process.pid
        waitForPort(self.journalPort, self.process, timeout)
        self.watchMemory()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def waitForPort(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if process.poll() is not None:
                raise BenchError(f"server exited {process.returncode} before listening")
            if time.monotonic() > deadline:
                raise BenchError(f"server did not listen on {port} within {timeout} s")
            time.sleep(0.05)


def percentiles(samples: list, *points: float) -> dict:
    """Nearest-rank percentiles in milliseconds of samples given in nanoseconds."""
    if not samples:
        return {}
    ordered = sorted(samples)
    result = {}
    for point in points:
        rank = min(len(ordered) - 1, max(0, round(point / 100 * len(ordered)) - 1))
        result[f"p{point:g}_ms"] = round(ordered[rank] / 1e6, 3)
    return result


def report(scenario: str, target: str, parameters: dict, figures: dict) -> dict:
    """Print the run as one JSON line (flushed, so a pipe sees it at once) and return it."""
    line = {"scenario": scenario, "target": target, **parameters, **figures}
    print(json.dumps(line), flush=True)
    return line


class Generators:
    """
    Load-generator processes that each run C{work(parts, ready, go, results)} on their
    share of C{parts}: they connect and set up, put C{("ready", n)}, wait for C{go}, put
    their result and their CPU seconds.  The caller times from C{go} to the last result.
    """

    def __init__(self, work, parts: list, perProcess: int):
        self._ready = processes.Queue()
        self._results = processes.Queue()
        self._go = processes.Event()
        self._procs = [processes.Process(target=_generate,
                                         args=(work, parts[i:i + perProcess], self._ready,
                                               self._go, self._results), daemon=True)
                       for i in range(0, len(parts), perProcess)]

    def __enter__(self) -> "Generators":
        for proc in self._procs:
            proc.start()
        return self

    def __exit__(self, *exc) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()

    def ready(self, timeout: float) -> None:
        for _ in self._procs:
            outcome = self._get(self._ready, timeout)
            if outcome[0] == "error":
                raise BenchError(outcome[1])

    def go(self) -> float:
        started = time.monotonic()
        self._go.set()
        return started

    def results(self, timeout: float) -> tuple[list, float]:
        """Every generator's results, and the CPU seconds they used together."""
        results, cpu = [], 0.0
        for _ in self._procs:
            outcome = self._get(self._results, timeout)
            if outcome[0] == "error":
                raise BenchError(outcome[1])
            results.extend(outcome[1])
            cpu += outcome[2]
        return results, cpu

    def _get(self, queue, timeout: float):
        try:
            return queue.get(timeout=timeout)
        except Exception:
            raise BenchError(f"a load generator gave no answer within {timeout} s")


def _generate(work, parts, ready, go, results) -> None:
    try:
        results.put(("ok", work(parts, ready, go), _ownCPU()))
    except Exception as e:
        message = str(e) if isinstance(e, BenchError) else f"{e.__class__.__name__}: {e}"
        ready.put(("error", message))
        results.put(("error", message))


def _ownCPU() -> float:
    times = os.times()
    return times.user + times.system
