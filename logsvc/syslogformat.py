"""
Syslog messages (RFC 5424 and the BSD format of RFC 3164) parsed from bytes, and the
framing of a TCP stream of them (RFC 6587: octet counting or newline, per message).

Network-free and lenient, as rsyslog is: anything after a valid ``<PRI>`` is kept; a
message without one is malformed and kept whole as raw text.  The PyPI parsers for
these formats (syslog-rfc5424-parser, syslogmp) are each one format and unmaintained
since 2019 and 2021, so this one is small and fuzzed instead.
"""

import re
from calendar import monthrange, timegm
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp",
              "cron", "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
              "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7")
"""Names as Python's SysLogHandler and syslog.conf spell them, by code."""

_PRI = re.compile(rb"<([0-9]{1,3})>")
_RFC5424_HEADER = re.compile(
    rb"([1-9][0-9]?) (\S+) (\S{1,255}) (\S{1,48}) (\S{1,128}) (\S{1,32}) ")
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,9})?(Z|[+-]\d\d:\d\d)\Z")
_BSD_TIME = re.compile(rb"([A-Z][a-z]{2}) ([ 0-9]?[0-9]) (\d\d):(\d\d):(\d\d) ")
_RFC3339_PREFIX = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?"
                             rb"(?:Z|[+-]\d\d:\d\d)) ")
_TAG = re.compile(rb"([^\s\[\]:]{1,48})(?:\[([^\s\]]{0,128})\])?: ?")
_LOOSE_TAG = re.compile(rb"([^\s\[\]:]{1,48})(?:\[([^\s\]]{0,128})\])?(?::|(?= )|\Z) ?")
_MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_BOM = b"\xef\xbb\xbf"


class SyslogMessage(NamedTuple):
    """
    One message.  C{malformed} ones have only C{text} (the whole raw message); the
    others have C{facility} and C{severity} codes, and whatever else the header gave.
    C{timestamp} is epoch seconds, or None when the message had none we could read.
    """

    text: str
    format: str  # "rfc5424", "rfc3164" or "malformed"
    facility: int | None = None
    severity: int | None = None
    timestamp: float | None = None
    hostname: str | None = None
    appName: str | None = None
    procId: str | None = None
    msgId: str | None = None
    structuredData: str | None = None

    @property
    def malformed(self) -> bool:
        return self.format == "malformed"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _nil(raw: bytes) -> str | None:
    return None if raw == b"-" else _text(raw)


def parse(raw: bytes, now: float) -> SyslogMessage:
    """
    Parse one message (framing already removed).  C{now} (epoch seconds) picks the year
    of a BSD timestamp, which has none.  Never raises.
    """
    raw = raw.rstrip(b"\r\n\x00")
    pri = _PRI.match(raw)
    if pri is None or int(pri.group(1)) > 191:
        return SyslogMessage(_text(raw).strip(), "malformed")
    code = int(pri.group(1))
    facility, severity = code >> 3, code & 7
    rest = raw[pri.end():]
    header = _RFC5424_HEADER.match(rest + b" ")
    if header is not None:
        message = _rfc5424(rest, header, facility, severity)
        if message is not None:
            return message
    return _rfc3164(rest, facility, severity, now)


def _rfc5424(rest: bytes, header, facility: int, severity: int) -> SyslogMessage | None:
    """None when the header only looked like RFC 5424 (then it is read as BSD)."""
    version, stamp, hostname, appName, procId, msgId = header.groups()
    if version != b"1":
        return None
    if stamp == b"-":
        timestamp = None
    else:
        timestamp = _rfc3339(stamp.decode("ascii", "replace"))
        if timestamp is None:
            return None
    body = rest[header.end():]
    structured, body = _structuredData(body)
    if structured is None:
        return None
    if body.startswith(b" "):
        body = body[1:]
    if body.startswith(_BOM):
        body = body[len(_BOM):]
    return SyslogMessage(
        _text(body).strip(), "rfc5424", facility, severity, timestamp, _nil(hostname),
        _nil(appName), _nil(procId), _nil(msgId),
        None if structured == b"-" else _text(structured))


def _structuredData(body: bytes) -> tuple:
    """C{(structured data, rest)}; C{(None, body)} when it is not valid."""
    if body.startswith(b"-"):
        if len(body) > 1 and body[1:2] != b" ":
            return None, body
        return b"-", body[1:]
    position = 0
    while body[position:position + 1] == b"[":
        position += 1
        while True:
            if position >= len(body):
                return None, body
            byte = body[position]
            if byte == 0x5C:  # backslash escapes the next byte inside a value
                position += 2
            elif byte == 0x22:  # a quoted PARAM-VALUE
                position += 1
                while position < len(body) and body[position] != 0x22:
                    position += 2 if body[position] == 0x5C else 1
                position += 1
            elif byte == 0x5D:
                position += 1
                break
            else:
                position += 1
        if position > len(body):
            return None, body
    if position == 0 or body[position:position + 1] not in (b"", b" "):
        return None, body
    return body[:position], body[position:]


def _rfc3339(stamp: str) -> float | None:
    match = _RFC3339.match(stamp)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    seconds = _wholeSeconds(year, month, day, hour, minute, second, zone)
    if seconds is None:
        return None
    return seconds + float(fraction) if fraction else float(seconds)


