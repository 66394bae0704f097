"""
Connection refusals end to end: a real twistd with --max-connections 1 on every listener.
"""

import socket

from prometheus_client.parser import text_string_to_metric_families

from tests.clients import httpGet, lineClient, query
from tests.polling import waitFor


def _openConnections(server) -> dict:
    """C{logsvc_connections} by listener, from the /metrics scrape that is one of them."""
    status, body = httpGet(server.ports["http"], "/metrics")
    assert status == 200, (status, body)
    return {s.labels["listener"]: s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples if s.name == "logsvc_connections"}


def _everything(port: int) -> bytes:
    """What the server sends before it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as refused:
        received = b""
        while chunk := refused.recv(4096):
            received += chunk
        return received


def test_refusalsAgainstRealTwistd(twistd):
    server = twistd("--max-connections", "1", store="memory:")
    assert _openConnections(server) == {"port": 0, "journal": 0, "pb": 0, "http": 1}
    logStart = len(server.output())
    held = [socket.create_connection(("127.0.0.1", server.ports[name]), timeout=10)
            for name in ("port", "journal", "pb", "http")]
    held[0].sendall(b"IAM holder\n")
    assert held[2].recv(4096), "the first PB connection is served (Banana greeting)"
    for _ in range(3):
        assert _everything(server.ports["port"]) == b"ERR too many connections\n"
    assert _everything(server.ports["journal"]) == b'{"error":"too many connections"}\n'
    assert _everything(server.ports["pb"]) == b""
    refused = query(server, "clients")
    assert (refused.returncode, refused.stderr) == (
        1, "logsvc-query: connection to the server lost\n")
    assert httpGet(server.ports["http"], "/status") == (503, b"too many connections\n")

    held[0].close()

    def connectAgain() -> bool:
        with lineClient(server.ports["port"], "again"):
            pass
        return "--port: accepting connections again after refusing 3" in server.output()
    waitFor(connectAgain, "the line listener to accept again")
    for connection in held[1:]:
        connection.close()
    assert server.stop() == 0
    log = server.output()[logStart:]
    for name in ("port", "journal", "pb", "http"):
        assert log.count(f"--{name}: 1 connections open (--max-connections); "
                         f"refusing new connections") == 1, log
