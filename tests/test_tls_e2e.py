"""
Every listener over ``ssl:`` endpoints against a real ``twistd -n logatron``, with a
certificate made for the test: line and journal clients over Python's ssl module, HTTP
over urllib, and ``logsvc-query --connect ssl:...`` over PB.
"""

import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.server import Servers

QUERY = os.path.join(os.path.dirname(sys.executable), "logsvc-query")


def selfSignedCertificate(directory, name: str = "localhost") -> tuple[str, str]:
    """A self-signed CA certificate for localhost and 127.0.0.1; returns (cert, key) paths."""
    os.makedirs(directory, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    certPath = os.path.join(directory, "cert.pem")
    keyPath = os.path.join(directory, "server.key")  # caCertsDir loads every *.pem
    with open(certPath, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(keyPath, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return certPath, keyPath


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A running server with all four listeners on ssl: endpoints, and its CA directory."""
    directory = tmp_path_factory.mktemp("tls")
    certPath, keyPath = selfSignedCertificate(directory / "server")
    endpoint = f"ssl:{{port}}:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}"
    with Servers(directory) as twistd:
        server = twistd(store="memory:", endpoints={
            name: endpoint for name in ("port", "journal", "pb", "http")})
        yield server, certPath, os.path.dirname(certPath)


def connectTLS(port: int, certPath: str) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=certPath)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost")


def query(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([QUERY, *args], capture_output=True, text=True, timeout=60)


def test_lineClientThenQueryOverTLS(tls):
    server, certPath, caDirectory = tls
    with connectTLS(server.ports["port"], certPath) as line:
        line.sendall(b"IAM tls-client\nLOG over TLS\nSET mode secure\n")
        connect = (f"ssl:host=127.0.0.1:port={server.ports['pb']}"
                   f":caCertsDir={caDirectory}:hostname=localhost")
        deadline = time.monotonic() + 10
        while True:
            result = query("--connect", connect, "--json", "log", "tls-client")
            if result.returncode == 0 and json.loads(result.stdout):
                break
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.1)
    [[when, message]] = json.loads(result.stdout)
    assert message == "over TLS"
    state = query("--connect", connect, "--json", "state", "tls-client")
    assert json.loads(state.stdout) == {"mode": "secure"}, state.stderr


def test_queryRefusesAnUntrustedServer(tls, tmp_path):
    server, _, _ = tls
    otherCert, _ = selfSignedCertificate(tmp_path / "other")
    result = query("--connect", f"ssl:host=127.0.0.1:port={server.ports['pb']}"
                                f":caCertsDir={os.path.dirname(otherCert)}:hostname=localhost",
                   "clients")
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert result.stderr == "logsvc-query: connection to the server lost\n"


def test_journalWriteAndReadOverTLS(tls):
    server, certPath, _ = tls
    with connectTLS(server.ports["journal"], certPath) as journal:
        replies = journal.makefile("rb")
        journal.sendall(b'{"id":"w1","entry":{"over":"tls"}}\n')
        ack = json.loads(replies.readline())
        assert ack["id"] == "w1" and ack["index"] >= 1, ack
        journal.sendall(b'{"from":%d,"read":1}\n' % ack["index"])
        assert json.loads(replies.readline()) == {"index": ack["index"],
                                                  "entry": {"over": "tls"}}
        following = json.loads(replies.readline())
        if following == {"current": True}:
            following = json.loads(replies.readline())
        assert "head" in following, following


def test_httpStatusOverTLS(tls):
    server, certPath, _ = tls
    context = ssl.create_default_context(cafile=certPath)
    with urllib.request.urlopen(f"https://localhost:{server.ports['http']}/status",
                                context=context, timeout=10) as response:
        status = json.load(response)
    assert response.status == 200
    assert {"version", "uptime", "clients", "lines", "head"} <= set(status)


def test_plainTCPClientGetsNoService(tls):
    """A client that skips TLS gets nothing it can read as the protocol."""
    server, _, _ = tls
    with socket.create_connection(("127.0.0.1", server.ports["port"]), timeout=10) as plain:
        plain.sendall(b"IAM plain\nLOG cleartext\n")
        plain.settimeout(10)
        try:
            reply = plain.recv(4096)
        except ConnectionResetError:
            reply = b""
    assert b"ERR" not in reply
    result = query("--connect", f"ssl:host=127.0.0.1:port={server.ports['pb']}"
                                f":caCertsDir={tls[2]}:hostname=localhost", "--json", "clients")
    assert "plain" not in json.loads(result.stdout), result.stderr


def test_queryWithAMissingCADirectoryIsOneLine(tmp_path):
    result = query("--connect", f"ssl:host=127.0.0.1:port=1:caCertsDir={tmp_path / 'none'}",
                   "clients")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "No such file or directory" in result.stderr
