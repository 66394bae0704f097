"""
``logsvc-query`` as installed: ``read FROM --limit K`` against a real ``twistd``, and
``read --help`` naming the program.
"""

import json
import os
import subprocess
import sys

import pytest

from .server import Servers

QUERY = os.path.join(os.path.dirname(sys.executable), "logsvc-query")


@pytest.fixture(scope="module")
def journal_server(tmp_path_factory):
    with Servers(tmp_path_factory.mktemp("query-cli")) as twistd:
        yield twistd(store="memory:", listeners=("port", "journal", "pb"))


def query(server, *args) -> subprocess.CompletedProcess:
    return subprocess.run([QUERY, *args, "--connect", f"tcp:127.0.0.1:{server.ports['pb']}"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_readWithLimitEitherSide(journal_server):
    for n in range(1, 9):
        assert query(journal_server, "append", json.dumps({"n": n})).stdout == f"{n}\n"
    for args in (["read", "1", "--limit", "5"], ["read", "--limit", "5", "1"]):
        result = query(journal_server, *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [f'{n}  {{"n": {n}}}' for n in range(1, 6)]
    for args in (["read", "3", "--limit", "2", "--json"], ["--json", "read", "--limit", "2", "3"],
                 ["read", "--json", "3", "-n", "2"]):
        result = query(journal_server, *args)
        assert [json.loads(line) for line in result.stdout.splitlines()] == [
            {"index": 3, "entry": {"n": 3}}, {"index": 4, "entry": {"n": 4}}], args


def test_readHelpNamesTheProgram():
    result = subprocess.run([QUERY, "read", "--help"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "Usage: logsvc-query [options] read [options] FROM"
    help = " ".join(result.stdout.split())
    assert "Print at most this many entries. A positive integer." in help
