"""Errors that cross module (and, for PB, process) boundaries."""

from twisted.spread import pb


class NameInUse(Exception):
    """A client tried to identify as a name that is connected right now."""


class NoSuchClient(pb.Error):
    """
    No client of that name is known (a pb.Error, so PB callers can catch it by type).
    Its text, which is all of it a remote caller sees besides the type, says so.
    """

    def __init__(self, name: str):
        super().__init__(f"no such client: {name}")
        self.name = name


class StoreError(Exception):
    """The journal store could not open, write or read; the message is one line for users."""


class EntryError:
    """Stands in a read result for an entry that cannot be read back."""

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"EntryError({self.reason!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, EntryError) and other.reason == self.reason


class Trimmed(Exception):
    """
    A read started below the journal's C{first}: retention deleted the entries from
    there up to C{first} - 1.  C{head} is the last index at the time.
    """

    def __init__(self, first: int, head: int):
        super().__init__(f"entries before {first} were deleted by retention "
                         f"(first {first}, head {head})")
        self.first = first
        self.head = head


def oneLine(error: BaseException) -> str:
    """
    C{error}'s message on one line (libraries' messages can span several), or its
    class name when it has none: what a log line, a health check or a usage error shows.
    """
    return " ".join(str(error).split()) or error.__class__.__name__
