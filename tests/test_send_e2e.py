"""``logsvc-send`` against a real ``twistd -n logatron``."""

import os
import socket
import subprocess
import sys
import time

from tests.server import freePort
from tests.clients import clientInfo
from tests.polling import waitFor

LISTENERS = ("port", "http")
SEND = os.path.join(os.path.dirname(sys.executable), "logsvc-send")


def send(name: str, port: int, stdin, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([SEND, name, "--connect", f"tcp:127.0.0.1:{port}", *extra],
                          stdin=stdin, capture_output=True, timeout=120)


def test_aWholeFileArrivesInOrder(twistd, tmp_path):
    lines = [f"line {n} of the build log" for n in range(100_000)]
    path = tmp_path / "build.log"
    path.write_text("\n".join(lines) + "\n")
    server = twistd("--buffer-size", "100000", listeners=LISTENERS)
    with open(path, "rb") as stdin:
        result = send("build-42", server.ports["port"], stdin, "--set", "job=make all")
    assert (result.returncode, result.stderr) == (0, b"")
    info = clientInfo(server, "build-42")
    assert [m for _, m in info["log"]] == lines
    assert info["state"] == {"job": "make all"}
    assert info["counters"]["lines"] == 100_000


def test_aPipeWithoutFinalNewline(twistd):
    server = twistd(listeners=LISTENERS)
    producer = subprocess.Popen(["printf", "one\\ntwo\\n\\nlast"], stdout=subprocess.PIPE)
    result = send("piped", server.ports["port"], producer.stdout)
    producer.wait()
    assert result.returncode == 0, result.stderr
    assert [m for _, m in clientInfo(server, "piped")["log"]] == ["one", "two", "", "last"]


def test_serverDown():
    result = send("nobody", freePort(), subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr.count(b"\n") == 1
    assert result.stderr.startswith(b"logsvc-send: cannot connect to tcp:127.0.0.1:")


def test_nameInUse(twistd):
    server = twistd(listeners=LISTENERS)
    holder = socket.create_connection(("127.0.0.1", server.ports["port"]))
    holder.sendall(b"IAM taken\n")
    waitFor(lambda: (clientInfo(server, "taken") or {}).get("online"), "the holder of the name")
    result = send("taken", server.ports["port"], subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr == b"logsvc-send: server refused: name in use: taken\n"
    holder.close()


def test_serverStopsMidStream(twistd):
    server = twistd(listeners=LISTENERS)
    writer = subprocess.Popen([SEND, "cut-off", "--connect", str(server.ports["port"])],
                              stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    writer.stdin.write(b"first\n")
    writer.stdin.flush()
    waitFor(lambda: clientInfo(server, "cut-off"), "the cut-off client")
    assert server.stop() == 0
    time.sleep(0.2)
    try:
        writer.stdin.write(b"more\n")
        writer.stdin.close()
    except BrokenPipeError:
        pass
    assert writer.wait(30) == 1
    assert writer.stderr.read().startswith(b"logsvc-send: ")


def test_badArguments():
    result = subprocess.run([SEND, "bad name"], capture_output=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr.count(b"\n") == 1
    result = subprocess.run([SEND, "ok", "--set", "no-equals"], capture_output=True,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr == (b"logsvc-send: argument --set: not KEY=VALUE: 'no-equals' "
                             b"(see logsvc-send --help)\n")
