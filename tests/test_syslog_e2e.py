"""
The syslog listener of a real ``twistd -n logatron`` fed by real senders: util-linux
``logger`` over TCP and UDP in both formats, and ``rsyslogd`` forwarding with ``omfwd``.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.server import Server, freePort, startupError
from tests.clients import clientInfo
from tests.polling import waitFor

LOGGER = shutil.which("logger") or "/usr/bin/logger"
RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
HOST = socket.gethostname()
QUERY = os.path.join(os.path.dirname(sys.executable), "logsvc-query")


_SYSLOG_STARTING = re.compile(
    r"\] (?:SyslogStreamFactory \(ConnectionLimit\)|SyslogDatagramProtocol) starting on (\d+)$",
    re.MULTILINE)


def syslogServer(twistd, transport: str) -> tuple:
    """A server with C{--syslog TRANSPORT:0}, and the port its log says it bound."""
    server = twistd("--syslog", f"{transport}:0:interface=127.0.0.1",
                    listeners=("port", "pb", "http"))
    waitFor(lambda: _healthy(server), "the syslog listener to be up")
    return server, int(_SYSLOG_STARTING.search(server.output()).group(1))


def _healthy(server: Server) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.ports['http']}/health",
                                    timeout=5) as response:
            return json.load(response)["listeners"].get("syslog") == "up"
    except OSError:
        return False


def journal(server: Server) -> list:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports['http']}"
                                f"/journal?from=1&limit=1000", timeout=5) as response:
        return [item["entry"] for item in json.load(response)["entries"]]


def logEntries(server: Server, name: str) -> list:
    return [e for e in journal(server) if e["client"] == name and e["event"] == "log"]


def status(server: Server) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports['http']}/status",
                                timeout=5) as response:
        return json.load(response)


def logger(port: int, *args: str) -> None:
    subprocess.run([LOGGER, "--server", "127.0.0.1", "--port", str(port), *args],
                   check=True, timeout=30)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_loggerBothFormats(twistd, transport):
    server, port = syslogServer(twistd, transport)
    sent = [("--rfc5424", "daemon.err", "web", "5424 over " + transport, []),
            ("--rfc3164", "local3.warning", "cron-job", "3164 over " + transport, []),
            ("--rfc5424", "auth.info", "counted", "octet counted", ["--octet-count"])]
    for format, priority, tag, text, extra in sent:
        if extra and transport == "udp":
            continue
        logger(port, f"--{transport}", format, "-t", tag, "-p", priority, *extra, text)
    for format, priority, tag, text, extra in sent:
        if extra and transport == "udp":
            continue
        name = f"{HOST}.{tag}"
        entries = waitFor(lambda: logEntries(server, name), f"entries from {name}")
        facility, severity = priority.split(".")
        assert [(e["message"], e["facility"], e["severity"]) for e in entries] == [
            (text, facility, severity)]
        assert abs(entries[0]["timestamp"] - time.time()) < 120
        assert clientInfo(server, name)["online"] is True
        assert [m for _, m in clientInfo(server, name)["log"]] == [text]
    counters = status(server)["syslog"]
    assert counters["malformed"] == 0
    assert counters["messages"] == (3 if transport == "tcp" else 2)
    query = subprocess.run(
        [QUERY, "--connect", str(server.ports["pb"]), "--json", "log", f"{HOST}.web"],
        capture_output=True, text=True, timeout=60, check=True)
    assert [m for _, m in json.loads(query.stdout)] == [f"5424 over {transport}"]


def test_malformedAndOversizeOverTCP(twistd):
    server, port = syslogServer(twistd, "tcp")
    with socket.create_connection(("127.0.0.1", port)) as sender:
        sender.sendall(b"no priority here\n" + b"<13>big: " + b"x" * 70000 + b"\n"
                       + b"<14>1 - h after - - - still served\n")
    entries = waitFor(lambda: logEntries(server, "h.after"), "entries from h.after")
    assert entries[0]["message"] == "still served"
    assert logEntries(server, "127.0.0.1")[0] == {
        "client": "127.0.0.1", "event": "log", "malformed": True,
        "message": "no priority here", "time": logEntries(server, "127.0.0.1")[0]["time"]}
    big = logEntries(server, "127.0.0.1.big")[0]
    assert big["truncated"] is True and len(big["message"]) == 65536 - len("<13>big: ")
    counters = status(server)["syslog"]
    assert (counters["malformed"], counters["truncated"], counters["messages"]) == (1, 1, 3)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports['http']}/metrics",
                                timeout=5) as response:
        metrics = response.read().decode()
    assert "logsvc_syslog_malformed_total 1.0" in metrics
    assert "logsvc_syslog_messages_total 3.0" in metrics


RSYSLOG_CONFIG = """
global(workDirectory="{work}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{listen}")
action(type="omfwd" target="127.0.0.1" port="{forward}" protocol="tcp" {options})
"""


@pytest.mark.parametrize("options", [
    "",  # rsyslog's defaults: BSD format, newline framing
    'TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"',
])
def test_rsyslogForwardsWithOmfwd(twistd, tmp_path, options):
    server, port = syslogServer(twistd, "tcp")
    work = tmp_path / "rsyslog"
    work.mkdir()
    listen = freePort()
    config = work / "rsyslog.conf"
    config.write_text(RSYSLOG_CONFIG.format(work=work, listen=listen, forward=port,
                                            options=options))
    rsyslog = subprocess.Popen([RSYSLOGD, "-n", "-f", str(config), "-i", str(work / "pid")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        waitFor(lambda: _accepts(listen) or rsyslog.poll() is not None,
                "rsyslogd to listen")
        assert rsyslog.poll() is None, rsyslog.stdout.read()
        logger(listen, "--tcp", "--rfc3164", "-t", "nginx", "-p", "daemon.notice",
               "GET / 200")
        logger(listen, "--tcp", "--rfc5424", "-t", "sshd", "-p", "authpriv.crit",
               "Accepted publickey")
        for name, text, facility, severity in (
                (f"{HOST}.nginx", "GET / 200", "daemon", "notice"),
                (f"{HOST}.sshd", "Accepted publickey", "authpriv", "crit")):
            entries = waitFor(lambda: logEntries(server, name), f"entries from {name}",
                              timeout=60)
            assert [(e["message"], e["facility"], e["severity"]) for e in entries] == [
                (text, facility, severity)]
        assert status(server)["syslog"]["malformed"] == 0
    finally:
        rsyslog.send_signal(signal.SIGTERM)
        rsyslog.wait(30)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def test_rsyslogIsInstalled():
    """tools/test.sh installs rsyslog and util-linux's logger; say so if they are missing."""
    assert os.access(RSYSLOGD, os.X_OK) and os.access(LOGGER, os.X_OK)


def test_syslogPortInUseOrMalformed(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        line = startupError("--store", "memory:", "--port", "tcp:0:interface=127.0.0.1",
                            "--journal", "none", "--pb", "none", "--http", "none",
                            "--syslog", f"udp:{port}:interface=127.0.0.1", cwd=tmp_path)
    assert line.startswith(f"logatron: cannot listen on --syslog udp:{port}:interface=")
    assert "Address already in use" in line
    line = startupError("--store", "memory:", "--syslog", "udp:514:backlog=5", cwd=tmp_path)
    assert line == ("logatron: --syslog: malformed endpoint 'udp:514:backlog=5': unknown "
                    "udp option 'backlog=5': only interface=ADDR")