@lru_cache(maxsize=1024)
def _wholeSeconds(year, month, day, hour, minute, second, zone) -> int | None:
    """Epoch seconds of a validated date and time; cached, as a sender's seconds repeat."""
    year, month, day = int(year), int(month), int(day)
    hour, minute, second = int(hour), int(minute), min(int(second), 59)
    if not (1 <= month <= 12 and year >= 1 and 1 <= day <= monthrange(year, month)[1]
            and hour < 24 and minute < 60):
        return None
    offset = 0
    if zone != "Z":
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            return None
        offset = (hours * 60 + minutes) * (60 if zone[0] == "+" else -60)
    return timegm((year, month, day, hour, minute, second)) - offset


def _bsdTime(match, now: float) -> float | None:
    """A BSD timestamp in the server's local time, in the year that puts it nearest now."""
    month = _MONTHS.get(match.group(1))
    if month is None:
        return None
    day, hour, minute, second = (int(g) for g in match.groups()[1:])
    year = datetime.fromtimestamp(now).year
    candidates = []
    for y in (year - 1, year, year + 1):
        try:
            candidates.append(datetime(y, month, day, hour, minute, second).timestamp())
        except (ValueError, OverflowError):
            continue
    return min(candidates, key=lambda t: abs(t - now), default=None)


def _rfc3164(rest: bytes, facility: int, severity: int, now: float) -> SyslogMessage:
    """
    C{TIMESTAMP HOSTNAME TAG[PID]: MSG}, each part optional as real senders have it; a
    first word that is a tag (ends in C{:} or has C{[pid]}) means there is no HOSTNAME.
    After a HOSTNAME the next word is the TAG, colon or not, as rsyslog reads it (and
    forwards an RFC 5424 APP-NAME); without a timestamp only C{word:} is a TAG.
    rsyslog's forwarding formats put an RFC 3339 timestamp in the first place.
    """
    timestamp = None
    stamp = _BSD_TIME.match(rest)
    if stamp is not None:
        timestamp = _bsdTime(stamp, now)
        rest = rest[stamp.end():]
    else:
        stamp = _RFC3339_PREFIX.match(rest)
        if stamp is not None:
            timestamp = _rfc3339(stamp.group(1).decode("ascii"))
            rest = rest[stamp.end():]
    hostname = None
    if stamp is not None:
        word = rest.split(b" ", 1)[0]
        if word and _TAG.fullmatch(word) is None and len(word) <= 255 and b"[" not in word:
            hostname = _text(word)
            rest = rest[len(word) + 1:]
    appName = procId = None
    tag = (_TAG if hostname is None else _LOOSE_TAG).match(rest)
    if tag is not None:
        appName = _text(tag.group(1))
        procId = None if tag.group(2) is None else _text(tag.group(2))
        rest = rest[tag.end():]
    return SyslogMessage(_text(rest).strip(), "rfc3164", facility, severity, timestamp,
                         hostname, appName, procId)


class Framing:
    """
    Splits a TCP stream into messages, per message as rsyslog does: one that starts with
    a digit is octet-counted (C{LEN SP MSG}), any other ends at LF.  A message longer
    than C{maxMessage} is cut to it (and reported as truncated) and the rest skipped, so
    what is held per connection stays under C{maxMessage} plus a length prefix.
    """

    _MAX_DIGITS = 10

    def __init__(self, maxMessage: int):
        self.maxMessage = maxMessage
        self._buffer = b""
        self._skip = 0  # octets of a cut octet-counted message still to discard
        self._skipLine = False  # discarding the rest of a cut newline-framed message

    def feed(self, data: bytes) -> list:
        """The complete messages C{data} ends, as C{(raw, truncated)} pairs."""
        messages: list = []
        buffer = self._buffer + data if self._buffer else data
        position = 0
        maxMessage = self.maxMessage
        while position < len(buffer):
            if self._skip:
                taken = min(self._skip, len(buffer) - position)
                self._skip -= taken
                position += taken
                continue
            if self._skipLine:
                end = buffer.find(b"\n", position)
                if end < 0:
                    position = len(buffer)
                    break
                self._skipLine = False
                position = end + 1
                continue
            if 0x30 <= buffer[position] <= 0x39:
                space = buffer.find(b" ", position, position + self._MAX_DIGITS + 1)
                digits = buffer[position:space] if space > position else b""
                if digits.isdigit():
                    length = int(digits)
                    start = space + 1
                    if length > maxMessage:
                        if len(buffer) - start < maxMessage:
                            break
                        messages.append((buffer[start:start + maxMessage], True))
                        self._skip = length - maxMessage
                        position = start + maxMessage
                        continue
                    if len(buffer) - start < length:
                        break
                    messages.append((buffer[start:start + length], False))
                    position = start + length
                    continue
                if space < 0 and len(buffer) - position <= self._MAX_DIGITS \
                        and buffer[position:].isdigit():
                    break  # the length may still be arriving
            end = buffer.find(b"\n", position)
            if end < 0:
                if len(buffer) - position > maxMessage:
                    messages.append((buffer[position:position + maxMessage], True))
                    self._skipLine = True
                    position = len(buffer)
                break
            if end - position > maxMessage:
                messages.append((buffer[position:position + maxMessage], True))
            elif end > position and buffer[position:end].strip(b"\r\x00"):
                messages.append((buffer[position:end], False))
            position = end + 1
        self._buffer = buffer[position:]
        return messages
