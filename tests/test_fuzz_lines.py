"""
Property-based fuzzing of the line service: whatever bytes arrive, split wherever, the
server keeps exactly what a line-by-line reading of the line protocol says, its memory per
connection stays bounded, and other clients are untouched.
"""

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from logsvc.lineservice import LineFactory
from logsvc.registry import ClientRegistry
from tests.fuzzing import cut

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

words = st.text(alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
                max_size=40)
keys = st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True)
garbage = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b""))
line = st.one_of(
    words.map(lambda w: b"LOG " + w.encode()),
    st.tuples(keys, words).map(lambda kv: f"SET {kv[0]} {kv[1]}".encode()),
    keys.map(lambda k: f"SET {k}".encode()),
    st.just(b"LOG"),
    st.just(b"IAM again"),
    garbage,
    garbage.map(lambda g: b"LOG " + g),
    st.sampled_from([b"", b"\r", b"LOG \xff\xfe", b"SET \xc3", b"SET k\tv"]),
)
lineEnding = st.sampled_from([b"\n", b"\r\n"])


def model(lines: list, maxLine: int, bufferSize: int):
    """The line protocol read one line at a time: the ring, the state and the counters."""
    ring, state, ignored, truncated = [], {}, 0, 0
    for raw in lines:
        if len(raw) > maxLine:
            raw, truncated = raw[:maxLine], truncated + 1
        raw = raw[:-1] if raw.endswith(b"\r") and not raw.startswith(b"LOG ") else raw
        text = raw.decode("utf-8", "replace")
        if raw.startswith(b"LOG ") or raw == b"LOG":
            ring.append(text[4:].strip())
            continue
        match = re.fullmatch(r"SET[ \t]+([A-Za-z0-9_]+)(?:[ \t](.*))?", text, re.S)
        if match:
            state[match.group(1)] = (match.group(2) or "").strip()
        else:
            ignored += 1
    return ring[-bufferSize:], state, ignored, truncated


class LineFuzzTests(TestCase):
    def setUp(self):
        self.clock = Clock()

    def serve(self, maxLine: int, bufferSize: int = 16):
        registry = ClientRegistry(self.clock, bufferSize=bufferSize)
        factory = LineFactory(registry, self.clock, maxLine=maxLine)

        def connect(first: bytes = b""):
            protocol = factory.buildProtocol(None)
            transport = StringTransport()
            protocol.makeConnection(transport)
            if first:
                protocol.dataReceived(first)
            return protocol, transport
        return registry, connect

    @SETTINGS
    @given(lines=st.lists(line, max_size=40), endings=st.lists(lineEnding, min_size=1),
           points=st.lists(st.floats(0, 1), max_size=12), maxLine=st.integers(8, 80))
    def test_commandsSplitAnywhereMatchTheModel(self, lines, endings, points, maxLine):
        registry, connect = self.serve(maxLine)
        bystander, bystanderTransport = connect(b"IAM bystander\nLOG calm\nSET k v\n")
        protocol, transport = connect()
        data = b"IAM fuzz\n" + b"".join(
            raw + endings[i % len(endings)] for i, raw in enumerate(lines))
        for piece in cut(data, points):
            protocol.dataReceived(piece)
            self.assertLessEqual(len(protocol._pending), maxLine)
        sent = [raw + endings[i % len(endings)] for i, raw in enumerate(lines)]
        ring, state, ignored, truncated = model(
            [s[:-1] for s in sent], maxLine, registry.bufferSize)
        record = registry.lookup("fuzz")
        self.assertEqual([m for _, m in record.ring], ring)
        self.assertEqual(record.state, state)
        self.assertEqual((record.ignored, record.truncated), (ignored, truncated))
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
        calm = registry.lookup("bystander")
        self.assertEqual(([m for _, m in calm.ring], calm.state, calm.online),
                         (["calm"], {"k": "v"}, True))
        self.assertEqual(bystanderTransport.value(), b"")

    @SETTINGS
    @given(chunks=st.lists(st.binary(max_size=400), max_size=30), maxLine=st.integers(16, 300))
    def test_arbitraryBytesNeverEscapeOrGrow(self, chunks, maxLine):
        registry, connect = self.serve(maxLine)
        bystander, _ = connect(b"IAM bystander\nLOG calm\n")
        protocol, transport = connect()
        for chunk in chunks:
            protocol.dataReceived(chunk)
            self.assertLessEqual(len(protocol._pending), maxLine)
        reply = transport.value()
        if reply:
            self.assertTrue(reply.startswith(b"ERR ") and reply.count(b"\n") == 1, reply)
            self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)
        self.assertEqual([m for _, m in registry.lookup("bystander").ring], ["calm"])
        self.assertEqual(registry.onlineNames(), ["bystander"])

    @SETTINGS
    @given(chunks=st.lists(st.binary(max_size=400), max_size=30), maxLine=st.integers(16, 300))
    def test_arbitraryBytesAfterIdentifyingMatchTheModel(self, chunks, maxLine):
        """Past a valid IAM, LOG and SET, whatever bytes follow are read as the model says."""
        registry, connect = self.serve(maxLine)
        valid = b"LOG first\nSET k v\n"
        protocol, transport = connect(b"IAM fuzz\n" + valid)
        for chunk in chunks:
            protocol.dataReceived(chunk)
            self.assertLessEqual(len(protocol._pending), maxLine)
        *lines, partial = (valid + b"".join(chunks)).split(b"\n")
        if len(partial) > maxLine:  # an over-long line is taken before its end arrives
            lines.append(partial)
        ring, state, ignored, truncated = model(lines, maxLine, registry.bufferSize)
        record = registry.lookup("fuzz")
        self.assertEqual([m for _, m in record.ring], ring)
        self.assertEqual(record.state, state)
        self.assertEqual((record.ignored, record.truncated), (ignored, truncated))
        self.assertEqual((transport.value(), transport.disconnecting, record.online),
                         (b"", False, True))

    @SETTINGS
    @given(size=st.integers(0, 300_000), maxLine=st.integers(16, 70_000))
    def test_hugeAndEmptyLines(self, size, maxLine):
        registry, connect = self.serve(maxLine)
        protocol, transport = connect(b"IAM big\n")
        protocol.dataReceived(b"LOG " + b"x" * size + b"\nLOG after\n")
        messages = [m for _, m in registry.lookup("big").ring]
        self.assertEqual(messages[-1], "after")
        self.assertEqual(len(messages[0]), max(0, min(size + 4, maxLine) - 4))
        self.assertFalse(transport.disconnecting)
