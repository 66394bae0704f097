"""
What the truncated-line example of docs/lines.rst says, against a real ``twistd`` at
defaults: --max-line (65,536) counts the whole line, ``LOG `` included, so the message
keeps 65,532.
"""

import json
import socket
import time
import urllib.request


def test_truncatedMessageIsMaxLineLessTheCommand(twistd):
    server = twistd(store="memory:", listeners=("port", "http"))
    with socket.create_connection(("127.0.0.1", server.ports["port"])) as client:
        client.sendall(b"IAM cut\nLOG " + b"x" * 70_000 + b"\nLOG " + b"y" * 65_532 + b"\n")
        url = f"http://127.0.0.1:{server.ports['http']}/journal?from=1"
        deadline = time.monotonic() + 10
        while len(entries := json.load(urllib.request.urlopen(url))["entries"]) < 3:
            assert time.monotonic() < deadline, entries
            time.sleep(0.05)
    cut, whole = entries[1]["entry"], entries[2]["entry"]
    assert (len(cut["message"]), cut["truncated"]) == (65_532, True)
    assert (len(whole["message"]), "truncated" in whole) == (65_532, False)
