"""Parsing shared by ``twistd logatron``, ``logsvc-query`` and the listeners' requests."""

from twisted.python import usage


def positive(value: object) -> int | None:
    """
    C{value} as an integer >= 1, or None when it is not one: an C{int} (a bool is not
    one), or C{str} or C{bytes} holding one in decimal.  Every listener checks counts
    and indices from its clients with this, so they all accept the same values.
    """
    if isinstance(value, (str, bytes)):
        try:
            value = int(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def positiveInteger(what: str, most: int | None = None, why: str = ""):
    """
    A C{usage.Options} coercer: C{what} (an option or argument name) must be >= 1, and
    no more than C{most} if given, for the reason C{why}.
    """
    def parse(value: str) -> int:
        number = positive(value)
        if number is None:
            raise usage.UsageError(f"{what} must be a positive integer, not {value!r}")
        if most is not None and number > most:
            raise usage.UsageError(f"{what} must be at most {most} ({why}), not {value!r}")
        return number
    parse.coerceDoc = ("A positive integer." if most is None  # type: ignore[attr-defined]
                       else f"A positive integer, at most {most}.")
    return parse
