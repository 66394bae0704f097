"""The real ``twistd -n logatron``: discoverable, serving, and failing cleanly."""

import json
import os
import socket
import subprocess
import sys
import time
import zipfile

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

from tests.server import startupError


def test_pluginIsDiscoverable():
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert makers["logatron"].module == "logsvc.tap"


def test_editableInstallPutsTheCheckoutOnThePath(tmp_path):
    """
    ``pip install -e .`` must add the checkout to sys.path with a plain .pth line:
    twistd finds plugins by listing twisted/plugins directories on sys.path, and cannot
    see through the import hook setuptools uses for a flat layout it was not told of.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    build = ("import sys, setuptools.build_meta as b;"
             " print(b.build_editable(sys.argv[1]))")
    # The build's own messages go to stdout as well; the wheel's name is the last line.
    output = subprocess.run([sys.executable, "-c", build, str(tmp_path)], cwd=root,
                            capture_output=True, text=True, check=True).stdout
    wheel = output.strip().splitlines()[-1]
    with zipfile.ZipFile(tmp_path / wheel) as archive:
        paths = [archive.read(name).decode().strip() for name in archive.namelist()
                 if name.endswith(".pth")]
    assert paths == [root]


def lineClient(port: int, name: str) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(f"IAM {name}\n".encode())
    return client


def test_serveRefuseDuplicateAndStopCleanly(twistd):
    server = twistd(store="memory:", listeners=("port",))
    try:
        first = lineClient(server.ports["port"], "web-1")
        first.sendall(b"LOG started $PATH\n")
        second = lineClient(server.ports["port"], "web-1")
        assert second.makefile("rb").readline() == b"ERR name in use: web-1\n"
        assert second.recv(1) == b""  # and closed
        first.sendall(b"LOG still connected\n")
        time.sleep(0.2)
        assert first.fileno() != -1
    finally:
        code = server.stop()
    assert code == 0
    output = server.output()
    assert "web-1 connected" in output
    assert "refused: web-1 is already connected" in output


NO_OTHER_LISTENERS = ("--journal", "none", "--pb", "none", "--http", "none")


def test_portInUseIsOneLine(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        error = startupError("--store", "memory:", "--port", f"tcp:{port}:interface=127.0.0.1",
                             *NO_OTHER_LISTENERS)
    finally:
        busy.close()
    assert f"cannot listen on --port tcp:{port}:interface=127.0.0.1" in error


def test_malformedEndpointIsOneLine():
    assert "--port: malformed endpoint 'tcp:nope'" in startupError("--port", "tcp:nope")


def test_unknownStoreIsOneLine():
    assert "unknown store 'mongodb:x'" in startupError(
        "--store", "mongodb:x", "--port", "tcp:0:interface=127.0.0.1", *NO_OTHER_LISTENERS)


def test_unwritableStoreIsOneLine(tmp_path):
    assert "cannot open store" in startupError(
        "--store", f"sqlite:{tmp_path}/missing/dir/journal.db",
        "--port", "tcp:0:interface=127.0.0.1", *NO_OTHER_LISTENERS)


def journalEntries(port: int) -> list:
    """Every entry of the journal, read with pull reads until the head."""
    entries, start = [], 1
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        lines = client.makefile("rb")
        while True:
            client.sendall(b'{"from":%d,"read":1000}\n' % start)
            for raw in lines:
                message = json.loads(raw)
                if "entry" in message:
                    entries.append(message["entry"])
                    start = message["index"] + 1
                if "head" in message or "current" in message:
                    break
            if "current" in message or message.get("head", 0) < start:
                return entries


def test_sigtermJournalsTheCloseOfConnectedClients(twistd):
    server = twistd(listeners=("port", "journal"))
    client = lineClient(server.ports["port"], "api-7")
    client.sendall(b"LOG about to be stopped\n")
    deadline = time.monotonic() + 10
    while not any(e.get("message") == "about to be stopped"
                  for e in journalEntries(server.ports["journal"])):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.stop() == 0
    server = twistd(listeners=("port", "journal"))
    events = [(e["client"], e["event"]) for e in journalEntries(server.ports["journal"])]
    assert events == [("api-7", "ready"), ("api-7", "log"), ("api-7", "close")]
    client.close()
