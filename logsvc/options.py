"""Option parsing shared by ``twistd logatron`` and ``logsvc-query``."""

from twisted.python import usage


def positiveInteger(what: str):
    """A C{usage.Options} coercer: C{what} (an option or argument name) must be >= 1."""
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            raise usage.UsageError(f"{what} must be a positive integer, not {value!r}")
        return number
    parse.coerceDoc = "A positive integer."
    return parse
