"""
Property-based fuzzing of the journal listener: whatever bytes arrive, split wherever,
every reply is one of the journal protocol's shapes, the connection closes exactly when
the protocol says, the partial message never outgrows --max-entry, acknowledged entries
read back byte for byte, and other connections are untouched.
"""

import json

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from logsvc.journal.protocol import JournalFactory
from logsvc.memorystore import MemoryStore
from tests.fuzzing import cut

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FATAL = ("invalid JSON", "message too long")
ERRORS = FATAL + ("invalid message", "already reading")


def canonical(entry) -> bytes:
    """The journal's canonical JSON, written out independently of logsvc.store."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def isIndex(value, least: int = 1) -> bool:
    return value.__class__ is int and value >= least


def shape(reply) -> str:
    """Name the journal protocol shape of one reply, or fail: there is no other kind."""
    keys = set(reply) if reply.__class__ is dict else None
    if keys == {"id", "index"} and reply["id"].__class__ is str and isIndex(reply["index"]):
        return "ack"
    if keys == {"id", "error"} and reply["id"].__class__ is str and reply["error"]:
        return "writeError"
    if keys == {"index", "entry"} and isIndex(reply["index"]) and reply["entry"].__class__ is dict:
        return "entry"
    if keys == {"index", "error"} and isIndex(reply["index"]):
        return "entryError"
    if reply == {"current": True}:
        return "current"
    if keys == {"head"} and isIndex(reply["head"], 0):
        return "head"
    if keys == {"error"} and reply["error"] in ERRORS:
        return reply["error"]
    raise AssertionError(f"reply outside the journal protocol: {reply!r}")


def replies(transport: StringTransport) -> list:
    """Every reply line, parsed; each must be complete JSON of a protocol shape."""
    data = transport.value()
    assert data == b"" or data.endswith(b"\n"), data[-200:]
    parsed = [json.loads(line) for line in data.splitlines()]
    for reply in parsed:
        shape(reply)
    return parsed


def _rejectConstant(name):
    raise ValueError(name)


def parse(line: bytes):
    """What the protocol calls JSON: strict UTF-8, no NaN/Infinity; None when it is not."""
    try:
        return True, json.loads(line.decode("utf-8"), parse_constant=_rejectConstant)
    except (ValueError, RecursionError):
        return False, None


def isReadLine(line: bytes) -> bool:
    ok, message = parse(line)
    return ok and message.__class__ is dict and isRead(message)


def isRead(message) -> bool:
    start, count = message.get("from"), message.get("read")
    return "from" in message and isIndex(start) and ("read" not in message or isIndex(count))


class Model:
    """The journal protocol but reads: the expected reply to each line, and the log."""

    def __init__(self, maxEntry: int):
        self.maxEntry = maxEntry
        self.log: list[bytes] = []
        self.writes: dict = {}

    def reply(self, line: bytes):
        """The reply (a dict or None) and whether the connection closes after it."""
        if len(line) > self.maxEntry:
            return {"error": "message too long"}, True
        ok, message = parse(line)
        if not ok:
            return (None, False) if not line.strip() else ({"error": "invalid JSON"}, True)
        if message.__class__ is not dict:
            return {"error": "invalid message"}, False
        writeId, entry = message.get("id"), message.get("entry")
        if writeId.__class__ is str and writeId and entry.__class__ is dict:
            return self.write(writeId, entry), False
        assert not isRead(message), "reads are checked by JournalMachine"
        return {"error": "invalid message"}, False

    def write(self, writeId: str, entry: dict) -> dict:
        try:
            data = canonical(entry)
            writeId.encode("utf-8")
        except (ValueError, RecursionError):
            return {"id": writeId, "error": "cannot be stored"}
        key = (writeId, data)
        if key not in self.writes:
            self.log.append(data)
            self.writes[key] = len(self.log)
        return {"id": writeId, "index": self.writes[key]}

    def run(self, data: bytes) -> tuple:
        """Expected replies to a whole byte stream, and whether it ends closed."""
        *lines, partial = data.split(b"\n")
        if len(partial) > self.maxEntry:
            lines.append(partial)
        expected = []
        for line in lines:
            reply, closes = self.reply(line)
            if reply is not None:
                expected.append(reply)
            if closes:
                return expected, True
        return expected, False


def sameReplies(test: TestCase, got: list, expected: list) -> None:
    """Equal, except that a write error's text is the server's to choose."""
    test.assertEqual(len(got), len(expected), (got, expected))
    for reply, want in zip(got, expected):
        if shape(want) == "writeError":
            test.assertEqual((shape(reply), reply["id"]), ("writeError", want["id"]))
        else:
            test.assertEqual(reply, want)


# Strategies

finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | st.integers() | finite | st.text(max_size=8)
jsonValues = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1,
                     max_size=2)
strings = st.text(max_size=12) | surrogates | st.text(max_size=3).map(lambda s: s * 200)
entries = st.dictionaries(st.text(max_size=4) | surrogates, jsonValues, max_size=4)
ids = strings | jsonValues
writes = st.fixed_dictionaries({"id": ids, "entry": entries | jsonValues})
notReads = st.one_of(
    st.fixed_dictionaries({"from": st.integers(max_value=0) | finite | st.booleans()
                           | st.text(max_size=3) | st.none()
                           | st.lists(st.integers(), max_size=2)}),
    st.fixed_dictionaries({"from": st.integers(1, 5),
                           "read": st.integers(max_value=0) | finite | st.booleans()
                           | st.none() | st.text(max_size=2)}),
    st.dictionaries(st.text(max_size=5).filter(lambda k: k not in ("from", "id")), jsonValues,
                    max_size=3),
    jsonValues.filter(lambda v: v.__class__ is not dict),
)


def encode(message) -> bytes:
    """JSON text of a message, ASCII-escaped (surrogates stay as \\uD800 escapes)."""
    return json.dumps(message, ensure_ascii=True).encode("ascii")


rawLines = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from([b"", b"\r", b"  \t", b"\x0c", b"NaN", b'{"id":"n","entry":{"x":NaN}}',
                     b'{"id":"i","entry":{"x":-Infinity}}', b'{"id":"big","entry":{"x":1e400}}',
                     b'{"id":"z","entry":{"x":-0,"y":-0.0}}', b'{"from":1e400}', b'{"from":-0}',
                     b'{"id":"d","entry":{}}{"id":"e","entry":{}}', b'{"id":"x","entry":{}',
                     b'{"id":"\xed\xa0\x80","entry":{}}', b'{"id":"\xff","entry":{}}',
                     b'\xef\xbb\xbf{"from":0}', b'[' * 3000, b'{"a":' * 2000,
                     b'{"id":"h","entry":{"n":' + b"9" * 5000 + b"}}",
                     b'{"id":"h","entry":{"n":' + b"9" * 4000 + b"}}"]),
)
lines = st.one_of(writes.map(encode), notReads.map(encode), rawLines)


class Connection:
    def __init__(self, factory: JournalFactory):
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes, points: list = ()) -> None:
        for piece in cut(data, list(points)) or [data]:
            self.protocol.dataReceived(piece)


def assertBounded(test: TestCase, connection: "Connection", maxEntry: int) -> None:
    """The partial message fits in --max-entry while the connection is open."""
    if not connection.transport.disconnecting:
        test.assertLessEqual(len(connection.protocol._pending), maxEntry)


def entryLine(index: int, data: bytes) -> bytes:
    return b'{"index":%d,"entry":%s}' % (index, data)


class JournalFuzzTests(TestCase):
    def serve(self, maxEntry: int = 1 << 20):
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.factory = JournalFactory(self.store, maxEntry, self.clock)

    def connect(self) -> Connection:
        return Connection(self.factory)

    def readAll(self) -> list:
        """Every entry line a fresh push reader gets from index 1, as raw bytes."""
        reader = self.connect()
        reader.send(b'{"from":1}\n')
        self.clock.advance(0)
        raw = reader.transport.value().splitlines()
        replies(reader.transport)
        self.assertEqual(raw[-1], b'{"current":true}')
        reader.protocol.connectionLost(None)
        return raw[:-1]

    @SETTINGS
    @given(messages=st.lists(lines, max_size=25),
           endings=st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=1),
           points=st.lists(st.floats(0, 1), max_size=12), maxEntry=st.integers(64, 3000))
    def test_messagesSplitAnywhereMatchTheModel(self, messages, endings, points, maxEntry):
        self.serve(maxEntry)
        bystander = self.connect()
        bystander.send(b'{"from":1}\n{"id":"calm","entry":{"calm":true}}\n')
        fuzz = self.connect()
        data = b"".join(m + endings[i % len(endings)] for i, m in enumerate(messages))
        for piece in cut(data, points):
            fuzz.protocol.dataReceived(piece)
            assertBounded(self, fuzz, maxEntry)
        bystander.send(b'{"id":"still","entry":{"calm":2}}\n')
        self.clock.advance(0)

        model = Model(maxEntry)
        model.write("calm", {"calm": True})
        expected, closes = model.run(data)
        sameReplies(self, replies(fuzz.transport), expected)
        self.assertEqual(fuzz.transport.disconnecting, closes)
        last = model.write("still", {"calm": 2})["index"]

        stored = [entryLine(i, data) for i, data in enumerate(model.log, 1)]
        self.assertEqual(self.readAll(), stored)
        calm = bystander.transport.value().splitlines()
        self.assertEqual([line for line in calm if line.startswith(b'{"index"')], stored)
        self.assertEqual(calm[:2], [b'{"current":true}', b'{"id":"calm","index":1}'])
        self.assertIn(b'{"id":"still","index":%d}' % last, calm)
        self.assertFalse(bystander.transport.disconnecting)

    @SETTINGS
    @given(chunks=st.lists(st.binary(max_size=300), max_size=30), maxEntry=st.integers(1, 500))
    def test_arbitraryBytesNeverEscapeOrGrow(self, chunks, maxEntry):
        self.serve(maxEntry)
        fuzz = self.connect()
        for chunk in chunks:
            fuzz.protocol.dataReceived(chunk)
            assertBounded(self, fuzz, maxEntry)
        self.clock.advance(0)
        got = replies(fuzz.transport)
        fatal = [i for i, reply in enumerate(got) if reply.get("error") in FATAL
                 and "id" not in reply]
        self.assertEqual(fuzz.transport.disconnecting, bool(fatal))
        if fatal:
            self.assertEqual(fatal, [len(got) - 1])
        fuzz.protocol.connectionLost(None)
        self.assertEqual(self.factory.readers, set())

    @SETTINGS
    @given(chunks=st.lists(st.binary(max_size=300) | lines.map(lambda line: line + b"\n"),
                           max_size=30), maxEntry=st.integers(64, 500))
    def test_arbitraryBytesAfterValidMessages(self, chunks, maxEntry):
        """
        Past a write, a push read and a write it follows live, whatever bytes arrive get
        the model's replies, the read goes on delivering exactly what is committed, and
        the connection closes only after a fatal error.
        """
        data = b"".join(chunks)
        assume(not any(isReadLine(line) for line in data.split(b"\n")))  # not modelled
        self.serve(maxEntry)
        fuzz = self.connect()
        fuzz.send(b'{"id":"a","entry":{"n":1}}\n{"from":1}\n')
        self.clock.advance(0)
        fuzz.send(b'{"id":"b","entry":{"n":2}}\n')
        self.clock.advance(0)
        self.assertEqual(replies(fuzz.transport), [
            {"id": "a", "index": 1}, {"index": 1, "entry": {"n": 1}}, {"current": True},
            {"id": "b", "index": 2}, {"index": 2, "entry": {"n": 2}}])
        fuzz.transport.clear()
        for chunk in chunks:
            fuzz.protocol.dataReceived(chunk)
            assertBounded(self, fuzz, maxEntry)
        self.clock.advance(0)

        model = Model(maxEntry)
        model.run(b'{"id":"a","entry":{"n":1}}\n{"id":"b","entry":{"n":2}}\n')
        expected, closes = model.run(data)
        got = replies(fuzz.transport)
        sameReplies(self, [r for r in got if shape(r) not in ("entry", "current")], expected)
        self.assertEqual(fuzz.transport.disconnecting, closes)
        pushed = [line for line in fuzz.transport.value().splitlines()
                  if line.startswith(b'{"index"')]
        stored = self.readAll()
        self.assertEqual(pushed, stored[2:] if not closes else stored[2:2 + len(pushed)])
        fuzz.protocol.connectionLost(None)
        self.assertEqual(self.factory.readers, set())

    @SETTINGS
    @given(size=st.integers(0, 4000), maxEntry=st.integers(2, 3000),
           points=st.lists(st.floats(0, 1), max_size=6))
    def test_longestMessageIsMaxEntry(self, size, maxEntry, points):
        """A message of --max-entry bytes is taken; one more byte closes, split anywhere."""
        self.serve(maxEntry)
        frame = b'{"id":"a","entry":{"p":""}}'
        message = frame[:-3] + b"x" * max(0, size - len(frame)) + frame[-3:]
        connection = self.connect()
        connection.send(message + b"\n" + b'{"from":1}\n', points)
        got = replies(connection.transport)
        if len(message) > maxEntry:
            self.assertEqual(got, [{"error": "message too long"}])
            self.assertTrue(connection.transport.disconnecting)
        else:
            self.assertEqual(got[0], {"id": "a", "index": 1})
            self.assertEqual(got[1]["entry"], json.loads(message)["entry"])
            self.assertFalse(connection.transport.disconnecting)

    @SETTINGS
    @given(chunk=st.integers(1, 70_000), maxEntry=st.integers(1, 100_000))
    def test_endlessMessageIsCutOffAtMaxEntry(self, chunk, maxEntry):
        """A peer that never sends a newline costs at most --max-entry bytes of buffer."""
        assume(maxEntry // chunk < 200)
        self.serve(maxEntry)
        connection = self.connect()
        while not connection.transport.disconnecting:
            connection.protocol.dataReceived(b"[" * chunk)
            assertBounded(self, connection, maxEntry)
        self.assertEqual(replies(connection.transport), [{"error": "message too long"}])
        connection.protocol.dataReceived(b"]" * chunk + b'\n{"from":1}\n')
        self.assertEqual(replies(connection.transport), [{"error": "message too long"}])

    def test_deepNesting(self):
        """
        Nesting the parser takes is an ordinary message: a bare value is an invalid
        message, a write of it is acknowledged and reads back exactly.  Deeper nesting
        is invalid JSON (reply, close), never a RecursionError.  The bound is Python's
        recursion limit, so near it (990, 1000 levels) either answer is right.
        """
        shallow = ("invalid message", "ack")  # (the bare value, the write of it)
        deep = ("invalid JSON", "invalid JSON")
        expected = {10: [shallow], 500: [shallow], 900: [shallow], 990: [shallow, deep],
                    1000: [shallow, deep], 1100: [deep], 5000: [deep], 100_000: [deep]}
        for depth, allowed in expected.items():
            for open_, close in ((b"[", b"]"), (b'{"a":', b"}")):
                nested = open_ * depth + b"1" + close * depth
                got = []
                for message in (nested, b'{"id":"deep","entry":{"x":%s}}' % nested):
                    self.serve()
                    connection = self.connect()
                    connection.send(message + b"\n")
                    [reply] = replies(connection.transport)
                    got.append(shape(reply))
                    self.assertEqual(connection.transport.disconnecting,
                                     shape(reply) == "invalid JSON")
                    if shape(reply) == "ack":
                        self.assertEqual(self.readAll(), [entryLine(1, b'{"x":%s}' % nested)])
                self.assertIn(tuple(got), allowed, (depth, open_))

    def test_numbersOutOfRange(self):
        """Values JSON can write but canonical JSON cannot store are a write error, not a crash."""
        cases = [
            (b'{"id":"a","entry":{"x":1e400}}', {"id": "a", "error": None}),
            (b'{"id":"a","entry":{"x":-1e400}}', {"id": "a", "error": None}),
            (b'{"id":"a","entry":{"x":-0}}', {"id": "a", "index": 1}),
            (b'{"id":"b","entry":{"x":-0.0}}', {"id": "b", "index": 2}),
            (b'{"id":"c","entry":{"x":1e308,"y":5e-324}}', {"id": "c", "index": 3}),
            (b'{"id":"d","entry":{"x":%s}}' % (b"9" * 4300), {"id": "d", "index": 4}),
            (b'{"from":0}', {"error": "invalid message"}),
            (b'{"from":-3}', {"error": "invalid message"}),
            (b'{"from":1.0}', {"error": "invalid message"}),
            (b'{"from":true}', {"error": "invalid message"}),
            (b'{"from":"1"}', {"error": "invalid message"}),
            (b'{"from":1e400}', {"error": "invalid message"}),
            (b'{"from":1,"read":0}', {"error": "invalid message"}),
            (b'{"from":1,"read":false}', {"error": "invalid message"}),
            (b'{"from":1,"read":2.5}', {"error": "invalid message"}),
            (b'{"from":1,"read":null}', {"error": "invalid message"}),
        ]
        self.serve()
        connection = self.connect()
        for message, want in cases:
            connection.send(message + b"\n")
        got = replies(connection.transport)
        for reply, (message, want) in zip(got, cases):
            if want.get("error", "") is None:
                self.assertEqual((shape(reply), reply["id"]), ("writeError", want["id"]), message)
            else:
                self.assertEqual(reply, want, message)
        self.assertEqual(len(got), len(cases))
        self.assertFalse(connection.transport.disconnecting)
        self.assertEqual(self.readAll(), [
            entryLine(1, b'{"x":0}'), entryLine(2, b'{"x":-0.0}'),
            entryLine(3, b'{"x":1e+308,"y":5e-324}'),
            entryLine(4, b'{"x":%s}' % (b"9" * 4300))])

    def test_hugeFromAndRead(self):
        """A read far past the head is caught up at once and follows live; it ends after K."""
        self.serve()
        reader, writer = self.connect(), self.connect()
        reader.send(b'{"from":%d,"read":%d}\n' % (10 ** 30, 10 ** 40))
        writer.send(b'{"id":"w","entry":{}}\n')
        self.clock.advance(0)
        self.assertEqual(replies(reader.transport), [{"current": True}])
        reader.send(b'{"from":1}\n')
        self.assertEqual(replies(reader.transport)[-1], {"error": "already reading"})
        puller = self.connect()
        puller.send(b'{"from":1,"read":%d}\n' % (10 ** 40))
        self.assertEqual(replies(puller.transport),
                         [{"index": 1, "entry": {}}, {"current": True}])

    def test_bomAndNonUTF8AreInvalidJSON(self):
        for line in (b'\xef\xbb\xbf{"from":1}', b'{"id":"\xff","entry":{}}',
                     b'{"id":"\xed\xa0\x80","entry":{}}', b'\xc3'):
            self.serve()
            connection = self.connect()
            connection.send(line + b'\n{"from":1}\n')
            self.assertEqual(replies(connection.transport), [{"error": "invalid JSON"}])
            self.assertTrue(connection.transport.disconnecting)

    @SETTINGS
    @given(writeId=ids, entry=entries)
    def test_idsOfEveryType(self, writeId, entry):
        """A write is answered under its own id, or is an invalid message; never a crash."""
        self.serve()
        connection = self.connect()
        message = encode({"id": writeId, "entry": entry})
        connection.send(message + b"\n")
        # What the server reads: an escaped surrogate pair is one character.
        writeId, entry = json.loads(message)["id"], json.loads(message)["entry"]
        [reply] = replies(connection.transport)
        if writeId.__class__ is not str or not writeId:
            self.assertEqual(reply, {"error": "invalid message"})
        else:
            self.assertEqual(reply["id"], writeId)
            acked = Model(1 << 20).write(writeId, entry)
            self.assertEqual(shape(reply), shape(acked))
            if shape(reply) == "ack":
                self.assertEqual(self.readAll(), [entryLine(1, canonical(entry))])
        self.assertFalse(connection.transport.disconnecting)

    def test_unencodableIdNeverReachesTheStore(self):
        """
        A lone surrogate in an id cannot be stored as UTF-8 text: the writer gets an
        error, and the store (which may commit it with other connections' writes in one
        transaction, as SQLite does) never sees it.
        """
        self.serve()
        offered = []
        append = self.store.append

        def strictAppend(entries, writeIds=None):
            offered.extend(writeIds)
            for writeId in writeIds:
                writeId.encode("utf-8")
            return append(entries, writeIds)

        self.store.append = strictAppend
        connection = self.connect()
        connection.send(b'{"id":"\\ud800","entry":{}}\n{"id":"ok","entry":{}}\n')
        got = replies(connection.transport)
        self.assertEqual([shape(reply) for reply in got], ["writeError", "ack"])
        self.assertEqual((got[0]["id"], got[1]), ("\ud800", {"id": "ok", "index": 1}))
        self.assertEqual(offered, ["ok"])


class Peer:
    """One connection of the state machine and what it has been told so far."""

    def __init__(self, factory: JournalFactory):
        self.connection = Connection(factory)
        self.seen = 0              # reply lines checked
        self.expected: list = []   # replies owed to writes and refusals, in order
        self.read: dict | None = None

    def check(self, test: TestCase, log: list) -> None:
        """Check the replies that arrived since the last call against the journal protocol."""
        raw = self.connection.transport.value().splitlines()
        for line in raw[self.seen:]:
            reply = json.loads(line)
            kind, read = shape(reply), self.read
            if kind in ("entry", "entryError", "current", "head"):
                test.assertIsNotNone(read, line)
            if kind == "entry":
                index = reply["index"]
                test.assertEqual(index, read["next"])
                test.assertEqual(line, entryLine(index, log[index - 1]))
                test.assertTrue(read["current"] or index <= read["target"])
                read["next"] += 1
                if read["left"] is not None:
                    read["left"] -= 1
                    test.assertGreaterEqual(read["left"], 0)
            elif kind == "current":
                test.assertFalse(read["current"])
                test.assertEqual(read["next"], max(read["start"], read["target"] + 1))
                read["current"] = True
            elif kind == "head":
                test.assertEqual(read["left"], 0)
                test.assertTrue(read["next"] - 1 <= reply["head"] <= len(log))
                self.read = None
            else:
                test.assertTrue(self.expected, line)
                sameReplies(test, [reply], [self.expected.pop(0)])
        self.seen = len(raw)

    def caughtUp(self, test: TestCase, log: list) -> None:
        """Once delivered, a read has everything committed, or ended after its K."""
        test.assertEqual(self.expected, [])
        if self.read is not None:
            test.assertEqual(self.read["next"], max(self.read["start"], len(log) + 1))
            test.assertTrue(self.read["current"])


PEERS = 3


class JournalMachine(RuleBasedStateMachine):
    """Writes, retries, reads, refusals and fatal messages on several connections at once."""

    maxEntry = 1 << 16

    def __init__(self, test: TestCase):
        super().__init__()
        self.test = test
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.factory = JournalFactory(self.store, self.maxEntry, self.clock)
        self.model = Model(self.maxEntry)
        self.peers = [Peer(self.factory) for _ in range(PEERS)]
        self.sent: list = []

    def send(self, peer: int, data: bytes, points: list) -> Peer:
        self.peers[peer].connection.send(data + b"\n", points)
        return self.peers[peer]

    @rule(peer=st.integers(0, PEERS - 1), writeId=strings, entry=entries,
          points=st.lists(st.floats(0, 1), max_size=3))
    def write(self, peer, writeId, entry, points):
        message = encode({"id": writeId, "entry": entry})
        expected, _ = self.model.run(message + b"\n")
        self.send(peer, message, points).expected += expected
        self.sent.append(message)

    @precondition(lambda self: self.sent)
    @rule(peer=st.integers(0, PEERS - 1), which=st.integers(0, 10 ** 6))
    def retry(self, peer, which):
        message = self.sent[which % len(self.sent)]
        expected, _ = self.model.run(message + b"\n")
        self.send(peer, message, []).expected += expected

    @rule(peer=st.integers(0, PEERS - 1), line=notReads.map(encode) | st.sampled_from([b"", b" "]),
          points=st.lists(st.floats(0, 1), max_size=3))
    def refuse(self, peer, line, points):
        expected, _ = self.model.run(line + b"\n")
        self.send(peer, line, points).expected += expected

    @rule(peer=st.integers(0, PEERS - 1), start=st.integers(1, 40),
          count=st.none() | st.integers(1, 8), points=st.lists(st.floats(0, 1), max_size=3))
    def read(self, peer, start, count, points):
        target = self.peers[peer]
        target.check(self.test, self.model.log)
        message = {"from": start} if count is None else {"from": start, "read": count}
        if target.read is not None:
            target.expected.append({"error": "already reading"})
        else:
            target.read = {"start": start, "next": start, "left": count,
                           "target": len(self.model.log), "current": False}
        self.send(peer, encode(message), points)

    @rule(peer=st.integers(0, PEERS - 1),
          line=st.sampled_from([b"{", b"x" * ((1 << 16) + 1), b"\xff"]))
    def fatal(self, peer, line):
        """The peer is closed after its error; a new connection takes its place."""
        target = self.peers[peer]
        target.check(self.test, self.model.log)
        target.expected += self.model.run(line + b"\n")[0]
        target.connection.send(line + b"\n")
        target.check(self.test, self.model.log)
        self.test.assertEqual(target.expected, [])
        self.test.assertTrue(target.connection.transport.disconnecting)
        target.connection.send(b'{"id":"late","entry":{}}\n')
        target.connection.protocol.connectionLost(None)
        self.peers[peer] = Peer(self.factory)

    @rule()
    def deliver(self):
        self.clock.advance(0)
        for peer in self.peers:
            peer.check(self.test, self.model.log)
            peer.caughtUp(self.test, self.model.log)

    @invariant()
    def repliesFollowSpec(self):
        for peer in self.peers:
            peer.check(self.test, self.model.log)
            self.test.assertFalse(peer.connection.transport.disconnecting)
            assertBounded(self.test, peer.connection, self.maxEntry)

    def teardown(self):
        self.deliver()


class JournalMachineTests(TestCase):
    def test_connectionsInterleaved(self):
        run_state_machine_as_test(
            lambda: JournalMachine(self),
            settings=settings(max_examples=100, stateful_step_count=30, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow]))
