"""
Property-based fuzzing of the syslog listener: both formats and both TCP framings, as
valid messages (every field comes back) and as arbitrary bytes split anywhere (nothing
raises, framing does not depend on where the stream was cut, memory stays bounded).
"""

import re
from datetime import datetime, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from logsvc.journal.lines import flatEntry
from logsvc.registry import ClientRegistry
from logsvc.store import canonical
from logsvc.syslogformat import FACILITIES, SEVERITIES, Framing, parse
from logsvc.sysloglistener import SyslogClients

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc).timestamp()
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}\Z")

printable = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1)
header = lambda size: printable.filter(lambda s: s != "-" and len(s) <= size)  # noqa: E731
text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=60)
pri = st.integers(0, 191)
moments = st.datetimes(min_value=datetime(1971, 1, 2), max_value=datetime(2100, 1, 1),
                       timezones=st.just(timezone.utc))


def cut(data: bytes, points: list) -> list:
    offsets = sorted({int(p * len(data)) for p in points})
    pieces, start = [], 0
    for offset in offsets:
        pieces.append(data[start:offset])
        start = offset
    return pieces + [data[start:]]


@st.composite
def rfc5424(draw):
    fields = {"pri": draw(pri), "when": draw(st.none() | moments),
              "host": draw(st.none() | header(255)), "app": draw(st.none() | header(48)),
              "proc": draw(st.none() | header(128)), "msgid": draw(st.none() | header(32)),
              "text": draw(text).strip()}
    stamp = "-" if fields["when"] is None else fields["when"].isoformat().replace("+00:00", "Z")
    parts = [f"<{fields['pri']}>1", stamp] + [
        "-" if fields[k] is None else fields[k] for k in ("host", "app", "proc", "msgid")]
    raw = " ".join(parts) + " - " + fields["text"]
    return raw.encode(), fields


@st.composite
def bsd(draw):
    host = draw(st.from_regex(r"[a-z][a-z0-9.\-]{0,20}", fullmatch=True))
    app = draw(st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True))
    pid = draw(st.none() | st.integers(1, 99999))
    when = draw(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 1)))
    message = draw(text).strip()
    tag = app if pid is None else f"{app}[{pid}]"
    stamp = when.strftime("%b ") + f"{when.day:2d}" + when.strftime(" %H:%M:%S")
    raw = f"<{draw(pri)}>{stamp} {host} {tag}: {message}".encode()
    return raw, {"host": host, "app": app, "pid": pid, "text": message,
                 "when": when.replace(microsecond=0)}


class FormatTests(TestCase):
    @SETTINGS
    @given(st.binary(max_size=300))
    def test_anyBytesParse(self, raw):
        message = parse(raw, NOW)
        self.assertIsInstance(message.text, str)
        if not message.malformed:
            self.assertIn(message.facility, range(len(FACILITIES)))
            self.assertIn(message.severity, range(len(SEVERITIES)))

    @SETTINGS
    @given(st.lists(st.sampled_from([b"<13>", b"1 ", b"- ", b"[", b"]", b'"', b"\\", b"=",
                                     b"a", b" ", b"Dec  1 ", b"00:00:00 ", b":", b"[1]",
                                     b"2026-01-01T00:00:00Z ", b"\xef\xbb\xbf", b"\n"]),
                    max_size=30))
    def test_nearlyValidMessagesParse(self, pieces):
        parse(b"".join(pieces), NOW)

    @SETTINGS
    @given(rfc5424())
    def test_rfc5424FieldsComeBack(self, generated):
        raw, fields = generated
        message = parse(raw, NOW)
        self.assertEqual(message.format, "rfc5424")
        self.assertEqual((message.facility << 3) | message.severity, fields["pri"])
        self.assertEqual((message.hostname, message.appName, message.procId, message.msgId,
                          message.text),
                         (fields["host"], fields["app"], fields["proc"], fields["msgid"],
                          fields["text"]))
        expected = None if fields["when"] is None else fields["when"].timestamp()
        self.assertEqual(message.timestamp is None, expected is None)
        if expected is not None:
            self.assertAlmostEqual(message.timestamp, expected, places=5)

    @SETTINGS
    @given(bsd())
    def test_bsdFieldsComeBack(self, generated):
        raw, fields = generated
        message = parse(raw, fields["when"].timestamp())
        self.assertEqual((message.format, message.hostname, message.appName, message.text),
                         ("rfc3164", fields["host"], fields["app"], fields["text"]))
        self.assertEqual(message.procId, None if fields["pid"] is None else str(fields["pid"]))
        self.assertEqual(message.timestamp, fields["when"].timestamp())


class FramingTests(TestCase):
    @SETTINGS
    @given(st.lists(st.tuples(st.booleans(), st.binary(max_size=80)), max_size=20),
           st.lists(st.floats(0, 1), max_size=8))
    def test_bothFramingsSplitAnywhere(self, messages, points):
        """Octet-counted messages may hold anything; newline-framed ones start with '<'."""
        stream, expected = b"", []
        for counted, body in messages:
            if counted:
                stream += b"%d %s" % (len(body), body)
                expected.append((body, False))
            else:
                body = b"<" + body.replace(b"\n", b"")
                stream += body + b"\n"
                if body.strip(b"\r\x00"):
                    expected.append((body, False))
        framing = Framing(1000)
        got = [m for piece in cut(stream, points) for m in framing.feed(piece)]
        self.assertEqual(got, expected)

    @SETTINGS
    @given(st.binary(max_size=600), st.lists(st.floats(0, 1), max_size=10),
           st.integers(1, 64))
    def test_anyStreamIsBoundedAndSplitInvariant(self, stream, points, maxMessage):
        whole = Framing(maxMessage).feed(stream)
        framing = Framing(maxMessage)
        pieces = []
        for piece in cut(stream, points):
            pieces += framing.feed(piece)
            self.assertLessEqual(len(framing._buffer), maxMessage + Framing._MAX_DIGITS + 1)
        self.assertEqual(pieces, whole)
        for raw, truncated in pieces:
            self.assertLessEqual(len(raw), maxMessage)


class ClientsTests(TestCase):
    @SETTINGS
    @given(st.lists(st.tuples(st.binary(max_size=120), st.sampled_from(
        ["10.0.0.1", "::1", "", "host/with:bad chars"])), max_size=30))
    def test_anyMessagesMapToValidClients(self, received):
        clock = Clock()
        registry = ClientRegistry(clock, bufferSize=4)
        clients = SyslogClients(registry, clock, quiet=5, maxOnline=8)
        clients.startService()
        for raw, peer in received:
            clients.receive(raw, peer)
            clock.advance(1)
            self.assertLessEqual(clients.status()["online"], 8)
        for record in registry.records():
            self.assertRegex(record.name, NAME)
        self.assertEqual(clients.counters["messages"], len(received))
        self.assertEqual(registry.totalLines, len(received))


class EntryTests(TestCase):
    @SETTINGS
    @given(st.dictionaries(st.text(max_size=10), st.one_of(
        st.text(), st.floats(allow_nan=False, allow_infinity=False), st.just(True),
        st.booleans(), st.integers(), st.none()), max_size=8))
    def test_flatEntryIsCanonical(self, entry):
        """A syslog message's journal entry is built directly, byte for byte canonical."""
        self.assertEqual(flatEntry(entry), canonical(entry))
