"""Parsing shared by ``twistd logatron``, ``logsvc-query`` and the listeners' requests."""

from twisted.python import usage


def positive(value: object) -> int | None:
    """
    C{value} if it is an C{int} >= 1 (a bool is not one), else None: for counts and
    indices that clients send as numbers (PB arguments, journal protocol messages).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def positiveText(text: str | bytes) -> int | None:
    """The integer >= 1 that C{text} holds in decimal, else None (options, query strings)."""
    try:
        return positive(int(text))
    except ValueError:
        return None


def positiveInteger(what: str, most: int | None = None, why: str = ""):
    """
    A C{usage.Options} coercer: C{what} (an option or argument name) must be >= 1, and
    no more than C{most} if given, for the reason C{why}.
    """
    def parse(value: str) -> int:
        number = positiveText(value)
        if number is None:
            raise usage.UsageError(f"{what} must be a positive integer, not {value!r}")
        if most is not None and number > most:
            raise usage.UsageError(f"{what} must be at most {most} ({why}), not {value!r}")
        return number
    parse.coerceDoc = ("A positive integer." if most is None  # type: ignore[attr-defined]
                       else f"A positive integer, at most {most}.")
    return parse


def portEndpoint(value: str, host: str = "") -> str:
    """
    The Twisted endpoint string C{value}, where a bare port number N means C{tcp:N}, or
    C{tcp:HOST:N} given C{host} (Twisted itself refuses a bare number).
    """
    value = value.strip()
    if not value.isdigit():
        return value
    return f"tcp:{host}:{value}" if host else f"tcp:{value}"


def localEndpoint(value: str) -> str:
    """A client's endpoint string: a bare port number N means C{tcp:127.0.0.1:N}."""
    return portEndpoint(value, "127.0.0.1")
